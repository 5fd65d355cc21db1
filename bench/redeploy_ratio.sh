#!/usr/bin/env bash
# Benchmark: a fresh deploy versus a code-only redeploy, timed in one run on a new local
# container reached over SSH (scripts/test-host.sh), as a server is. The redeploy changes the
# app's code only (same lock file): it makes a new release but reuses the virtualenv instead
# of installing from the package index.
#
#   bench/redeploy_ratio.sh
#
# Prints both wall-clock times and their ratio. The container is removed afterwards.
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/lib.sh"

NAME="${BENCH_NAME:-fastapi-bench}"
bench_single_host "${NAME}"

deploy() {  # label, extra args...
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  ansible-playbook -i "${work}/inventory/hosts.yml" playbooks/deploy.yml "$@" \
    > "${work}/${label}.log" 2>&1 || { tail -30 "${work}/${label}.log"; die "${label} deploy failed"; }
  end=$(date +%s.%N)
  python3 -c "print(round(${end} - ${start}, 1))"
}

fresh=$(deploy fresh)
cp -r examples/hello_api "${work}/app"
echo "# code change for the benchmark $(date +%s)" >> "${work}/app/main.py"
redeploy=$(deploy code-only -e "fastapi_app_src=${work}/app")
releases=$("${REPO_ROOT}/scripts/test-host.sh" ssh "${work}/host" "${NAME}" sudo ls -1 /srv/fastapi/releases | wc -l)
venvs=$("${REPO_ROOT}/scripts/test-host.sh" ssh "${work}/host" "${NAME}" sudo ls -1 /srv/fastapi/venvs | wc -l)

printf 'fresh deploy (new host, pip install from the index): %6.1f s\n' "${fresh}"
printf 'code-only redeploy (new release, venv reused):        %6.1f s\n' "${redeploy}"
python3 -c "print(f'ratio fresh / code-only: {${fresh} / ${redeploy}:.2f}x  (releases on host: ${releases}, virtualenvs: ${venvs})')"
