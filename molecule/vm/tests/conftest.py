"""Fixtures for the vm scenario: testinfra over SSH, as the deploy user (with sudo for the
checks that need root), with the scenario's key and the VM's known host key."""

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
SANDBOX_VARS = _default.SANDBOX_VARS
main_pid = _default.main_pid
sandbox_applied = _default.sandbox_applied

EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
VM_DIR = EPHEMERAL / "vm"


def _instance():
    return yaml.safe_load((EPHEMERAL / "instance_config.yml").read_text())[0]


def ssh_args(shared=False):
    """SSH options: the VM's known host key, checked. shared: reuse one connection (testinfra)."""
    args = [
        "-o", f"UserKnownHostsFile={VM_DIR / 'known_hosts'}", "-o", "HostKeyAlias=fastapi-vm",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
    ]
    if shared:
        args += ["-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
                 "-o", f"ControlPath={VM_DIR / 'testinfra-%r@%h:%p'}"]
    return args


@pytest.fixture(scope="session")
def vm():
    return _instance()


def _host(vm, sudo):
    return testinfra.get_host(
        f"ssh://{vm['user']}@{vm['address']}:{vm['port']}", ssh_identity_file=vm["identity_file"],
        ssh_extra_args=" ".join(ssh_args(shared=True)), sudo=sudo, timeout=60)


@pytest.fixture(scope="session")
def host(vm):
    """Commands run as root through sudo."""
    return _host(vm, sudo=True)


@pytest.fixture(scope="session")
def user_host(vm):
    """Commands run as the login user, without sudo."""
    return _host(vm, sudo=False)


def ssh(vm, user, command, timeout=30):
    """Run one command over a new SSH connection as `user`; returns the CompletedProcess, or
    None if it did not finish within `timeout` seconds."""
    try:
        return subprocess.run(
            ["ssh", *ssh_args(), "-i", vm["identity_file"], "-p", str(vm["port"]), f"{user}@{vm['address']}",
             command], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
