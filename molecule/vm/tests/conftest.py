"""Fixtures of the vm scenario: testinfra over SSH, as the deploy user (with sudo for the
checks that need root), with the scenario's own SSH settings (key, known_hosts, checked)."""

import shlex
import subprocess
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def host():
    """Commands run as root through sudo (a minute to connect: the VM is emulated)."""
    return deploytest.ssh_host(INSTANCE, sudo=True, timeout=60)


@pytest.fixture(scope="session")
def user_host():
    """Commands run as the login user, without sudo."""
    return deploytest.ssh_host(INSTANCE, sudo=False, timeout=60)


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
