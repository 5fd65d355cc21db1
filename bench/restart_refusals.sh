#!/usr/bin/env bash
# Benchmark: failed requests while the app restarts under load, plain uvicorn (it opens its
# own listening socket) versus socket activation (systemd owns the socket, uvicorn --fd 3),
# side by side in one run, on the same host, app, virtualenv, workers and load.
#
#   bench/restart_refusals.sh               # uses the demo container (made by `make demo` if missing)
#   REQUESTS=6000 CONCURRENCY=16 bench/restart_refusals.sh
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
image=$("${REPO_ROOT}/scripts/build-image.sh")
podman_runtime_setup "${image}"
podman container exists "${NAME}" || "${REPO_ROOT}/scripts/demo.sh" >/dev/null
podman start "${NAME}" >/dev/null
podman cp "${REPO_ROOT}/bench/loadgen.py" "${NAME}:/tmp/loadgen.py"
podman cp "${UG:-${REPO_ROOT}/roles/fastapi_service/files/uvicorn_graceful.py}" "${NAME}:/tmp/uvicorn_graceful.py"

podman exec -i -e UVICORN_ARGS="${UVICORN_ARGS:-}" -e VARIANTS="${VARIANTS:-}" "${NAME}" bash -s "${REQUESTS}" "${CONCURRENCY}" <<'HOST'
set -euo pipefail
requests=$1 concurrency=$2
app_dir=$(systemctl show -p WorkingDirectory --value hello-api.service)
uvicorn=$(systemctl show -p ExecStart --value hello-api.service | grep -oE 'path=[^ ;]+' | cut -d= -f2)
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
run() {  # unit port
  python3 /tmp/loadgen.py "http://127.0.0.1:$2/" --requests "${requests}" --concurrency "${concurrency}" \
    --pause 0.01 --timeout 60 --max-seconds 300 > "/tmp/bench-$1.json" &
  local load=$!
  sleep 1
  local t0; t0=$(date +%s.%N)
  systemctl restart "$1.service"
  local t1; t1=$(date +%s.%N)
  wait "${load}"
  python3 - "$1" "/tmp/bench-$1.json" "$(python3 -c "print(round($t1 - $t0, 1))")" <<'PY'
import json, sys
unit, path, restart_s = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(path))
kind = {"bench-plain": "plain uvicorn (--host/--port)", "bench-socket": "socket activation, stock uvicorn",
        "bench-graceful": "socket activation + uvicorn_graceful"}[unit]
errors = ", ".join(f"{k} x{v}" for k, v in sorted(r["errors"].items(), key=lambda kv: -kv[1])[:2]) or "none"
print(f"{kind:36} requests={r['requests']:5d} failed={r['failed']:5d} "
      f"({100 * r['failed'] / max(r['requests'], 1):5.1f}%) restart={restart_s}s max_latency={r['max_latency_s']}s  errors: {errors}")
PY
}
printf '%s\n' "restart under load: ${requests} requests, ${concurrency} clients, one restart 1 s in"
for variant in ${VARIANTS:-plain socket graceful}; do
  case "${variant}" in plain) port=9101 ;; socket) port=9102 ;; graceful) port=9103 ;; esac
  run "bench-${variant}" "${port}"
done
systemctl stop bench-plain.service bench-socket.service bench-socket.socket bench-graceful.service bench-graceful.socket || true
rm -f /run/systemd/system/bench-{plain.service,socket.socket,socket.service,graceful.socket,graceful.service}
systemctl daemon-reload
HOST
