# What the bench scripts share (sourced after scripts/lib.sh): one new local container reached
# over SSH (scripts/test-host.sh), as a server is, with an inventory of that host alone (its
# connection, both groups, the sandbox's group_vars) in ${work}/inventory/hosts.yml. It is
# removed, with ${work}, when the script exits. Runs from the repository root.
#   bench_single_host NAME
bench_single_host() {
  BENCH_HOST="$1"
  "${REPO_ROOT}/scripts/setup.sh"
  local image; image=$("${REPO_ROOT}/scripts/build-image.sh")
  podman_runtime_setup "${image}"
  export PATH="${REPO_ROOT}/.venv/bin:${PATH}"
  cd "${REPO_ROOT}"
  work=$(mktemp -d)
  trap '"${REPO_ROOT}/scripts/test-host.sh" destroy "${work}/host" "${BENCH_HOST}" >/dev/null 2>&1 || true; rm -rf "${work}"' EXIT
  "${REPO_ROOT}/scripts/test-host.sh" create "${work}/host" "${BENCH_HOST}" "${image}" >/dev/null
  mkdir -p "${work}/inventory"
  ln -s "${REPO_ROOT}/inventory/sandbox/group_vars" "${work}/inventory/group_vars"
  { "${REPO_ROOT}/scripts/test-host.sh" inventory "${work}/host" "${BENCH_HOST}"
    printf '%s:\n  hosts:\n    %s:\n' fastapi_servers "${BENCH_HOST}" fastapi_proxies "${BENCH_HOST}"; } > "${work}/inventory/hosts.yml"
}
