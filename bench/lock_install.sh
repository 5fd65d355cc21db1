#!/usr/bin/env bash
# Benchmark: how a lock file installs into a new virtualenv on a fresh Debian host (a new
# container each run, so no pip cache: every file comes from the index), the way the
# fastapi_app role installs it (--no-deps --require-hashes, then pip check) beside the way it
# did before (--require-hashes alone, which lets pip resolve the lock's dependencies against
# the index again, and fails once the index has a newer release than the lock of a package
# named with an extra).
#
#   bench/lock_install.sh [LOCK] [bookworm|trixie] [RUNS]
#   bench/lock_install.sh examples/hello_api/requirements.lock bookworm 3
#
# Prints, for each way, every run's wall time and exit code, then the median.
source "$(dirname "$0")/../scripts/lib.sh"
lock=$(realpath "${1:-${REPO_ROOT}/examples/hello_api/requirements.lock}")
release="${2:-bookworm}"
runs="${3:-3}"
"${REPO_ROOT}/scripts/setup.sh" >/dev/null
base=$(DEBIAN_RELEASE="${release}" "${REPO_ROOT}/scripts/build-image.sh")
podman_runtime_setup "${base}"

# The test image with python3-venv and the controller's extra CAs (a TLS-intercepting proxy),
# as the fastapi_host role leaves a host; made once.
image="localhost/fastapi-deploy-bench-venv:${release}"
if ! podman image exists "${image}"; then
  log "making ${image} (python3-venv)"
  ctr=$(podman run -d -v /usr/local/share/ca-certificates:/extra-ca:ro "${base}" sleep infinity)
  podman exec "${ctr}" sh -c 'cp /extra-ca/*.crt /usr/local/share/ca-certificates/ 2>/dev/null; update-ca-certificates >/dev/null 2>&1;
    apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y python3-venv >/dev/null'
  podman commit -q "${ctr}" "${image}" >/dev/null
  podman rm -f "${ctr}" >/dev/null
fi

declare -A how=(
  [exact]='/v/bin/pip install -q --no-input --disable-pip-version-check --no-deps --require-hashes -r /lock && /v/bin/pip check -q'
  [resolving]='/v/bin/pip install -q --no-input --disable-pip-version-check --require-hashes -r /lock'
)
for way in exact resolving; do
  times=()
  for _ in $(seq "${runs}"); do
    t0=$(date +%s.%N)
    set +e
    podman run --rm -v "${lock}:/lock:ro" "${image}" sh -c "python3 -m venv /v && ${how[${way}]}" >/dev/null 2>&1
    code=$?
    set -e
    t=$(awk -v a="${t0}" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    times+=("${t}")
    printf '%-10s %s  %6.1f s  exit %d\n' "${way}" "${release}" "${t}" "${code}"
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-10s %s  median %6.1f s over %d runs (%s)\n' "${way}" "${release}" "${median}" "${runs}" "$(basename "$(dirname "${lock}")")/$(basename "${lock}")"
done
