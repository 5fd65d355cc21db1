"""The deploy lock as users meet it on a fleet: a lock left by a run that was killed (its
process gone) is explained, never taken over, and released by hand with playbooks/lock.yml; a
maintenance lock taken with lock.yml stops deploys and rollbacks, saying why, until released.
A refused run changes nothing and gives back the locks it took on the other hosts. Each test
leaves the lock free."""

import json
import socket
import subprocess

import pytest

from conftest import APPS
from deploytest import ansible_env, current_release, deploy_log, lock_holder, release_lock, run_playbook

LOCK = "/var/lib/fastapi-deploy/hello-api.lock"


@pytest.fixture
def free_lock(hosts):
    yield
    for name in APPS:
        hosts[name].run(f"rm -f {LOCK}")


def test_a_lock_left_by_a_killed_run_is_explained_and_released_by_hand(hosts, free_lock):
    first, second = APPS
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process of this controller that no longer runs
    holder = {"run": "20261126T000000Z-killed", "user": "ghost", "controller": socket.gethostname(), "pid": gone.pid,
              "playbook": "deploy.yml", "since": "2026-11-26T00:00:00Z", "message": "the run that was killed"}
    hosts[second].run(f"mkdir -p /var/lib/fastapi-deploy && printf '%s' {json.dumps(json.dumps(holder))} > {LOCK}")
    before = {name: current_release(hosts[name]) for name in APPS}
    refused = run_playbook()
    assert refused.returncode != 0
    flat = refused.flat
    assert f"The deploy lock of hello-api on {second} is held by ghost@{socket.gethostname()}" in flat, flat[-3000:]
    assert f"that run is gone: process {gone.pid} no longer runs on {socket.gethostname()}" in flat
    assert "'the run that was killed'" in flat and "Nothing was changed by this run" in flat
    assert "-e fastapi_deploy_lock_action=release" in flat
    assert "PLAY [Put nginx in front" not in refused.stdout
    assert lock_holder(hosts[first]) == {}, "the lock taken on the first host was given back"
    assert lock_holder(hosts[second]) == holder, "never taken over"
    assert {name: current_release(hosts[name]) for name in APPS} == before
    # status says the same; release frees it, and the log keeps who released whose lock
    status = run_playbook(playbook="lock.yml")
    assert status.returncode == 0
    assert f"The deploy lock of hello-api on {first} is free." in status.flat
    assert f"that run is gone: process {gone.pid}" in status.flat
    released = release_lock()
    assert released.returncode == 0, released.stdout[-3000:]
    assert f"Released the deploy lock of hello-api on {second}, held by ghost@" in released.flat
    assert f"The deploy lock of hello-api on {first} was free." in released.flat
    assert lock_holder(hosts[second]) == {}
    record = deploy_log(hosts[second])[-1]
    assert (record["event"], record["run"]) == ("released", holder["run"]) and record["released_by"], record


# The reason comes from the controller's environment, as a commit title would: never templated
# (given with -e, the {{ }} would be evaluated), kept as written, with its quote and % sign.
REASON = "db upgrade {{ 7 * 7 }}, 20% of 'rows'"


def test_a_maintenance_lock_stops_deploys_and_rollbacks_until_released(hosts, free_lock):
    taken = run_playbook("-e", "fastapi_deploy_lock_action=acquire", playbook="lock.yml",
                         env=ansible_env(FASTAPI_DEPLOY_MESSAGE=REASON))
    assert taken.returncode == 0, taken.stdout[-3000:]
    assert "holds the deploy lock of hello-api: db upgrade {{ 7 * 7 }}, 20% of" in taken.flat, taken.flat[-3000:]
    holders = [lock_holder(hosts[name]) for name in APPS]
    assert holders[0] == holders[1] and holders[0]["message"] == REASON and holders[0]["pid"] == 0
    refused = run_playbook(playbook="rollback.yml")
    assert refused.returncode != 0
    assert "db upgrade {{ 7 * 7 }}, 20% of" in refused.flat and "for lock.yml" in refused.flat, refused.flat[-3000:]
    assert "(a maintenance lock) release it with" in refused.flat and "that run is gone" not in refused.flat
    assert [lock_holder(hosts[name]) for name in APPS] == holders, "still held"
    released = release_lock()
    assert released.returncode == 0
    assert all(lock_holder(hosts[name]) == {} for name in APPS)
