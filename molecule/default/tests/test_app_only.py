"""The app-only layout: the host in fastapi_servers and no load balancer in front, clients on
the app's own port. A new release is first tried on a loopback port beside the serving
instance; only once it is healthy does the serving instance restart in place on it, keeping
its socket (connections wait in its queue: the one stall left, bounded by the stop and the
start; none refused). A release that fails its trial leaves the serving instance untouched.
The converged state (behind nginx) comes back before the next module (the `restore` fixture)."""

import json

import pytest
import yaml

import deploytest
from deploytest import HostLoad, app_copy, current_release, http_json, main_pid, run_playbook, serving

pytestmark = pytest.mark.usefixtures("restore")
# Its first deploy puts the whole app-only layout in place, from whatever the host serves.
STARTS_FROM_ANY_SERVING_STATE = True
PORT = deploytest.SANDBOX_VARS["fastapi_service_port"]
# Connections wait for one graceful stop (the whole TimeoutStopSec on cgroup v1 container hosts)
# and one start (deploytest.START_SLACK).
STALL_BOUND = deploytest.SANDBOX_VARS["fastapi_service_timeout_stop_sec"] + deploytest.START_SLACK


@pytest.fixture(scope="module")
def app_only_inventory(tmp_path_factory):
    """The scenario's inventory without the fastapi_proxies group."""
    directory = tmp_path_factory.mktemp("app-only")
    data = yaml.safe_load((deploytest.INVENTORY / "ansible_inventory.yml").read_text())
    data.pop("fastapi_proxies", None)
    (directory / "ansible_inventory.yml").write_text(yaml.safe_dump(data))
    (directory / "group_vars").symlink_to((deploytest.INVENTORY / "group_vars").resolve())
    return str(directory)


def _unit_files(host, unit):
    return host.check_output(f"cat /etc/systemd/system/{unit}.service /etc/systemd/system/{unit}.socket | sha256sum")


def test_the_app_serves_on_its_own_port(host, app_only_inventory):
    result = run_playbook(inventory=app_only_inventory)
    assert result.returncode == 0, result.stdout[-6000:]
    unit, port = serving(host)
    assert port == PORT
    assert http_json(host, "/", PORT)["app"] == "hello_api"


def test_a_new_release_is_tried_first_then_restarts_the_serving_instance(host, instance, app_only_inventory,
                                                                        tmp_path_factory):
    unit, _ = serving(host)
    version = http_json(host, "/", PORT)["version"]
    load = HostLoad(host, instance, f"http://127.0.0.1:{PORT}/")
    result = run_playbook("-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'solo')}",
                          "-e", "fastapi_app_version=9.0.0", inventory=app_only_inventory)
    stats = load.stop()
    assert result.returncode == 0, result.stdout[-6000:]
    # tried on loopback beside the serving instance, then handed the port over
    assert "TASK [fastapi_service : Remove the trial instance]" in result.stdout
    assert serving(host) == (unit, PORT), "the serving instance kept its units and its port"
    assert http_json(host, "/", PORT)["version"] == "9.0.0"
    units = host.check_output("ls -a /etc/systemd/system").split()
    assert [u for u in units if u.startswith(("hello-api", ".hello-api"))] == [f"{unit}.service", f"{unit}.socket"], units
    deploytest.assert_load_spanned(stats, result, version, "9.0.0", max_latency=STALL_BOUND)


def test_a_release_that_fails_its_trial_changes_nothing(host, app_only_inventory):
    unit, port = serving(host)
    pid = main_pid(host, unit)
    files = _unit_files(host, unit)
    release = current_release(host)
    result = run_playbook("-e", json.dumps({"fastapi_service_app": "main:no_such_app"}),
                          "-e", "fastapi_service_health_timeout=8", inventory=app_only_inventory)
    assert result.returncode != 0
    assert "did not become healthy" in result.flat and "was not touched and serves on" in result.flat, result.flat[-3000:]
    assert "Last lines of 'journalctl -u" in result.flat
    assert 'Attribute "no_such_app" not found in module "main"' in result.flat, "uvicorn's own error"
    assert serving(host) == (unit, port) and main_pid(host, unit) == pid
    assert _unit_files(host, unit) == files and current_release(host) == release
    assert http_json(host, "/", PORT)["app"] == "hello_api"
