#!/usr/bin/env bash
# The whole test suite (`make test`, and CI's .ci/run): lint, syntax check, and the Molecule
# scenarios, with how long each took. Everything is installed or built first (apt packages,
# the controller virtualenv, the container and VM images), so that the parallel parts below do
# not race for them.
#
# The vm scenario runs in the background from the start, beside everything else: a VM under
# software emulation (TCG) keeps about one core busy whatever else runs, so on 2 cores it takes
# the second core instead of adding its own quarter of an hour. Its output goes to
# .cache/molecule-vm.log and is printed when it ends. The container scenarios run one after
# the other. Exits non-zero if any step failed.
#   scripts/test.sh                      # lint, syntax, default, cluster, vm
#   scripts/test.sh default              # lint, syntax and one scenario
#   SKIP_LINT=1 scripts/test.sh cluster  # a scenario alone
source "$(dirname "$0")/lib.sh"
[ "$#" -gt 0 ] || set -- default cluster vm
export PATH="${REPO_ROOT}/.venv/bin:${PATH}"
cd "${REPO_ROOT}"
t0=$(date +%s)
results=()
rc=0
record() {  # name, start, exit code
  local took=$(( $(date +%s) - $2 ))
  if [ "$3" -eq 0 ]; then results+=("$(printf '%-10s passed in %5d s' "$1" "${took}")")
  else results+=("$(printf '%-10s FAILED after %4d s (exit %s)' "$1" "${took}" "$3")"); rc=1; fi
  log "${results[-1]}"
}

start=$(date +%s)
"${REPO_ROOT}/scripts/setup.sh" vm
for release in bookworm trixie; do DEBIAN_RELEASE="${release}" "${REPO_ROOT}/scripts/build-image.sh" >/dev/null; done
if [[ " $* " == *" vm "* ]]; then "${REPO_ROOT}/scripts/build-vm-image.sh" >/dev/null; fi
record setup "${start}" 0

vm_pid=""
vm_log="${CACHE_DIR}/molecule-vm.log"
if [[ " $* " == *" vm "* ]]; then
  log "starting the vm scenario in the background (output: ${vm_log})"
  vm_start=$(date +%s)
  "${REPO_ROOT}/scripts/molecule.sh" test -s vm > "${vm_log}" 2>&1 &
  vm_pid=$!
fi

if [ -z "${SKIP_LINT:-}" ]; then
  start=$(date +%s)
  set +e
  ( set -e
    yamllint .
    ansible-lint
    python3 scripts/role_docs.py --check
    pytest -q -c pytest.ini tests/unit
    for inv in sandbox production; do
      for p in playbooks/*.yml; do ansible-playbook -i "inventory/${inv}/hosts.yml" --syntax-check "${p}" >/dev/null; done
    done )
  code=$?
  set -e
  record lint "${start}" "${code}"
fi

for s in "$@"; do
  [ "${s}" != vm ] || continue
  start=$(date +%s)
  set +e
  "${REPO_ROOT}/scripts/molecule.sh" test -s "${s}"
  code=$?
  set -e
  record "${s}" "${start}" "${code}"
done

if [ -n "${vm_pid}" ]; then
  log "waiting for the vm scenario"
  set +e
  wait "${vm_pid}"
  code=$?
  set -e
  log "----- vm scenario output (${vm_log}) -----"
  cat "${vm_log}"
  record vm "${vm_start}" "${code}"
fi

log "test steps (the vm scenario ran beside the others):"
printf '  %s\n' "${results[@]}" >&2
log "total: $(( $(date +%s) - t0 )) s"
exit "${rc}"
