"""Unit tests of the fastapi_service role's module that reads which instance of an app serves
(roles/fastapi_service/library/fastapi_service_instances.py): how it parses the unit files the
role writes, and which instance it calls serving or stale."""

import importlib.util
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "roles/fastapi_service/library/fastapi_service_instances.py"
spec = importlib.util.spec_from_file_location("fastapi_service_instances", MODULE)
instances = importlib.util.module_from_spec(spec)
spec.loader.exec_module(instances)


def service(release="20261125T100000Z", fingerprint="abc123"):
    lines = ["# Ansible managed", f"# fastapi-deploy release: {release}"]
    if fingerprint:
        lines.append(f"# fastapi-deploy fingerprint: {fingerprint}")
    return "\n".join(lines + ["[Service]", "ExecStart=/bin/true", ""])


def socket(listen):
    return f"[Socket]\nListenStream={listen}\nBacklog=4096\n"


@pytest.mark.parametrize("listen, port", [
    ("127.0.0.1:8000", 8000), ("0.0.0.0:8001", 8001), ("[::1]:8010", 8010), ("9000", 9000), ("[::]:80 ", 80),
])
def test_listen_port(listen, port):
    assert instances.listen_port(socket(listen)) == port


def test_listen_port_of_a_socket_without_one():
    assert instances.listen_port("[Socket]\nBacklog=10\n") is None
    assert instances.listen_port("") is None


def test_parse_unit_reads_only_the_role_s_marks():
    info = instances.parse_unit(service() + "# fastapi-deploy note: a: b\n# other: x\n")
    assert info == {"release": "20261125T100000Z", "fingerprint": "abc123", "note": "a: b"}


def test_find_instances_both_slots_and_legacy():
    files = {
        "api-a.service": service("r1", "f1"), "api-a.socket": socket("127.0.0.1:8000"),
        "api-b.service": service("r2", "f2"), "api-b.socket": socket("127.0.0.1:8001"),
        "api.service": "[Service]\nExecStart=/bin/true\n", "api.socket": socket("127.0.0.1:8000"),
        "api-other.service": service(),  # another app whose name starts the same: not ours
        "api-a.service.d": "",  # not a unit of the instance
    }
    found = {i["unit"]: i for i in instances.find_instances("api", files)}
    assert set(found) == {"api-a", "api-b", "api"}
    assert found["api-a"] == {"unit": "api-a", "slot": "a", "legacy": False, "port": 8000, "release": "r1",
                              "fingerprint": "f1"}
    assert found["api-b"]["port"] == 8001 and found["api-b"]["release"] == "r2"
    assert found["api"]["legacy"] and found["api"]["slot"] == "" and found["api"]["release"] == ""


def test_an_instance_without_its_socket_has_no_port():
    found = instances.find_instances("api", {"api-a.service": service()})
    assert found[0]["port"] is None


def test_serving_is_the_recorded_instance():
    found = instances.find_instances("api", {"api-a.service": service(), "api-b.service": service()})
    assert instances.choose_serving(found, "api-b")["unit"] == "api-b"
    assert instances.choose_serving(found, "api-a")["unit"] == "api-a"


def test_nothing_recorded_and_no_legacy_unit_serves_nothing():
    # a run stopped after starting its first instance, before it was enabled (it passed no
    # health check, no balancer sends to it): that one is stale
    found = instances.find_instances("api", {"api-a.service": service()})
    assert instances.choose_serving(found, "") is None
    found[0].update(active=True, enabled=False)
    assert instances.choose_serving(found, "") is None and instances.ambiguous(found, "") == []


@pytest.mark.parametrize("recorded", ["", "api-c"])
def test_a_lost_record_is_the_one_instance_enabled_at_boot(recorded):
    """The record lost (or naming no instance): the instance enabled at boot serves (a switch
    enables the new one only after its health check and the balancers' move), not nothing,
    which would make every instance stale and stopped before its replacement is healthy."""
    found = instances.find_instances("api", {"api-a.service": service(), "api-b.service": service()})
    found[0].update(active=True, enabled=False)  # a candidate a killed run left
    found[1].update(active=True, enabled=True)
    assert instances.choose_serving(found, recorded)["unit"] == "api-b"
    assert instances.ambiguous(found, recorded) == []


def test_two_instances_enabled_and_no_record_is_ambiguous():
    found = instances.find_instances("api", {"api-a.service": service(), "api-b.service": service()})
    for instance in found:
        instance.update(active=True, enabled=True)
    assert instances.choose_serving(found, "") is None
    assert instances.ambiguous(found, "") == ["api-a", "api-b"]
    # a record settles it
    assert instances.choose_serving(found, "api-a")["unit"] == "api-a" and instances.ambiguous(found, "api-a") == []


def test_a_host_from_before_instances_serves_its_legacy_unit():
    found = instances.find_instances("api", {"api.service": "[Service]\n", "api-a.service": service()})
    assert instances.choose_serving(found, "")["unit"] == "api"
    # once a switch completed, the recorded instance serves, and the legacy unit is stale
    assert instances.choose_serving(found, "api-a")["unit"] == "api-a"


def test_a_recorded_instance_whose_files_are_gone_is_not_serving():
    found = instances.find_instances("api", {"api-b.service": service()})
    assert instances.choose_serving(found, "api-a") is None
