#!/usr/bin/env python3
"""Benchmark: what clients see while a deploy changes what the hosts serve (issue 12).

Under steady load through every load balancer (bench/loadgen.py on the controller: 6 clients
shared out among the balancers, 2 of them keeping their connection open, 20 ms between a
client's requests), runs each case
below on a Molecule scenario's hosts, one after the other, and prints per case the deploy's
result and time, the failed requests (as clients saw them, and the upstream attempts that
failed in the balancer's log), and the 99th-percentile and maximum latency, beside the same
load with no deploy, and whether they are within the bounds the load tests allow over it
(molecule/resources/deploytest.py: P99_SLACK, MAX_SLACK):

    baseline       no deploy: the same load for 40 s
    restart        no deploy either: `systemctl restart` of the serving instance on every app
                   host, the stop-then-start that a switch replaces (what the tests' latency
                   bounds must refuse)
    code-only      new code (a new release, the virtualenv reused)
    port           fastapi_service_port 8000 -> 8010
    workers        fastapi_service_workers 2 -> 3
    environment    a changed fastapi_app_environment value
    wrong-import   fastapi_service_app names an attribute that does not exist (must fail, and
                   change nothing)
    slow-request   new code while a 10 s request is held open on the first app host's serving
                   instance, sent as its new instance passes its health check: it must finish,
                   answered by the old instance, while the balancer moves and the old instance
                   stops; the other requests must not wait for it

The cases build on each other (the port stays changed for the later ones); at the end the
scenario's converged settings are deployed again (not measured). Run it after
`scripts/molecule.sh converge [-s cluster]`:

    .venv/bin/python bench/switch_cases.py            # the default scenario (single host, nginx on it)
    .venv/bin/python bench/switch_cases.py cluster    # two load balancers and two app hosts
    CASES=port,slow-request .venv/bin/python bench/switch_cases.py   # some cases (and the baseline)
"""

import json
import shutil
import sys
import tempfile
import threading
import time
import os
from pathlib import Path

import testinfra

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "molecule/resources"))

import deploytest  # noqa: E402  (the tests' helpers: scenario inventory, playbook runs, load)


def app_copy(work, name, extra=""):
    src = Path(work) / name
    if src.exists():  # the same code for several cases: the same release
        return str(src)
    shutil.copytree(REPO_ROOT / "examples/hello_api", src)
    (src / "RELEASE_NOTE").write_text(f"{name} {time.time()}\n")
    if extra:
        (src / "main.py").write_text((src / "main.py").read_text() + extra)
    return str(src)


def slow_request(app_host, seconds, out):
    """Once the first app host's new instance answers its health check (the balancer moves to
    it right after, and the old one is stopped), GET /slow?seconds=N from the old instance on
    that host: it must be answered, by the old release, while the switch goes on around it.
    Records the status, the answer and how long it took."""
    host = testinfra.get_host(f"podman://{app_host}")
    _, old_port = deploytest.serving(host)
    ports = {8000, 8001} if old_port in (8000, 8001) else {8010, 8011}
    new_port = (ports - {old_port}).pop()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and host.run(f"curl -sf -m 1 http://127.0.0.1:{new_port}/health").rc != 0:
        time.sleep(0.2)
    started = time.monotonic()
    answer = host.run(f"curl -sS -m 90 -w '\\n%{{http_code}}' 'http://127.0.0.1:{old_port}/slow?seconds={seconds}'")
    body, _, status = answer.stdout.rpartition("\n")
    out["status"] = int(status) if status.isdigit() else 0
    try:
        out["body"] = json.loads(body)
    except ValueError:
        out["error"] = answer.stdout[-300:] + answer.stderr[-300:]
    out["seconds"] = round(time.monotonic() - started, 2)


def restart_in_place(app_hosts):
    """systemctl restart of the serving instance on each app host, one after the other."""
    started = time.monotonic()
    for name in app_hosts:
        host = testinfra.get_host(f"podman://{name}")
        unit, _ = deploytest.serving(host)
        host.run_expect([0], f"systemctl restart {unit}.service")
    return time.monotonic() - started


def measure(url, label, args=(), expect_ok=True, slow=None, app_host=None, balancer=None, app_hosts=()):
    load = deploytest.Load(url, concurrency=6, pause=0.02, warmup=3.0, keep_alive=2, balancer=balancer)
    slow_result, slow_thread = {}, None
    if slow:
        slow_thread = threading.Thread(target=slow_request, args=(app_host, slow, slow_result))
        slow_thread.start()
    if args is None:
        time.sleep(40)
        ok, took = True, 0.0
    elif args == "restart":
        ok, took = True, restart_in_place(app_hosts)
    else:
        run = deploytest.run_playbook(*args)
        ok, took = run.returncode == 0, run.ended - run.started
        if ok != expect_ok:
            print(f"!! {label}: the deploy {'failed' if not ok else 'passed'} unexpectedly:\n{run.stdout[-3000:]}",
                  file=sys.stderr)
    if slow_thread:
        slow_thread.join()
    stats = load.stop()
    row = {"case": label, "deploy": "-" if args in (None, "restart") else ("ok" if ok else "failed"),
           "deploy_s": round(took, 1), "requests": stats["requests"], "failed": stats["failed"],
           "upstream_failed": len(stats.get("upstream_failures", [])), "keepalive_retries": stats["keepalive_retries"], "p99_s": stats["p99_latency_s"],
           "max_s": stats["max_latency_s"], "versions": stats["versions"], "errors": stats["errors"]}
    if slow:
        row["slow_request"] = slow_result
    return row


