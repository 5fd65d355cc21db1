"""Fixtures for the cluster scenario: a load balancer and two app hosts, reached through
podman directly (`podman://NAME`). Shares its helpers with the default scenario's tests."""

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import testinfra
import yaml

_spec = importlib.util.spec_from_file_location(
    "default_conftest", Path(__file__).resolve().parents[2] / "default/tests/conftest.py")
_default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_default)

REPO_ROOT = _default.REPO_ROOT
container_ip = _default.container_ip
https_get = _default.https_get
https_json = _default.https_json
app_copy = _default.app_copy
current_release = _default.current_release
SCENARIO = Path(__file__).resolve().parents[1]
PLATFORMS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
LB = next(p["name"] for p in PLATFORMS if "fastapi_proxies" in p["groups"])
APPS = [p["name"] for p in PLATFORMS if "fastapi_servers" in p["groups"]]


@pytest.fixture(scope="session")
def hosts():
    return {name: testinfra.get_host(f"podman://{name}") for name in [LB, *APPS]}


@pytest.fixture(scope="session")
def lb_ip():
    return container_ip(LB)


def run_deploy(*extra_args, playbook="deploy.yml"):
    """Run playbooks/<playbook> against the whole cluster (Molecule's inventory)."""
    inventory = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "inventory"
    args = ["ansible-playbook", "-i", str(inventory), str(REPO_ROOT / "playbooks" / playbook), *extra_args]
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO_ROOT / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=1200)
