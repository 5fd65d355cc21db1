#!/usr/bin/env bash
# Regenerate an app's lock file (requirements.lock, with hashes) from its requirements.in,
# with pip-tools in a throwaway virtualenv, against PyPI only.
#   scripts/lock.sh examples/hello_api
source "$(dirname "$0")/lib.sh"
app_dir="${1:?usage: scripts/lock.sh APP_DIR}"
[ -f "${app_dir}/requirements.in" ] || die "${app_dir}/requirements.in does not exist"
tools="${CACHE_DIR}/pip-tools"
[ -x "${tools}/bin/pip-compile" ] || { python3 -m venv "${tools}" && "${tools}/bin/pip" install -q pip-tools; }
cd "${app_dir}"
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" "${tools}/bin/pip-compile" -q --generate-hashes \
  --strip-extras --allow-unsafe --no-header --index-url https://pypi.org/simple \
  -o requirements.lock requirements.in
log "wrote ${app_dir}/requirements.lock"