def main():
    scenario = sys.argv[1] if len(sys.argv) > 1 else "default"
    platforms = deploytest.use_scenario(REPO_ROOT / "molecule" / scenario)
    # the load goes through every balancer of the scenario (the clients shared out among them),
    # and each one's upstream log is read for what the app hosts behind it saw
    lbs = [p["name"] for p in platforms if "fastapi_proxies" in p["groups"]]
    url = [f"https://{deploytest.container_ip(lb)}/" for lb in lbs]
    work = tempfile.mkdtemp(prefix="switch-bench-")
    port = ["-e", "fastapi_service_port=8010"]
    slow_settings = ["-e", "fastapi_service_timeout_graceful_shutdown=20", "-e", "fastapi_service_timeout_stop_sec=30"]
    env = {"APP_VERSION": "{{ fastapi_app_version }}", "GREETING": "Hello again", "BENCH": "1"}
    cases = [
        ("baseline", None, True, None),
        ("restart", "restart", True, None),
        ("code-only", ["-e", f"fastapi_app_src={app_copy(work, 'v2')}", "-e", "fastapi_app_version=2.0.0"], True, None),
        ("port", ["-e", f"fastapi_app_src={app_copy(work, 'v2b')}", "-e", "fastapi_app_version=2.0.0", *port], True, None),
        ("workers", ["-e", f"fastapi_app_src={app_copy(work, 'v2b')}", "-e", "fastapi_app_version=2.0.0", *port,
                     "-e", "fastapi_service_workers=3"], True, None),
        ("environment", ["-e", f"fastapi_app_src={app_copy(work, 'v2c')}", "-e", "fastapi_app_version=2.0.0", *port,
                         "-e", "fastapi_service_workers=3", "-e", json.dumps({"fastapi_app_environment": env}),
                         *slow_settings], True, None),
        ("wrong-import", ["-e", f"fastapi_app_src={app_copy(work, 'v2c')}", "-e", "fastapi_app_version=2.0.0", *port,
                          "-e", "fastapi_service_workers=3", "-e", json.dumps({"fastapi_app_environment": env}),
                          *slow_settings, "-e", "fastapi_service_app=main:no_such_app",
                          "-e", "fastapi_service_health_timeout=10"],
         False, None),
        ("slow-request", ["-e", f"fastapi_app_src={app_copy(work, 'v3')}", "-e", "fastapi_app_version=3.0.0", *port,
                          *slow_settings], True, 10),
    ]
    only = set(filter(None, os.environ.get("CASES", "").split(",")))
    app_hosts = [p["name"] for p in platforms if "fastapi_servers" in p["groups"]]
    app_host = app_hosts[0]
    balancer = [testinfra.get_host(f"podman://{lb}") for lb in lbs]
    rows = []
    try:
        for label, args, expect_ok, slow in cases:
            if only and label != "baseline" and label not in only:
                continue
            row = measure(url, label, args, expect_ok, slow, app_host, balancer, app_hosts)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        deploytest.restore_converged_state()
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    print(f"\nscenario {scenario}: load through {', '.join(url)} (6 clients, 2 keep-alive, shared out)")
    print(f"{'case':<14}{'deploy':>8}{'took s':>8}{'requests':>10}{'failed':>8}{'upstream':>9}{'p99 s':>8}{'max s':>8}"
          f"{'max - baseline':>16}{'in bounds':>10}  notes")
    for row in rows:
        note = ""
        if "slow_request" in row:
            s = row["slow_request"]
            note = f"slow request: status {s.get('status')} after {s.get('seconds')} s (version {s.get('body', {}).get('version', '?')})"
        if row["keepalive_retries"]:
            note += f" keep-alive retries {row['keepalive_retries']}"
        within = (row["p99_s"] <= base["p99_s"] + deploytest.P99_SLACK
                  and row["max_s"] <= base["max_s"] + deploytest.MAX_SLACK)
        print(f"{row['case']:<14}{row['deploy']:>8}{row['deploy_s']:>8}{row['requests']:>10}{row['failed']:>8}"
              f"{row['upstream_failed']:>9}{row['p99_s']:>8}{row['max_s']:>8}{row['max_s'] - base['max_s']:>16.3f}"
              f"{'yes' if within else 'NO':>10}  {note}")
    bad = [r["case"] for r in rows if r["failed"] and r["case"] != "restart"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
