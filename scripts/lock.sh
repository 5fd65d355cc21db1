#!/usr/bin/env bash
# Make a complete lock file, DIR/requirements.lock, from DIR/requirements.in: every package the
# requirements need, each pinned with == and with the sha256 of each of its files, with uv (from
# the controller's .venv) against PyPI. One file for every host: markers say which line is for
# which Python (3.11, Debian 12's, and newer) or platform. Installed with
# `pip install --no-deps --require-hashes`, it gives the same files on every host, today and
# next year, whatever the index publishes: nothing is resolved again.
# Re-running keeps the pins that requirements.in still allows (the lock changes only where you
# changed requirements.in); LOCK_UPGRADE asks for the newest releases.
#   scripts/lock.sh examples/hello_api                       # an app (make lock: the example)
#   scripts/lock.sh .                                        # the controller's own tools
#   LOCK_UPGRADE=1 scripts/lock.sh DIR                       # every package to its newest release
#   LOCK_UPGRADE_PACKAGE=uvicorn scripts/lock.sh DIR         # one package (names separated by spaces)
#   LOCK_EXCLUDE_NEWER=2025-11-01 scripts/lock.sh DIR        # as the index was on that date
# LOCK_INDEX_URL: another index (a mirror); LOCK_PYTHON_VERSION: the oldest Python (3.11).
source "$(dirname "$0")/lib.sh"
app_dir="${1:?usage: scripts/lock.sh DIR (DIR/requirements.in -> DIR/requirements.lock)}"
[ -f "${app_dir}/requirements.in" ] || die "${app_dir}/requirements.in does not exist: write the app's direct requirements there (fastapi[standard]==X.Y.Z and the rest)"
uv="${UV:-${REPO_ROOT}/.venv/bin/uv}"  # UV: another uv binary
[ -x "${uv}" ] || die "uv is not in the controller virtualenv: run 'make setup' first"
args=(pip compile --quiet --universal --generate-hashes --no-strip-markers
      --python-version "${LOCK_PYTHON_VERSION:-3.11}"
      --index-url "${LOCK_INDEX_URL:-https://pypi.org/simple}"
      --custom-compile-command "scripts/lock.sh ${app_dir%/}")
[ -z "${LOCK_UPGRADE:-}" ] || args+=(--upgrade)
for p in ${LOCK_UPGRADE_PACKAGE:-}; do args+=(--upgrade-package "${p}"); done
if [ -n "${LOCK_EXCLUDE_NEWER:-}" ]; then args+=(--exclude-newer "${LOCK_EXCLUDE_NEWER}"); fi
cd "${app_dir}"
# --system-certs: the system's CAs (a TLS-intercepting proxy's among them), as pip uses.
UV_NO_CONFIG=1 "${uv}" "${args[@]}" --system-certs -o requirements.lock requirements.in
log "wrote ${app_dir%/}/requirements.lock ($(grep -cE '^[A-Za-z0-9]' requirements.lock) packages)"
