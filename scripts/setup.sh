#!/usr/bin/env bash
# Install what the controller needs on a fresh Debian machine: podman (with runc),
# debootstrap, and the project's virtualenv (.venv) from requirements.lock, exactly (every
# package and version it lists, each file checked against its hash, nothing resolved); with
# `vm`, QEMU too.
# Safe to run again: it does only what is missing.
source "$(dirname "$0")/lib.sh"

need=()
for cmd in podman runc debootstrap; do
  command -v "${cmd}" >/dev/null || need+=("${cmd}")
done
# `scripts/setup.sh vm`: also QEMU, for the Molecule vm scenario.
if [ "${1:-}" = "vm" ]; then
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  command -v qemu-img >/dev/null || need+=(qemu-utils)
  command -v ssh >/dev/null || need+=(openssh-client)
fi
if [ "${#need[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need[*]}; install them with your package manager"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  log "installing ${need[*]} (apt)"
  ${sudo_cmd} apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive ${sudo_cmd} apt-get install -y -q "${need[@]}" >/dev/null
fi

venv="${REPO_ROOT}/.venv"
lock="${REPO_ROOT}/requirements.lock"
stamp="${venv}/.requirements.sha256"
want=$(sha256sum "${lock}" | cut -d' ' -f1)
if [ ! -x "${venv}/bin/ansible-playbook" ] || [ "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]; then
  log "creating the controller virtualenv .venv from requirements.lock"
  # --clear: only what the lock lists, not what an older lock left. --no-deps: nothing resolved
  # against the index (a newer release of any dependency changes nothing); pip check: the lock
  # was complete.
  python3 -m venv --clear "${venv}"
  "${venv}/bin/pip" install -q --disable-pip-version-check --no-input --no-deps --require-hashes -r "${lock}"
  "${venv}/bin/pip" check --disable-pip-version-check >&2 \
    || die "requirements.lock is incomplete or inconsistent (above): regenerate it with 'scripts/lock.sh .'"
  echo "${want}" > "${stamp}"
fi
