"""Unit tests of the fastapi_deploy role's code: the deploy lock and log module (files in a
temporary directory, as on a host) and the controller's filters (who holds a lock and whether
that run is gone, the fleet's deploy log as text)."""

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

ROLE = Path(__file__).resolve().parents[2] / "roles/fastapi_deploy"


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = load("fastapi_deploy_run", ROLE / "library/fastapi_deploy_run.py")
lock = log = run  # the lock and the log are kept by one module
filters = load("fastapi_deploy_filters", ROLE / "filter_plugins/fastapi_deploy.py")


def holder(run, **kw):
    return {"run": run, "user": "alice", "controller": "ctl", "pid": 123, "since": "2026-11-26T10:00:00Z", **kw}


def test_only_one_run_takes_the_lock_and_it_is_reentrant(tmp_path):
    path = str(tmp_path / "hello-api.lock")
    assert lock.acquire(path, holder("r1")) == (True, holder("r1"))
    assert lock.acquire(path, holder("r1"))[0], "the same run again"
    taken, current = lock.acquire(path, holder("r2"))
    assert not taken and current["run"] == "r1"
    assert os.listdir(tmp_path) == ["hello-api.lock"], "no temporary file left"


def test_many_runs_at_once_one_wins(tmp_path):
    path = str(tmp_path / "app.lock")
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(lock.acquire(path, holder(f"r{i}"))[0]))
               for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_release_only_by_its_run_unless_forced(tmp_path):
    path = str(tmp_path / "app.lock")
    lock.acquire(path, holder("r1"))
    assert lock.release(path, "r2", False) == (False, holder("r1"))
    assert os.path.exists(path)
    assert lock.release(path, "r2", True) == (True, holder("r1"))
    assert lock.release(path, "r1", False) == (False, {}), "nothing to release"


def test_an_unreadable_lock_is_still_a_lock(tmp_path):
    path = tmp_path / "app.lock"
    path.write_text("garbage")
    taken, current = lock.acquire(str(path), holder("r1"))
    assert not taken and "unreadable" in current["message"]


def test_the_log_is_appended_and_read_by_run(tmp_path):
    path = str(tmp_path / "logs/app.log")
    for run in ("r1", "r2", "r3"):
        log.append(path, {"run": run, "event": "start"})
        log.append(path, {"run": run, "event": "end", "result": "served", "reason": "Grüße \"quoted\"\nline"})
    with open(path, "a", encoding="utf-8") as f:
        f.write("not json\n")
    records = log.read(path, 2)
    assert [(r["run"], r["event"]) for r in records] == [("r2", "start"), ("r2", "end"), ("r3", "start"), ("r3", "end")]
    assert records[-1]["reason"] == "Grüße \"quoted\"\nline"
    assert len(Path(path).read_text().splitlines()) == 7, "one line per record"
    assert log.read(str(tmp_path / "missing.log"), 5) == []


def test_a_gone_holder_on_this_controller_is_explained():
    gone = filters.lock_explain(holder("r1", message="fix #12"), "hello-api", "app1", "inv", here="ctl",
                                alive=lambda pid: False, now=filters._parse("2026-11-26T10:12:00Z"))
    assert "held by alice@ctl since 2026-11-26T10:00:00Z (for 12 min)" in gone
    assert "'fix #12'" in gone
    assert "that run is gone: process 123 no longer runs on ctl" in gone
    assert "ansible-playbook playbooks/lock.yml -i inv -e fastapi_deploy_lock_action=release" in gone


def test_a_live_holder_or_another_controller_is_not_called_gone():
    alive = filters.lock_explain(holder("r1"), "a", "h", here="ctl", alive=lambda pid: True, now=0)
    assert "that run is gone" not in alive and "Wait until it ends" in alive
    other = filters.lock_explain(holder("r1"), "a", "h", here="elsewhere", alive=lambda pid: False, now=0)
    assert "that run is gone" not in other and "taken from ctl: this controller cannot tell" in other
    maintenance = filters.lock_explain(holder("r1", pid=0, playbook="lock.yml", message="db upgrade"), "a", "h",
                                       here="ctl", alive=lambda pid: False, now=0)
    assert "that run is gone" not in maintenance and "'db upgrade'" in maintenance


def test_the_controller_pid_is_the_ansible_playbook_process():
    """A forked child (as Ansible's workers are) finds its parent: the same command line."""
    code = ("import os, sys, importlib.util as u\n"
            f"s = u.spec_from_file_location('f', {str(ROLE / 'filter_plugins/fastapi_deploy.py')!r})\n"
            "m = u.module_from_spec(s); s.loader.exec_module(m)\n"
            "parent = os.getpid()\n"
            "r, w = os.pipe()\n"
            "if os.fork() == 0:\n"
            "    os.write(w, str(m.controller_pid()).encode()); os._exit(0)\n"
            "os.wait(); print(parent, os.read(r, 64).decode())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == out[1]


def test_the_fleet_log_shows_each_run_once_with_each_host():
    start = {"run": "r1", "event": "start", "action": "deploy", "user": "alice", "controller": "ctl",
             "started": "2026-11-26T10:00:00Z"}
    end1 = dict(start, event="end", release="v10", revision="abc123", result="failed",
                reason="Release v10 failed its health check", fleet_result="failed on app1", ended="2026-11-26T10:02:00Z")
    end2 = dict(start, event="end", release="v10", revision="abc123", result="not switched (the run stopped at app1)",
                fleet_result="failed on app1", ended="2026-11-26T10:02:00Z")
    good = {"run": "r2", "event": "end", "action": "deploy", "release": "v11", "revision": "def456",
            "started": "2026-11-26T11:00:00Z", "result": "served", "fleet_result": "succeeded", "user": "bob"}
    killed = {"run": "r3", "event": "start", "action": "rollback", "started": "2026-11-26T12:00:00Z", "user": "carol"}
    lines = filters.fleet_log({"app1": [start, end1, good, killed], "app2": [start, end2, good]})
    text = "\n".join(lines)
    assert lines[0].startswith("2026-11-26T12:00:00Z  rollback") and "interrupted" in lines[0]
    assert "deploy of release v11 (revision def456" in text and ": succeeded" in text
    assert "deploy of release v10 (revision abc123" in text and "failed on app1" in text
    assert "    app1: failed: Release v10 failed its health check" in text
    assert "    app2: not switched (the run stopped at app1)" in text
    assert "    app2: no end recorded" not in text
    assert text.count("release v10") == 1


def test_the_filters_are_registered():
    names = filters.FilterModule().filters()
    assert {"fastapi_deploy_controller_pid", "fastapi_deploy_lock_explain", "fastapi_deploy_fleet_log"} <= set(names)
    json.dumps(filters.fleet_log({}))
