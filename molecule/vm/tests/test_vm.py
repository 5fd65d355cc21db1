"""The deploy on a real virtual machine over SSH: a real kernel and cgroup v2, the app served
through nginx and sandboxed, and back on its own after a reboot. (The SSH transport itself:
test_transport.py.)"""

import json
import re
import time

import yaml

from conftest import ssh
from deploytest import REPO_ROOT, SANDBOX_VARS, SCENARIO_DIR, main_pid, sandbox_applied, serving

NAME = SANDBOX_VARS["fastapi_service_name"]
VM_VARS = yaml.safe_load((SCENARIO_DIR / "host_vars/fastapi-vm.yml").read_text())


def test_login_user_is_unprivileged(user_host, host):
    assert user_host.check_output("id -un") == "deploy"
    assert user_host.run("cat /etc/shadow").rc != 0
    assert host.check_output("id -un") == "root"  # through sudo


def test_real_kernel_real_boot_cgroup_v2(host):
    assert host.check_output("stat -fc %T /sys/fs/cgroup") == "cgroup2fs"
    assert host.run("systemd-detect-virt --container").rc != 0, "not a container"
    assert host.check_output("systemctl is-system-running --wait || true") in ("running", "degraded")


def test_app_serves_through_nginx(host):
    data = json.loads(host.check_output("curl -sk https://127.0.0.1/"))
    assert data["app"] == "hello_api" and data["scheme"] == "https"
    unit = serving(host)[0]  # the instance that serves: hello-api-a or -b
    assert unit in (f"{NAME}-a", f"{NAME}-b")
    assert host.service(unit).is_enabled and host.service(f"{unit}.socket").is_enabled


def test_unit_is_sandboxed_on_a_real_kernel(host):
    unit = serving(host)[0]
    out = host.check_output(f"systemd-analyze security {unit}.service")
    exposure = float(re.search(rf"Overall exposure level for {unit}\.service: ([0-9.]+)", out).group(1))
    assert exposure <= 1.5, out
    # and in effect: the service's view of its code is read-only, even for root
    pid = main_pid(host, NAME)
    assert sandbox_applied(host, pid)
    write = host.run(f"sh -c 'echo x >> /proc/{pid}/root/srv/fastapi/current/app/.probe'")
    assert write.rc != 0 and "Read-only file system" in write.stderr, write.stderr


def test_virtualenv_came_from_the_wheelhouse_not_an_index(host):
    """pip's configured index does not exist; the deploy still built the virtualenv, from the
    wheels the controller shipped, and removed them afterwards."""
    assert "index-url = http://127.0.0.1:9/simple" in host.file("/etc/pip.conf").content_string
    venvs = host.check_output("ls -d /srv/fastapi/venvs/*/").split()
    assert len(venvs) == 1, venvs
    venv = venvs[0].rstrip("/")
    version = host.check_output(f"{venv}/bin/python -c 'import fastapi; print(fastapi.__version__)'")
    assert version == SANDBOX_VARS["fastapi_app_fastapi_version"]
    assert not host.file(f"{venv}/wheelhouse").exists
    assert host.run(f"{venv}/bin/pip download --no-deps -d /tmp/x idna==3.20 --timeout 5 --retries 0").rc != 0


