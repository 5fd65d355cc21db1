#!/usr/bin/env bash
# Benchmark: failed requests while the app restarts under load, plain uvicorn (it opens its
# own listening socket) versus socket activation (systemd owns the socket, uvicorn --fd 3),
# side by side in one run, on the same host, app, virtualenv, workers and load.
#
#   bench/restart_refusals.sh               # uses the demo container (made by `make demo` if missing)
#   REQUESTS=6000 CONCURRENCY=16 ROUNDS=5 bench/restart_refusals.sh
#
# A third variant is what the fastapi_service role deploys: socket activation with
# uvicorn_graceful.py (uvicorn whose shutdown does not close a just-accepted connection).
# Each variant runs as a transient pair of units on the demo host (ports 9101-9103),
# gets the same bounded load (bench/loadgen.py, run on the host itself against 127.0.0.1),
# is restarted once a second into the load, and the failed requests are counted. The units
# are removed afterwards.
source "$(dirname "$0")/../scripts/lib.sh"

NAME="${DEMO_NAME:-fastapi-demo}"
REQUESTS="${REQUESTS:-4000}"
CONCURRENCY="${CONCURRENCY:-8}"
ROUNDS="${ROUNDS:-3}"
image=$("${REPO_ROOT}/scripts/build-image.sh")
podman_runtime_setup "${image}"
podman container exists "${NAME}" || "${REPO_ROOT}/scripts/demo.sh" >/dev/null
podman start "${NAME}" >/dev/null
podman cp "${REPO_ROOT}/bench/loadgen.py" "${NAME}:/tmp/loadgen.py"
podman cp "${REPO_ROOT}/roles/fastapi_service/files/uvicorn_graceful.py" "${NAME}:/tmp/uvicorn_graceful.py"

podman exec -i -e UVICORN_ARGS="${UVICORN_ARGS:-}" -e VARIANTS="${VARIANTS:-}" "${NAME}" bash -s "${REQUESTS}" "${CONCURRENCY}" "${ROUNDS}" <<'HOST'
set -euo pipefail
requests=$1 concurrency=$2 rounds=$3
unit=$(cat /var/lib/fastapi-deploy/hello-api.serving)  # the instance that serves (hello-api-a or -b)
app_dir=$(systemctl show -p WorkingDirectory --value "${unit}.service")
venv_bin=$(dirname "$(systemctl show -p ExecStart --value "${unit}.service" | grep -oE 'path=[^ ;]+' | cut -d= -f2)")
uvicorn="${venv_bin}/uvicorn"
common="--app-dir ${app_dir} --workers 2 --timeout-graceful-shutdown 3 ${UVICORN_ARGS:-}"
cat > /run/systemd/system/bench-plain.service <<UNIT
[Service]
User=fastapi
WorkingDirectory=${app_dir}
ExecStart=${uvicorn} main:app ${common} --host 127.0.0.1 --port 9101
KillMode=mixed
TimeoutStopSec=8
UNIT
cat > /run/systemd/system/bench-socket.socket <<UNIT
[Socket]
ListenStream=127.0.0.1:9102
Backlog=4096
UNIT
cat > /run/systemd/system/bench-socket.service <<UNIT
[Unit]
Requires=bench-socket.socket
After=bench-socket.socket
[Service]
User=fastapi
WorkingDirectory=${app_dir}
ExecStart=${uvicorn} main:app ${common} --fd 3
KillMode=mixed
TimeoutStopSec=8
UNIT
sed 's/9102/9103/' /run/systemd/system/bench-socket.socket > /run/systemd/system/bench-graceful.socket
sed -e 's/bench-socket/bench-graceful/g' -e "s|ExecStart=${uvicorn}|ExecStart=$(dirname "${uvicorn}")/python /tmp/uvicorn_graceful.py|" \
  /run/systemd/system/bench-socket.service > /run/systemd/system/bench-graceful.service
systemctl daemon-reload
systemctl start bench-plain.service bench-socket.socket bench-socket.service bench-graceful.socket bench-graceful.service
sleep 3
run() {  # unit port round
  python3 /tmp/loadgen.py "http://127.0.0.1:$2/" --requests "${requests}" --concurrency "${concurrency}" \
    --pause 0.01 --timeout 60 --max-seconds 300 > "/tmp/bench-$1-$3.json" &
  local load=$!
  sleep 1
  local t0; t0=$(date +%s.%N)
  systemctl restart "$1.service"
  local t1; t1=$(date +%s.%N)
  wait "${load}"
  python3 -c "print(round($t1 - $t0, 1))" > "/tmp/bench-$1-$3.restart"
}
echo "restart under load: ${rounds} round(s) per variant, each ${requests} requests from ${concurrency} clients (new connection each), one restart 1 s in"
for round in $(seq 1 "${rounds}"); do
  for variant in ${VARIANTS:-plain socket graceful}; do
    case "${variant}" in plain) port=9101 ;; socket) port=9102 ;; graceful) port=9103 ;; esac
    run "bench-${variant}" "${port}" "${round}"
  done
done
python3 - "${rounds}" ${VARIANTS:-plain socket graceful} <<'PY'
import json, sys
rounds, variants = int(sys.argv[1]), sys.argv[2:]
names = {"plain": "plain uvicorn (--host/--port)", "socket": "socket activation, stock uvicorn",
         "graceful": "socket activation + uvicorn_graceful"}
for v in variants:
    runs = [json.load(open(f"/tmp/bench-bench-{v}-{r}.json")) for r in range(1, rounds + 1)]
    restarts = [open(f"/tmp/bench-bench-{v}-{r}.restart").read().strip() for r in range(1, rounds + 1)]
    total = sum(r["requests"] for r in runs)
    failed = sum(r["failed"] for r in runs)
    errors = {}
    for r in runs:
        for k, n in r["errors"].items():
            errors[k.split(":")[0]] = errors.get(k.split(":")[0], 0) + n
    print(f"{names[v]:38} requests={total:6d} failed={failed:5d} ({100 * failed / max(total, 1):5.2f}%)"
          f" per round={[r['failed'] for r in runs]} restart s={restarts}"
          f" max latency={max(r['max_latency_s'] for r in runs)}s errors={errors or 'none'}")
PY
systemctl stop bench-plain.service bench-socket.service bench-socket.socket bench-graceful.service bench-graceful.socket || true
rm -f /run/systemd/system/bench-{plain.service,socket.socket,socket.service,graceful.socket,graceful.service}
systemctl daemon-reload
HOST
