"""Tests of the SSH transport, the same for every scenario (each scenario's test_transport.py
imports them): Ansible reaches the host the way it reaches a user's server, as the
unprivileged user `deploy` with a key and sudo, with the project's SSH settings, and refuses
a host whose key is not the one written to known_hosts when the host was made. Needs the
fixture `instance` (a host name of the scenario's inventory)."""

import shlex
import subprocess

import deploytest

__all__ = [
    "test_ansible_logs_in_as_an_unprivileged_user_and_becomes_root",
    "test_molecule_uses_the_project_ssh_settings",
    "test_root_cannot_log_in",
    "test_a_host_with_another_key_is_refused",
    "test_an_unknown_host_is_refused",
]


def _ssh_target(instance):
    hv = deploytest.inventory_host(instance)
    port = int(hv.get("ansible_port") or 22)
    return hv, hv["ansible_host"], port, (hv["ansible_host"] if port == 22 else f"[{hv['ansible_host']}]:{port}")


def test_ansible_logs_in_as_an_unprivileged_user_and_becomes_root(instance):
    hv, _, _, _ = _ssh_target(instance)
    assert hv["ansible_user"] == "deploy" and "ansible_connection" not in hv, hv
    user = deploytest.ansible_as_user(instance, "id -un")
    assert user.returncode == 0 and user.stdout.split()[-1] == "deploy", user.stdout + user.stderr
    root = deploytest.ansible_as_user(instance, "id -un", become=True)
    assert root.returncode == 0 and root.stdout.split()[-1] == "root", root.stdout + root.stderr


def test_molecule_uses_the_project_ssh_settings(instance):
    molecule, project, cfg = deploytest.molecule_ssh_settings()
    assert molecule == project, "Molecule's ansible.cfg must carry the project's [ssh_connection] settings"
    assert cfg.getboolean("defaults", "host_key_checking"), "host_key_checking must stay on"
    assert "StrictHostKeyChecking=yes" in deploytest.inventory_host(instance)["ansible_ssh_common_args"]


def test_root_cannot_log_in(instance):
    hv, address, port, _ = _ssh_target(instance)
    result = subprocess.run(
        ["ssh", *shlex.split(hv["ansible_ssh_common_args"]), "-o", "BatchMode=yes", "-o", "ControlPath=none",
         "-i", hv["ansible_private_key_file"], "-p", str(port), f"root@{address}", "true"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Permission denied" in result.stderr, result.stderr


def test_a_host_with_another_key_is_refused(instance, tmp_path):
    """The scenario's own settings, with known_hosts holding another key for the host."""
    _, _, _, known_name = _ssh_target(instance)
    keyfile = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keyfile)], check=True)
    other = " ".join(keyfile.with_suffix(".pub").read_text().split()[:2])
    result = deploytest.ansible_as_user(instance, "true", known_hosts=f"{known_name} {other}\n", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stdout + result.stderr, result.stdout + result.stderr


def test_an_unknown_host_is_refused(instance, tmp_path):
    """No "accept whatever answers": with an empty known_hosts the host is refused."""
    result = deploytest.ansible_as_user(instance, "true", known_hosts="", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Host key verification failed" in result.stdout + result.stderr, result.stdout + result.stderr