def test_a_restart_under_load_waits_for_its_stop_not_for_a_timeout(vm, host):
    """The one host here where stop timings are real (cgroup v2: systemd sees a stopped unit's
    last process go; on the cgroup v1 container hosts every stop waits TimeoutStopSec whole). A
    restart of the serving instance under load on the app's own socket in the VM (no nginx between,
    which would retry a failed GET; half the clients POST): the restart returns after the graceful
    stop, far within TimeoutStopSec (120 s in this scenario), no request fails, none waits
    TimeoutStopSec (they wait in the socket's queue for the stop and the start: seconds to minutes
    of importing FastAPI under emulation), and other processes answer after it."""
    unit, port = serving(host)
    stop_sec = VM_VARS["fastapi_service_timeout_stop_sec"]
    old_pid = main_pid(host, NAME)
    copied = ssh(vm, "cat > /tmp/loadgen.py", input=(REPO_ROOT / "bench/loadgen.py").read_text())
    assert copied and copied.returncode == 0, copied
    started = ssh(vm, f"rm -f /tmp/vmload.json /tmp/vmload.stop; nohup python3 /tmp/loadgen.py http://127.0.0.1:{port}/"
                      " --requests 10000000 --concurrency 2 --post 1 --pause 0.1 --max-seconds 1200 --timeout 240"
                      " --stop-file /tmp/vmload.stop --span-field pid > /tmp/vmload.json 2>/tmp/vmload.err &")
    assert started and started.returncode == 0, started
    time.sleep(15)  # answered for a while first (Python starts slowly under emulation)
    # the times on the VM's own clock, which the load's spans use (it drifts from the
    # controller's under emulation: a run on a loaded machine saw the spans off by seconds)
    restart = host.run(f"date +%s.%N; systemctl restart {unit}.service; date +%s.%N")
    assert restart.rc == 0, restart.stderr
    before, done = (float(t) for t in restart.stdout.split())
    took = done - before
    assert took < stop_sec / 4, f"the restart took {took:.1f} s: it waited for a timeout (TimeoutStopSec={stop_sec})"
    # until the new processes answer, then a little longer
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and host.run(f"curl -sf -m 5 http://127.0.0.1:{port}/health").rc != 0:
        time.sleep(2)
    time.sleep(10)
    after = float(host.check_output("date +%s.%N"))
    ssh(vm, "touch /tmp/vmload.stop")
    out = None
    for _ in range(60):
        out = ssh(vm, "test -s /tmp/vmload.json && cat /tmp/vmload.json")
        if out and out.returncode == 0:
            break
        time.sleep(2)
    assert out and out.returncode == 0, (out, ssh(vm, "cat /tmp/vmload.err"))
    stats = json.loads(out.stdout)
    assert main_pid(host, NAME) != old_pid
    assert stats["failed"] == 0, stats
    assert stats["get_ok"] > 0 and stats["post_ok"] > 0, stats
    assert stats["max_latency_s"] < stop_sec, f"a request waited {stats['max_latency_s']} s: {stats}"
    assert stats["started_at"] < before and stats["ended_at"] > after, "the load spanned the restart"
    old = {pid for pid, (first, _) in stats["spans"].items() if first < before}
    new = {pid for pid, (_, last) in stats["spans"].items() if last > before + took}
    assert old and new and not old & new, stats["spans"]


def test_reboot_brings_the_app_back_on_its_own(vm, host):
    """Last: the VM reboots; the app must come back with no Ansible run, started at boot (the
    service active before anything connects to its socket, which would start it too)."""
    boot_before = host.check_output("cat /proc/sys/kernel/random/boot_id")
    unit = serving(host)[0]
    assert ssh(vm, "sudo systemd-run --on-active=2 systemctl reboot").returncode == 0
    time.sleep(10)
    deadline = time.monotonic() + 600
    state = None
    while time.monotonic() < deadline:
        # no request to the app here: only systemd's view of it, once the boot has finished
        result = ssh(vm, "cat /proc/sys/kernel/random/boot_id; systemctl is-system-running --wait >/dev/null;"
                         f" systemctl is-active {unit}.socket {unit}.service nginx.service", timeout=120)
        lines = result.stdout.split() if result else []  # None: no answer in time (going down, booting)
        if result and len(lines) == 4 and lines[0] != boot_before:
            state = lines[1:]
            break
        time.sleep(5)
    assert state == ["active", "active", "active"], f"after the reboot: {state}"
    # the app ports' firewall is in force again, loaded at boot by its unit
    rules = ssh(vm, "sudo nft list table inet fastapi_firewall")
    assert rules and rules.returncode == 0 and "fastapi-deploy rules" in rules.stdout, rules
    # and it answers through nginx (its workers may still be importing FastAPI: minutes under
    # software emulation on a loaded machine)
    answer = ssh(vm, "curl -sk -m 280 -o /dev/null -w '%{http_code}' https://127.0.0.1/health", timeout=300)
    assert answer and answer.stdout == "200", answer
