"""Deploys killed half way (ansible-playbook and its SSH sessions killed with SIGKILL, as a
lost controller would leave them) keep the host serving, and the next run brings it to a
checked state: one instance, the one recorded as serving, the new release current, nothing
left over, once the lock the killed run left is released (the next run is refused until then,
saying that the run holding it is gone). Killed (1) while the new instance runs beside the
serving one, before it serves; then the next run (2) just after nginx moved to the new instance,
before the switch was recorded, the host losing power at that moment and booting again. The
converged state comes back before the next module (the `restore` fixture)."""

import json

import pytest

import deploytest
from deploytest import (app_copy, crash_and_boot, current_release, deploy_killed_when, http_get, https_json, main_pid,
                        release_lock, releases, run_playbook, serving)

pytestmark = pytest.mark.usefixtures("restore")


@pytest.fixture(scope="module", autouse=True)
def lock_released(host):
    """A test that failed between a kill and the release leaves the killed run's lock: it is
    released after the module, so that the next module's deploy is not refused for it."""
    yield
    if deploytest.lock_holder(host):
        release_lock()


def _instances(host, name):
    return sorted(host.check_output(f"cd /etc/systemd/system && ls {name}*.service").split())


def _assert_checked_state(host, name, address, release, version):
    unit, port = serving(host)
    assert _instances(host, name) == [f"{unit}.service"], "one instance only, the serving one"
    assert host.service(unit).is_running and host.service(f"{unit}.socket").is_enabled
    assert current_release(host) == release
    assert https_json(address, timeout=60)[0]["version"] == version
    assert host.file(f"/etc/nginx/fastapi-backends/{name}/{host.instance}.conf").exists


STATE = {}


def test_killed_while_the_new_instance_starts(host, name, address, tmp_path_factory):
    unit, port = serving(host)
    other = f"{name}-{'b' if unit.endswith('-a') else 'a'}"
    old_release = current_release(host)
    pid = main_pid(host, unit)
    args = ["-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'k1')}", "-e", "fastapi_app_version=7.1.0"]
    STATE.update(args=args, other=other, before=set(releases(host)))
    deploy_killed_when(host, f"test -f /etc/systemd/system/{other}.service", *args)
    STATE["other_port"] = int(host.check_output(f"sed -n 's/^ListenStream=.*://p' /etc/systemd/system/{other}.socket"))
    # the serving instance was never touched: the same process, before any request could start
    # a stopped one through its socket; it serves on, through nginx
    assert host.service(unit).is_running and main_pid(host, unit) == pid
    assert serving(host) == (unit, port)
    assert current_release(host) == old_release
    assert https_json(address)[0]["version"] != "7.1.0"
    # the killed run left its lock: the next run is refused, saying that run is gone; the log
    # shows the killed run as started and never ended
    refused = run_playbook(*args)
    assert refused.returncode != 0
    assert "that run is gone: process" in refused.flat and "(it was stopped or killed half way)" in refused.flat, \
        refused.flat[-3000:]
    assert "Nothing was changed by this run" in refused.flat
    assert deploytest.deploy_log(host)[-1]["event"] == "start"
    released = release_lock()
    assert released.returncode == 0 and f"Released the deploy lock of {name} on" in released.flat, released.stdout[-3000:]


def test_killed_just_after_nginx_moved_as_the_host_crashes_then_boots(host, name, instance, address):
    """The next run (the same release) removes what the killed one left, starts the new
    instance again and moves nginx to it; it is killed just then, before it recorded the
    switch, and at that moment the host loses power and boots again. What nginx sends to after
    the boot was enabled at boot before nginx moved: it is started at boot, with no Ansible run,
    and serves the new release through nginx, while the record still names the old instance.
    The run after that brings the host to the checked state, and one more run has nothing to do."""
    args, other, old_unit = STATE["args"], STATE["other"], serving(host)[0]
    backend = f"/etc/nginx/fastapi-backends/{name}/{instance}.conf"
    deploy_killed_when(host, f"grep -q ':{STATE['other_port']} ' {backend}", *args)
    crash_and_boot(instance)
    # started at boot: running before any request could start it through its socket
    assert host.service(other).is_running and host.service(f"{other}.socket").is_enabled
    assert f":{STATE['other_port']} " in host.file(backend).content_string
    assert serving(host)[0] == old_unit
    # its workers may still be importing the app after the boot (over 10 s on a loaded machine):
    # the first answer may take that long, then nginx sends to it (its first answer through
    # nginx took over 10 s once under CI's load, with the other scenarios beside it)
    status, body = http_get(host, "/health", port=STATE["other_port"], timeout=180)
    assert status == 200 and json.loads(body)["version"] == "7.1.0", (status, body)
    assert https_json(address, timeout=120)[0]["version"] == "7.1.0"
    assert release_lock().returncode == 0
    result = run_playbook(*args)
    assert result.returncode == 0, result.stdout[-6000:]
    assert serving(host)[0] == other
    assert current_release(host) not in STATE["before"]
    new_release = host.check_output(f"grep -h '^# fastapi-deploy release:' /etc/systemd/system/{other}.service").split()[-1]
    assert new_release == current_release(host)
    _assert_checked_state(host, name, address, new_release, "7.1.0")
    # and a run after that has nothing to do
    again = run_playbook(*args)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
