"""The deploy on a real virtual machine over SSH: an unprivileged login with sudo, a real
kernel and cgroup v2, the app served through nginx and sandboxed, and back on its own after
a reboot."""

import json
import re
import subprocess
import time
from conftest import SANDBOX_VARS, main_pid, sandbox_applied, ssh


def test_login_is_unprivileged_with_sudo_and_never_root(vm, user_host, host):
    assert user_host.check_output("id -un") == "deploy"
    assert host.check_output("id -un") == "root"  # become: sudo
    refused = ssh(vm, "root", "true")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


def test_host_key_is_checked(vm, tmp_path):
    """SSH trusts the key the image was built with, and refuses another."""
    wrong = tmp_path / "known_hosts"
    wrong.write_text("fastapi-vm ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    result = subprocess.run(
        ["ssh", "-o", f"UserKnownHostsFile={wrong}", "-o", "HostKeyAlias=fastapi-vm", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-i", vm["identity_file"], "-p", str(vm["port"]), f"deploy@{vm['address']}", "true"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_real_kernel_real_boot_cgroup_v2(host):
    assert host.check_output("stat -fc %T /sys/fs/cgroup") == "cgroup2fs"
    assert host.run("systemd-detect-virt --container").rc != 0, "not a container"
    assert host.check_output("systemctl is-system-running --wait || true") in ("running", "degraded")


def test_app_serves_through_nginx(host):
    data = json.loads(host.check_output("curl -sk https://127.0.0.1/"))
    assert data["app"] == "hello_api" and data["scheme"] == "https"
    assert host.service("hello-api").is_enabled and host.service("hello-api.socket").is_enabled


def test_unit_is_sandboxed_on_a_real_kernel(host):
    out = host.check_output("systemd-analyze security hello-api.service")
    exposure = float(re.search(r"Overall exposure level for hello-api\.service: ([0-9.]+)", out).group(1))
    assert exposure <= 1.5, out
    # and in effect: the service's view of its code is read-only, even for root
    pid = main_pid(host, SANDBOX_VARS["fastapi_service_name"])
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


def test_reboot_brings_the_app_back_on_its_own(vm, host):
    """Last: the VM reboots; the app must come back with no Ansible run."""
    boot_before = host.check_output("cat /proc/sys/kernel/random/boot_id")
    assert ssh(vm, "deploy", "sudo systemd-run --on-active=2 systemctl reboot").returncode == 0
    time.sleep(10)
    deadline = time.monotonic() + 600
    status = None
    while time.monotonic() < deadline:
        result = ssh(vm, "deploy", "cat /proc/sys/kernel/random/boot_id && "
                                   "curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health", timeout=40)
        lines = result.stdout.split() if result else []  # None: no answer in time (going down, booting)
        if result and result.returncode == 0 and len(lines) == 2 and lines[0] != boot_before:
            status = lines[1]
            if status == "200":
                break
        time.sleep(5)
    assert status == "200", f"after the reboot the app did not answer (last: {status})"
    active = ssh(vm, "deploy", "systemctl is-active hello-api.socket hello-api.service nginx.service")
    assert active and active.stdout.split() == ["active", "active", "active"], active
