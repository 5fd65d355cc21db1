#!/usr/bin/env bash
# Deploy the example app (examples/hello_api) with playbooks/deploy.yml to a local disposable
# Debian container running systemd and sshd (app on loopback behind nginx with a self-signed
# certificate, the single-host layout), over SSH as a server is reached (the user `deploy`
# with a key and sudo, the host key checked), and print its HTTPS URL.
#   scripts/demo.sh           # set up, create the container, deploy, print the URL
#   scripts/demo.sh destroy   # remove the container
source "$(dirname "$0")/lib.sh"

NAME="${DEMO_NAME:-fastapi-demo}"
DEMO_PORT="${DEMO_PORT:-8443}"
DIR="${CACHE_DIR}/demo"

if [ "${1:-}" = "destroy" ]; then
  if command -v podman >/dev/null && podman container exists "${NAME}"; then
    "${REPO_ROOT}/scripts/test-host.sh" destroy "${DIR}" "${NAME}"
    log "removed ${NAME}"
  else
    log "no ${NAME} container"
  fi
  exit 0
fi

"${REPO_ROOT}/scripts/setup.sh"
image=$("${REPO_ROOT}/scripts/build-image.sh")
podman_runtime_setup "${image}"

if ! podman container exists "${NAME}" || [ ! -f "${DIR}/hosts.yml" ]; then
  log "starting ${NAME} (${image}), its HTTPS port published on 127.0.0.1:${DEMO_PORT}"
  "${REPO_ROOT}/scripts/test-host.sh" create "${DIR}" "${NAME}" "${image}" -p "127.0.0.1:${DEMO_PORT}:443" >/dev/null
fi
podman start "${NAME}" >/dev/null
"${REPO_ROOT}/scripts/test-host.sh" inventory "${DIR}" "${NAME}" > "${DIR}/hosts.yml"

export PATH="${REPO_ROOT}/.venv/bin:${PATH}"
cd "${REPO_ROOT}"
ansible-playbook -i inventory/sandbox/hosts.yml -i "${DIR}/hosts.yml" playbooks/deploy.yml

url="https://127.0.0.1:${DEMO_PORT}/"
for _ in $(seq 1 20); do
  curl -kfsS "${url}" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -kfsS "${url}" >/dev/null || die "${url} does not answer"
printf '\nThe example app is served at %s (self-signed certificate: curl -k)\n  curl -k %s\n  %s\n' \
  "${url}" "${url}" "$(curl -kfsS "${url}")"
printf 'Log in with: scripts/test-host.sh ssh %s %s\n' "${DIR#"${REPO_ROOT}/"}" "${NAME}"
printf 'Deploy again: .venv/bin/ansible-playbook -i inventory/sandbox/hosts.yml -i %s playbooks/deploy.yml\n' \
  "${DIR#"${REPO_ROOT}/"}/hosts.yml"
printf 'Remove it with: make demo-destroy\n'
