#!/usr/bin/env bash
# The whole test suite (`make test`, and CI's .ci/run): lint, syntax check, and the Molecule
# scenarios, with how long each took. Everything is installed or built first (apt packages,
# the controller virtualenv, the container and VM images), so that the parallel parts below do
# not race for them.
#
# The scenarios run side by side, each on hosts of its own, from the start: the container
# scenarios (default, releases, cluster) and the vm, a VM under software emulation (TCG) that
# keeps about one core busy whatever else runs. Each scenario's output goes to
# .cache/molecule-<scenario>.log and is printed, in order, once it has ended; lint and the unit
# tests run meanwhile. Exits non-zero if any step failed.
#   scripts/test.sh                      # lint, syntax, default, releases, cluster, vm
#   scripts/test.sh default              # lint, syntax and one scenario
#   SKIP_LINT=1 scripts/test.sh cluster  # a scenario alone
source "$(dirname "$0")/lib.sh"
[ "$#" -gt 0 ] || set -- default releases cluster vm
export PATH="${REPO_ROOT}/.venv/bin:${PATH}"
cd "${REPO_ROOT}"
t0=$(date +%s)
results=()
rc=0
record() {  # name, start, exit code[, end]
  local took=$(( ${4:-$(date +%s)} - $2 ))
  if [ "$3" -eq 0 ]; then results+=("$(printf '%-10s passed in %5d s' "$1" "${took}")")
  else results+=("$(printf '%-10s FAILED after %4d s (exit %s)' "$1" "${took}" "$3")"); rc=1; fi
  log "${results[-1]}"
}

start=$(date +%s)
"${REPO_ROOT}/scripts/setup.sh" vm
for release in bookworm trixie; do DEBIAN_RELEASE="${release}" "${REPO_ROOT}/scripts/build-image.sh" >/dev/null; done
if [[ " $* " == *" vm "* ]]; then "${REPO_ROOT}/scripts/build-vm-image.sh" >/dev/null; fi
record setup "${start}" 0

podman_runtime_setup "$(DEBIAN_RELEASE=bookworm "${REPO_ROOT}/scripts/build-image.sh")"

# Every scenario in the background from the start, each on hosts of its own, with its output in
# .cache/molecule-<scenario>.log, printed when it ends.
declare -A pids starts
for s in "$@"; do
  log "starting the ${s} scenario in the background (output: ${CACHE_DIR}/molecule-${s}.log)"
  starts[${s}]=$(date +%s)
  rm -f "${CACHE_DIR}/molecule-${s}.end" "${CACHE_DIR}/playbook-runs-${s}.jsonl"
  ( set +e
    "${REPO_ROOT}/scripts/molecule.sh" test -s "${s}" > "${CACHE_DIR}/molecule-${s}.log" 2>&1
    code=$?
    date +%s > "${CACHE_DIR}/molecule-${s}.end"  # when it ended, for its line in the summary
    exit "${code}" ) &
  pids[${s}]=$!
done

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
  set +e
  wait "${pids[${s}]}"
  code=$?
  set -e
  log "----- ${s} scenario output (${CACHE_DIR}/molecule-${s}.log) -----"
  cat "${CACHE_DIR}/molecule-${s}.log"
  python3 scripts/playbook_runs.py "${CACHE_DIR}/playbook-runs-${s}.jsonl" >&2 || true
  record "${s}" "${starts[${s}]}" "${code}" "$(cat "${CACHE_DIR}/molecule-${s}.end" 2>/dev/null || date +%s)"
done

# The failed tests and steps again, last, so that the tail of a long log names them (a test
# name that Molecule's console wrapped under a bare "FAILED" is joined back to it).
for s in "$@"; do
  sed 's/\x1b\[[0-9;]*m//g' "${CACHE_DIR}/molecule-${s}.log" | sed -E 's/^ *│ //' \
    | awk 'f && /^  [^ ]/ { sub(/^ +/, ""); cur = cur (cur == "FAILED" ? " " : "") $0; next }
           f { print cur; f = 0 }
           /^FAILED$/ { cur = "FAILED"; f = 1; next }
           /^FAILED [^-]|^ERROR / { print }
           END { if (f) print cur }' | cut -c1-400 | head -n 20 | sed "s/^/  ${s}: /" >&2 || true
done
log "test steps (the scenarios ran side by side):"
printf '  %s\n' "${results[@]}" >&2
log "total: $(( $(date +%s) - t0 )) s"
exit "${rc}"
