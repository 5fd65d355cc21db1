"""The default scenario: the example app deployed by playbooks/deploy.yml on one Debian host."""

import time

from conftest import http_get, http_json


def test_app_user_is_a_system_user_without_login_shell(host, svars):
    user = host.user("fastapi")
    assert user.exists
    assert user.shell in ("/usr/sbin/nologin", "/bin/false")
    assert user.uid < 1000, "a system account"
    assert host.run("getent shadow fastapi").stdout.split(":")[1] in ("!", "*", "!*")


def test_virtualenv_exists(host):
    assert host.file("/srv/fastapi/current/venv/bin/python").exists
    assert host.file("/srv/fastapi/current/venv/bin/uvicorn").exists
    assert host.file("/srv/fastapi/current/venv/pyvenv.cfg").contains("home = /usr/bin")


def test_fastapi_is_the_pinned_version(host, svars):
    out = host.check_output("/srv/fastapi/current/venv/bin/pip show fastapi")
    version = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version:")]
    assert version == [svars["fastapi_app_fastapi_version"]]


def test_lock_file_pins_uvicorn_starlette_pydantic(host):
    lock = host.file("/srv/fastapi/current/venv/requirements.lock").content_string
    freeze = host.check_output("/srv/fastapi/current/venv/bin/pip freeze")
    for name in ("uvicorn", "starlette", "pydantic"):
        pinned = [line.split()[0] for line in lock.splitlines() if line.startswith(f"{name}==")]
        assert pinned, f"{name} is not pinned by the lock file"
        assert pinned[0] in freeze.splitlines(), f"{pinned[0]} is not what the venv has"


def test_unit_never_reloads_and_has_the_settings(host, unit_path, svars):
    unit = host.file(unit_path)
    assert unit.exists
    text = unit.content_string
    assert "--reload" not in text
    assert text.startswith("#"), "templates start with ansible_managed"
    for expected in (
        "/srv/fastapi/current/venv/bin/python /usr/local/lib/fastapi-deploy/uvicorn_graceful.py main:app",
        "--fd 3",
        f"Requires={svars['fastapi_service_name']}.socket",
        f"--workers {svars['fastapi_service_workers']}",
        "--proxy-headers",
        "--forwarded-allow-ips 127.0.0.1",
        f"--timeout-graceful-shutdown {svars['fastapi_service_timeout_graceful_shutdown']}",
        f"TimeoutStopSec={svars['fastapi_service_timeout_stop_sec']}",
        "Restart=on-failure",
        "User=fastapi",
    ):
        assert expected in text, expected
    socket = host.file(f"/etc/systemd/system/{svars['fastapi_service_name']}.socket").content_string
    assert f"ListenStream={svars['fastapi_service_host']}:{svars['fastapi_service_port']}" in socket
    # systemd itself sees no --reload in the command it runs
    execstart = host.check_output(f"systemctl show -p ExecStart {svars['fastapi_service_name']}")
    assert "--reload" not in execstart
    assert "uvicorn" in execstart


def test_service_is_active_and_enabled(host, svars):
    service = host.service(svars["fastapi_service_name"])
    assert service.is_running
    assert service.is_enabled


def _unit_processes(host, name):
    """(pid, user) of every process in the unit's control group (cgroup v1 or v2)."""
    cgroup = host.check_output(f"systemctl show -p ControlGroup --value {name}")
    procs = host.check_output(
        f"cat /sys/fs/cgroup/systemd{cgroup}/cgroup.procs 2>/dev/null"
        f" || cat /sys/fs/cgroup{cgroup}/cgroup.procs"
    ).split()
    return [(pid, host.check_output(f"stat -c %U /proc/{pid}")) for pid in procs]


def test_workers_run_as_the_app_user(host, svars):
    processes = _unit_processes(host, svars["fastapi_service_name"])
    assert {user for _, user in processes} == {"fastapi"}
    # uvicorn --workers N: the main process, N workers, and multiprocessing's helper
    assert len(processes) >= svars["fastapi_service_workers"] + 1


def test_port_listens(host, svars):
    assert host.socket(f"tcp://{svars['fastapi_service_host']}:{svars['fastapi_service_port']}").is_listening


