#!/usr/bin/env bash
# Benchmark: what a deploy that changes nothing costs, on a new local container reached over
# SSH (scripts/test-host.sh), as a server is: wall time, the controller's CPU (ansible-playbook
# and its workers: user + system) and the host's CPU (the container's cgroup), the median of
# RUNS runs after a fresh deploy. Every test that deploys pays this much before its own work.
#
#   bench/noop_deploy.sh            # 5 runs
#   RUNS=9 bench/noop_deploy.sh
#
# Prints one line per run and the medians. The container is removed afterwards.
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/lib.sh"

NAME="${BENCH_NAME:-fastapi-bench-noop}"
RUNS="${RUNS:-5}"
bench_single_host "${NAME}"

host_cpu_ns() {  # the container's CPU time so far (cgroup v1 cpuacct or v2 cpu.stat)
  local id; id=$(podman inspect -f '{{.Id}}' "${NAME}")
  local v1; v1=$(find /sys/fs/cgroup/cpuacct /sys/fs/cgroup/cpu,cpuacct -maxdepth 3 -path "*${id}*" -name cpuacct.usage 2>/dev/null | head -1)
  if [ -n "${v1}" ]; then cat "${v1}"; return; fi
  local v2; v2=$(find /sys/fs/cgroup -maxdepth 4 -path "*${id}*" -name cpu.stat 2>/dev/null | head -1)
  awk '/^usage_usec/ {print $2 * 1000}' "${v2}"
}

deploy() {  # log file: prints "wall controller_cpu"
  /usr/bin/time -f '%e %U %S' -o "${work}/time" \
    ansible-playbook -i "${work}/inventory/hosts.yml" playbooks/deploy.yml > "$1" 2>&1 \
    || { tail -30 "$1"; die "the deploy failed (log above)"; }
  awk '{printf "%s %.2f\n", $1, $2 + $3}' "${work}/time"
}

deploy "${work}/fresh.log" >/dev/null
deploy "${work}/settle.log" >/dev/null  # the first run after a fresh one may still settle something
for i in $(seq "${RUNS}"); do
  before=$(host_cpu_ns)
  read -r wall cpu < <(deploy "${work}/noop-${i}.log")
  host=$(( ($(host_cpu_ns) - before) / 10000000 ))
  grep -q 'changed=0 ' "${work}/noop-${i}.log" || die "run ${i} changed something: $(grep -A1 RECAP "${work}/noop-${i}.log" | tail -1)"
  results=$(grep -oE '(ok|skipped)=[0-9]+' "${work}/noop-${i}.log" | awk -F= '{s += $2} END {print s}')
  printf 'no-op run %d: %6.1f s wall, controller %5.1f CPU-s, host %5.1f CPU-s, %d task results\n' \
    "${i}" "${wall}" "${cpu}" "$(awk -v h="${host}" 'BEGIN {print h / 100}')" "${results}"
  echo "${wall} ${cpu} ${host}" >> "${work}/figures"
done
python3 - "${work}/figures" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
wall, cpu, host = (statistics.median(col) for col in zip(*rows))
print(f"median of {len(rows)} no-op deploys: {wall:.1f} s wall, controller {cpu:.1f} CPU-s, host {host / 100:.1f} CPU-s")
PY
