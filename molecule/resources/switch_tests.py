"""Every change to what an app host serves is a switch, new beside old, with no failed request
and no wait (shared by the scenarios with a load balancer on a host of its own: the cluster's
test_switch_cases.py imports them). Under load through the balancer, with the balancer's
upstream files watched: a port change, a workers change, an environment change, then a
code-only redeploy while a slow request is in progress on the serving instance. The cases
build on each other (each keeps the settings of the ones before); the converged state comes
back before the next module (the `restore` fixture).

Needs the fixtures `app_hosts` ({inventory name: testinfra host}), `balancer` (the load
balancer's testinfra host), `url` (the app through the balancer), `name` (the app's unit name)
and `rollout` (extra arguments of every deploy, e.g. a batch size, and the number of batches
they make).
"""

import json
import threading
import time

import pytest

from deploytest import (BackendWatcher, Load, app_copy, assert_load_spanned, https_json, run_playbook, serving,
                        worker_pids)

__all__ = [
    "pytestmark",
    "test_port_change",
    "test_workers_change",
    "test_environment_change",
    "test_slow_request_across_a_redeploy",
]

pytestmark = pytest.mark.usefixtures("restore")
SETTINGS = []  # the extra variables of the cases so far: each case keeps them
PORT = 8010
GREETING = "Hello, switched"


def _switch(app_hosts, balancer, url, name, rollout, *args, during=None):
    """Deploy with SETTINGS + args under load, watching the balancer. `during(watcher)` runs in
    a thread beside the deploy. Returns (result, load figures, watcher, state before)."""
    before = {h: serving(host) for h, host in app_hosts.items()}
    version = https_json(url.split("/")[2])[0]["version"]
    watcher = BackendWatcher(balancer, name)
    load = Load(url, keep_alive=1, balancer=balancer)
    watcher.start()
    side = threading.Thread(target=during, daemon=True) if during else None
    if side:
        side.start()
    result = run_playbook(*rollout[0], *SETTINGS, *args)
    if side:
        side.join(timeout=120)
    stats = load.stop()
    watcher.stop()
    assert result.returncode == 0, result.stdout[-6000:]
    assert result.stdout.count("PLAY [Roll the release out") == rollout[1], "the batches"
    SETTINGS.extend(args)
    return result, stats, watcher, before, version


def _assert_switched(app_hosts, watcher, before, ports):
    """Each host now serves from the other instance, on one of `ports`; the balancer moved each
    host once, from the old instance's port to the new one's, and never marked it down; the old
    instance is gone."""
    assert watcher.seen_down == set(), vars(watcher)
    for h, host in app_hosts.items():
        unit, port = serving(host)
        old_unit, old_port = before[h]
        assert unit != old_unit and port in ports and port != old_port, (h, unit, port, before[h])
        assert watcher.ports(h) == [old_port, port], (h, watcher.moves)
        assert not host.file(f"/etc/systemd/system/{old_unit}.service").exists
        assert host.run(f"curl -s -m 2 http://127.0.0.1:{old_port}/health").rc != 0, "nothing answers on the old port"


def test_port_change(app_hosts, balancer, url, name, rollout, baseline):
    result, stats, watcher, before, version = _switch(app_hosts, balancer, url, name, rollout,
                                                      "-e", f"fastapi_service_port={PORT}")
    _assert_switched(app_hosts, watcher, before, (PORT, PORT + 1))
    assert_load_spanned(stats, result, version, version, baseline)


def test_workers_change(app_hosts, balancer, url, name, rollout, baseline):
    result, stats, watcher, before, version = _switch(app_hosts, balancer, url, name, rollout, "-e", "fastapi_service_workers=3")
    _assert_switched(app_hosts, watcher, before, (PORT, PORT + 1))
    for host in app_hosts.values():
        assert len(worker_pids(host, name)) == 3
    assert_load_spanned(stats, result, version, version, baseline)


def test_environment_change(app_hosts, balancer, url, name, rollout, baseline):
    """A changed environment value (and a longer graceful shutdown, for the next case)."""
    env = {"fastapi_app_environment": {"APP_VERSION": "{{ fastapi_app_version }}", "GREETING": GREETING}}
    result, stats, watcher, before, version = _switch(
        app_hosts, balancer, url, name, rollout, "-e", json.dumps(env),
        "-e", "fastapi_service_timeout_graceful_shutdown=12", "-e", "fastapi_service_timeout_stop_sec=15")
    _assert_switched(app_hosts, watcher, before, (PORT, PORT + 1))
    for _ in range(len(app_hosts) * 3):
        assert https_json(url.split("/")[2])[0]["greeting"] == GREETING
    assert_load_spanned(stats, result, version, version, baseline)


def test_slow_request_across_a_redeploy(app_hosts, balancer, url, name, rollout, tmp_path_factory, baseline):
    """A 10 s request to the first host's serving instance, sent when its new instance is healthy:
    the balancer moves to the new instance meanwhile and the old one stops, but only once the
    request is answered (by the old release); the other requests do not wait for it."""
    first = next(iter(app_hosts))
    host = app_hosts[first]
    old_unit, old_port = serving(host)
    slow = {}

    new_port = {PORT: PORT + 1, PORT + 1: PORT}[old_port]

    def hold_a_slow_request():
        # sent once the new instance answers its health check: the balancer moves right after
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and host.run(f"curl -sf -m 1 http://127.0.0.1:{new_port}/health").rc != 0:
            time.sleep(0.2)
        slow["sent"] = time.time()
        out = host.run(f"curl -sS -m 60 -w '\\n%{{http_code}}' 'http://127.0.0.1:{old_port}/slow?seconds=10'")
        slow["answered"] = time.time()
        slow["body"], _, slow["status"] = out.stdout.rpartition("\n")

    result, stats, watcher, before, version = _switch(
        app_hosts, balancer, url, name, rollout, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'slow')}",
        "-e", "fastapi_app_version=8.0.0", during=hold_a_slow_request)
    assert slow.get("status") == "200", slow
    assert json.loads(slow["body"])["version"] == version, "answered by the old instance"
    assert slow["answered"] - slow["sent"] >= 10
    assert watcher.moved_at[first][-1] < slow["answered"], "the balancer had moved on while it was in progress"
    _assert_switched(app_hosts, watcher, before, (PORT, PORT + 1))
    assert_load_spanned(stats, result, version, "8.0.0", baseline)