def test_health_route_and_app_json(host, svars):
    status, body = http_get(host, "/health")
    assert status == 200, body
    data = http_json(host, "/")
    assert data["app"] == "hello_api"
    assert data["fastapi"] == svars["fastapi_app_fastapi_version"]
    assert data["version"] == svars["fastapi_app_version"]
    assert data["greeting"] == "Hello from the sandbox", "the environment file reaches the app"


def test_environment_file_is_private(host):
    env = host.file("/srv/fastapi/current/app.env")
    assert env.user == "root"
    assert env.group == "fastapi"
    assert env.mode == 0o640


def test_app_serves_again_after_kill_9(host, svars):
    name = svars["fastapi_service_name"]
    old_pid = host.check_output(f"systemctl show -p MainPID --value {name}")
    assert old_pid != "0"
    host.run(f"kill -9 {old_pid}")
    # On cgroup v1 container hosts systemd waits TimeoutStopSec for the killed unit's
    # processes before it restarts it (see shared/TEST-HOSTS.md); on real hosts it is about 2 s.
    deadline = time.monotonic() + svars["fastapi_service_timeout_stop_sec"] + 10
    new_pid = old_pid
    while time.monotonic() < deadline:
        new_pid = host.check_output(f"systemctl show -p MainPID --value {name}")
        if new_pid not in ("0", old_pid) and http_get(host, "/health", timeout=2)[0] == 200:
            break
        time.sleep(0.5)
    assert new_pid not in ("0", old_pid), "systemd did not restart the app"
    assert http_get(host, "/health")[0] == 200
    assert host.service(name).is_running


def test_unhealthy_app_fails_the_deploy_with_journal_lines(host, instance, svars):
    """An app that passes the input checks but does not start: the deploy waits for its health
    path, then fails with the reason and the unit's last journal lines. A good deploy after it
    serves again."""
    from conftest import run_playbook

    broken = run_playbook(instance, "-e", "fastapi_service_app=main:no_such_app",
                          "-e", "fastapi_service_health_timeout=8")
    out = " ".join((broken.stdout + broken.stderr).split())
    assert broken.returncode != 0
    assert f"{svars['fastapi_service_name']}.service did not become healthy" in out
    assert "http://127.0.0.1:8000/health did not answer 200 within 8s" in out
    assert f"Last lines of 'journalctl -u {svars['fastapi_service_name']}.service'" in out
    assert 'Attribute "no_such_app" not found in module "main"' in out, "uvicorn's own error"

    fixed = run_playbook(instance)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert http_json(host, "/")["app"] == "hello_api"


def test_restart_under_load_refuses_no_connection(host, instance, svars):
    """systemd owns the listening socket (<name>.socket) and hands it to uvicorn (--fd 3):
    while the service restarts, new connections wait in the backlog. A bounded load generator
    running across a restart sees no failed request."""
    import json
    import subprocess

    from conftest import REPO_ROOT

    name = svars["fastapi_service_name"]
    assert host.service(f"{name}.socket").is_running
    assert host.service(f"{name}.socket").is_enabled
    subprocess.run(["podman", "cp", str(REPO_ROOT / "bench/loadgen.py"), f"{instance}:/tmp/loadgen.py"],
                   check=True)
    old_pid = host.check_output(f"systemctl show -p MainPID --value {name}")
    host.run("rm -f /tmp/load.json; nohup python3 /tmp/loadgen.py http://127.0.0.1:8000/"
             " --requests 4000 --concurrency 8 --pause 0.01 --max-seconds 120 > /tmp/load.json 2>&1 &")
    time.sleep(1)
    assert host.run(f"systemctl restart {name}.service").rc == 0
    assert host.file("/tmp/load.json").size == 0, "the load ran across the whole restart"
    new_pid = host.check_output(f"systemctl show -p MainPID --value {name}")
    assert new_pid != old_pid
    for _ in range(240):
        if host.file("/tmp/load.json").size > 0:
            break
        time.sleep(0.5)
    result = json.loads(host.file("/tmp/load.json").content_string)
    assert result["requests"] == 4000, result
    assert result["failed"] == 0, result
    assert host.service(f"{name}.socket").is_running, "the socket survived the restart"
