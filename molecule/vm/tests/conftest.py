"""Fixtures of the vm scenario: testinfra over SSH, as the deploy user (with sudo for the
checks that need root), with the scenario's own SSH settings (key, known_hosts, checked)."""

import shlex
import subprocess
from pathlib import Path

import pytest
import testinfra

import deploytest

PLATFORMS = deploytest.use_scenario(Path(__file__).resolve().parents[1])
INSTANCE = PLATFORMS[0]["name"]


@pytest.fixture(scope="session")
def instance():
    return INSTANCE


@pytest.fixture(scope="session")
def vm():
    """The connection Molecule's inventory holds for the VM."""
    hv = deploytest.inventory_host(INSTANCE)
    return {"address": hv["ansible_host"], "port": int(hv["ansible_port"]), "user": hv["ansible_user"],
            "identity_file": hv["ansible_private_key_file"], "ssh_args": shlex.split(hv["ansible_ssh_common_args"])}


def _host(vm, sudo):
    shared = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
              "-o", f"ControlPath={deploytest.EPHEMERAL / 'vm' / 'testinfra-%r@%h:%p'}"]
    return testinfra.get_host(
        f"ssh://{vm['user']}@{vm['address']}:{vm['port']}", ssh_identity_file=vm["identity_file"],
        ssh_extra_args=" ".join(vm["ssh_args"] + shared), sudo=sudo, timeout=60)


@pytest.fixture(scope="session")
def host(vm):
    """Commands run as root through sudo."""
    return _host(vm, sudo=True)


@pytest.fixture(scope="session")
def user_host(vm):
    """Commands run as the login user, without sudo."""
    return _host(vm, sudo=False)


def ssh(vm, command, timeout=30, input=None):
    """Run one command over a new SSH connection, with the scenario's settings, as the login
    user (`input` on its standard input); returns the CompletedProcess, or None if it did not
    finish within `timeout` seconds."""
    try:
        return subprocess.run(
            ["ssh", *vm["ssh_args"], "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ControlPath=none",
             "-i", vm["identity_file"], "-p", str(vm["port"]), f"{vm['user']}@{vm['address']}", command],
            capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        return None
