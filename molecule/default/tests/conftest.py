"""Shared fixtures for the Molecule scenarios' testinfra tests.

testinfra talks to the instance through podman directly (`podman://NAME`): much faster than
going through Ansible for every command.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
SANDBOX_VARS = yaml.safe_load(
    (REPO_ROOT / "inventory/sandbox/group_vars/fastapi_servers.yml").read_text()
)


def _instance_names():
    # Molecule passes its inventory; the instance names are in its molecule.yml.
    scenario = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).parents[1]))
    config = yaml.safe_load((scenario / "molecule.yml").read_text())
    return [p["name"] for p in config["platforms"]]


@pytest.fixture(scope="module")
def instance():
    return _instance_names()[0]


@pytest.fixture(scope="module")
def host(instance):
    return testinfra.get_host(f"podman://{instance}")


@pytest.fixture(scope="module")
def svars():
    """The sandbox settings the scenario was converged with."""
    return SANDBOX_VARS


@pytest.fixture(scope="module")
def unit_path(svars):
    return f"/etc/systemd/system/{svars['fastapi_service_name']}.service"


def http_get(host, path, port=8000, timeout=5):
    """GET http://127.0.0.1:port/path on the host; returns (status, body)."""
    cmd = host.run(
        "curl -sS -m %s -o /tmp/.body -w '%%{http_code}' http://127.0.0.1:%s%s; cat /tmp/.body",
        str(timeout), str(port), path,
    )
    status = int(cmd.stdout[:3]) if cmd.stdout[:3].isdigit() else 0
    return status, cmd.stdout[3:]


def main_pid(host, name):
    """The main process of the app's service (asserted running)."""
    pid = host.check_output(f"systemctl show -p MainPID --value {name}")
    assert pid != "0", f"{name} has no main process"
    return pid


def sandbox_applied(host, pid):
    """Whether systemd gave the process its own mount namespace (ProtectSystem= and the rest)."""
    return host.check_output(f"readlink /proc/{pid}/ns/mnt") != host.check_output("readlink /proc/1/ns/mnt")


def http_json(host, path, port=8000):
    status, body = http_get(host, path, port)
    assert status == 200, f"GET {path}: {status} {body}"
    return json.loads(body)


def run_playbook(instance, *extra_args, check=False, playbook="deploy.yml"):
    """Run playbooks/<playbook> against the instance with the sandbox settings."""
    inventory = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "inventory"
    args = [
        "ansible-playbook", "-i", str(inventory), "--limit", instance,
        str(REPO_ROOT / "playbooks" / playbook), *extra_args,
    ]
    if check:
        args += ["--check", "--diff"]
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO_ROOT / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=900)


def container_ip(name):
    """The address of a test container on its podman network, as the controller reaches it."""
    out = subprocess.run(
        ["podman", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out, f"{name} has no address"
    return out[0]


def https_get(address, path="/", port=443, timeout=10, headers=None):
    """GET https://address:port/path from the controller, not verifying the (self-signed)
    certificate; returns (status, headers, body, tls_version)."""
    import http.client
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode(), conn.sock.version()
    finally:
        conn.close()


class Load:
    """bench/loadgen.py running on the host against the app until stop() (or 400 s).

    A client waits up to 150 s for an answer: while a broken release is tried and rolled back,
    connections wait in the socket's queue. In these containers that wait is long (each stop
    takes TimeoutStopSec on cgroup v1, and each health poll over podman 1.5-5 s); the test
    prints the longest wait (max_latency_s) when it fails."""

    def __init__(self, host, instance):
        self.host = host
        subprocess.run(["podman", "cp", str(REPO_ROOT / "bench/loadgen.py"), f"{instance}:/tmp/loadgen.py"],
                       check=True)
        host.run("rm -f /tmp/load.json /tmp/load.stop; nohup python3 /tmp/loadgen.py http://127.0.0.1:8000/"
                 " --requests 200000 --concurrency 8 --pause 0.02 --max-seconds 400 --timeout 150"
                 " --stop-file /tmp/load.stop > /tmp/load.json 2>&1 &")
        time.sleep(1)

    def stop(self):
        self.host.run("touch /tmp/load.stop")
        for _ in range(400):
            if self.host.file("/tmp/load.json").size > 0:
                break
            time.sleep(0.5)
        return json.loads(self.host.file("/tmp/load.json").content_string)


def https_json(address, path="/"):
    """GET https://address/path (certificate not verified); asserts 200 and returns (JSON, TLS version)."""
    status, _, body, tls = https_get(address, path)
    assert status == 200, body
    return json.loads(body), tls


def app_copy(tmp_path_factory, name, main_py_extra=""):
    """A copy of the example app whose code differs (so that deploying it makes a new release)."""
    src = tmp_path_factory.mktemp(name) / "app"
    shutil.copytree(REPO_ROOT / "examples/hello_api", src)
    (src / "RELEASE_NOTE").write_text(f"{name}\n")
    if main_py_extra:
        main = src / "main.py"
        main.write_text(main.read_text() + main_py_extra)
    return src


def current_release(host, root="/srv/fastapi"):
    """The id of the release <root>/current points at on the host."""
    return host.check_output(f"readlink {root}/current").split("/")[-1]
