#!/usr/bin/env bash
# Shared helpers for the scripts in this folder. Source it; do not run it.
# shellcheck disable=SC2034
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR="${REPO_ROOT}/.cache"
mkdir -p "${CACHE_DIR}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# The Debian release of the local test image, and the image name Molecule and the demo use.
# FASTAPI_DEPLOY_IMAGE overrides the image for users who can pull one (it must run systemd
# as /sbin/init and have python3).
# Debian 12 (bookworm) unless DEBIAN_RELEASE says otherwise (trixie: Debian 13).
DEBIAN_RELEASE="${DEBIAN_RELEASE:-bookworm}"

# Podman's default runtime (crun) cannot set rlimits on machines without CAP_SYS_RESOURCE;
# runc can. Use the project's containers.conf (runc, no default ulimits) only where the
# default runtime fails, so that ordinary workstations keep their own settings.
podman_runtime_setup() {
  command -v podman >/dev/null || die "podman is not installed: run 'make setup' first"
  if [ -n "${CONTAINERS_CONF:-}" ]; then return 0; fi
  local marker="${CACHE_DIR}/podman-needs-runc"
  if [ -f "${marker}" ]; then
    export CONTAINERS_CONF="${REPO_ROOT}/scripts/containers-runc.conf"
    return 0
  fi
  local probe="${CACHE_DIR}/podman-default-ok"
  if [ -f "${probe}" ]; then return 0; fi
  if podman run --rm --network none "$1" true >/dev/null 2>&1; then
    touch "${probe}"
  else
    log "podman's default runtime fails here; using runc (scripts/containers-runc.conf)"
    touch "${marker}"
    export CONTAINERS_CONF="${REPO_ROOT}/scripts/containers-runc.conf"
  fi
}
