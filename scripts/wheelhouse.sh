#!/usr/bin/env bash
# Download the wheels of a lock file for the hosts' Python into a directory on the controller:
# a wheelhouse for fastapi_app_wheelhouse (pip on the hosts then installs from it alone).
# Only wheels are taken (no source builds on the hosts), for CPython PYTHON_VERSION on
# x86_64 glibc Linux (PLATFORM_ARCH=aarch64 for ARM hosts); every file is checked against the
# lock file's hashes. Re-running it only downloads what is missing.
#   scripts/wheelhouse.sh examples/hello_api/requirements.lock .cache/wheelhouse-3.11 3.11   # Debian 12
#   scripts/wheelhouse.sh examples/hello_api/requirements.lock .cache/wheelhouse-3.13 3.13   # Debian 13
source "$(dirname "$0")/lib.sh"
lock="${1:?usage: scripts/wheelhouse.sh LOCKFILE DIR PYTHON_VERSION}"
dest="${2:?usage: scripts/wheelhouse.sh LOCKFILE DIR PYTHON_VERSION}"
py="${3:?usage: scripts/wheelhouse.sh LOCKFILE DIR PYTHON_VERSION (e.g. 3.11)}"
arch="${PLATFORM_ARCH:-x86_64}"
[ -f "${lock}" ] || die "the lock file ${lock} does not exist"
[[ "${py}" =~ ^3\.[0-9]+$ ]] || die "PYTHON_VERSION is '${py}': give the hosts' Python as 3.N (3.11 on Debian 12, 3.13 on Debian 13)"
abi="cp${py/./}"
platforms=()
for glibc in 17 28 31 34 35 36 39 41; do platforms+=(--platform "manylinux_2_${glibc}_${arch}"); done
platforms+=(--platform "manylinux2014_${arch}" --platform "linux_${arch}")
mkdir -p "${dest}"
python3 -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps \
  --only-binary=:all: --implementation cp --python-version "${py}" \
  --abi "${abi}" --abi abi3 --abi none "${platforms[@]}" \
  -r "${lock}" -d "${dest}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
log "wheelhouse for Python ${py} (${arch}): ${dest} ($(find "${dest}" -name '*.whl' | wc -l) wheels)"
