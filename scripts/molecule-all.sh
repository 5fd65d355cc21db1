#!/usr/bin/env bash
# Run Molecule scenarios for `make test`: the container scenarios one after the other and,
# at the same time, the vm scenario. A VM under software emulation (TCG) keeps about one core
# busy whatever else runs, so running it beside the containers uses the machine's second
# core instead of leaving it idle: on 2 cores the whole suite takes about 25 min less than one
# scenario after the other. The vm scenario's output goes to .cache/molecule-vm.log and is
# printed when it ends. Exits non-zero if any scenario failed.
#   scripts/molecule-all.sh default cluster vm
source "$(dirname "$0")/lib.sh"
[ "$#" -gt 0 ] || set -- default cluster vm
# Everything the scenarios share is made first, so that the parallel runs do not race for
# apt, the virtualenv or an image build.
"${REPO_ROOT}/scripts/setup.sh" vm
for release in trixie bookworm; do DEBIAN_RELEASE="${release}" "${REPO_ROOT}/scripts/build-image.sh" >/dev/null; done
vm_pid=""
vm_log="${CACHE_DIR}/molecule-vm.log"
others=()
for s in "$@"; do
  if [ "${s}" = vm ]; then
    log "starting the vm scenario in the background (output: ${vm_log})"
    "${REPO_ROOT}/scripts/molecule.sh" test -s vm > "${vm_log}" 2>&1 &
    vm_pid=$!
  else
    others+=("${s}")
  fi
done
rc=0
failed=()
for s in "${others[@]}"; do
  start=$(date +%s)
  if "${REPO_ROOT}/scripts/molecule.sh" test -s "${s}"; then
    log "scenario ${s}: passed in $(( $(date +%s) - start )) s"
  else
    rc=1; failed+=("${s}")
    log "scenario ${s}: FAILED after $(( $(date +%s) - start )) s"
  fi
done
if [ -n "${vm_pid}" ]; then
  log "waiting for the vm scenario"
  if wait "${vm_pid}"; then vm_rc=0; else vm_rc=$?; fi
  log "----- vm scenario output (${vm_log}) -----"
  cat "${vm_log}"
  if [ "${vm_rc}" -eq 0 ]; then
    log "scenario vm: passed"
  else
    rc=1; failed+=(vm)
    log "scenario vm: FAILED (exit ${vm_rc})"
  fi
fi
[ "${rc}" -eq 0 ] || log "failed scenarios: ${failed[*]}"
exit "${rc}"
