"""The check play on the controller alone, with an inventory laid out as the README says: the
first play of deploy.yml reads every input and refuses bad ones before any host is reached.
The inventory's host names end in .invalid (never resolved), so a run that passes every check
stops at the first connection, where the lock play starts: nothing is reached, nothing changes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks/deploy.yml"
UNREACHED = "Could not resolve hostname"


@pytest.fixture
def inventory(tmp_path):
    """The sandbox inventory, copied, its host renamed to one that never resolves."""
    inv = tmp_path / "mine"
    shutil.copytree(REPO / "inventory/sandbox", inv)
    hosts = inv / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("fastapi-demo:", "fastapi-demo.invalid:"))
    return inv


def deploy(inventory, *args, playbook="deploy.yml"):
    ansible = Path(sys.executable).with_name("ansible-playbook")
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run([str(ansible), "-i", str(inventory), str(PLAYBOOK.with_name(playbook)), *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    return result, " ".join((result.stdout + result.stderr).split())


def test_the_readme_vault_layout_keeps_every_setting(inventory, tmp_path):
    """README's recipe: the group's file moved into a directory, beside an encrypted vault.yml.
    Every check passes (the FastAPI pin and the rest are read, the vault decrypts), and the run
    stops only where it would reach the host."""
    group = inventory / "group_vars/fastapi_servers"
    group.mkdir()
    (inventory / "group_vars/fastapi_servers.yml").rename(group / "main.yml")
    password = tmp_path / "vault-pass"
    password.write_text("correct horse battery staple\n")
    vault = subprocess.run([str(Path(sys.executable).with_name("ansible-vault")), "encrypt_string",
                            "--vault-password-file", str(password), "postgresql://app:s3cret%@db/app",
                            "--name", "vault_database_url"], capture_output=True, text=True, check=True, cwd=REPO)
    (group / "vault.yml").write_text("---\n" + vault.stdout)
    with (group / "main.yml").open("a") as main:
        main.write('fastapi_app_secret_environment:\n  DATABASE_URL: "{{ vault_database_url }}"\n')
    result, out = deploy(inventory, "--vault-password-file", str(password))
    assert result.returncode != 0
    assert "PLAY [Take the deploy lock" in out and UNREACHED in out, out[-3000:]
    assert "s3cret" not in out


def test_a_group_file_beside_its_directory_is_refused(inventory):
    """The layout the README's recipe once made: group_vars/fastapi_servers.yml and a
    group_vars/fastapi_servers/ directory. Ansible reads the directory only; the check play
    says so, first, rather than failing later on an empty FastAPI pin."""
    (inventory / "group_vars/fastapi_servers").mkdir()
    (inventory / "group_vars/fastapi_servers/vault.yml").write_text("---\nvault_database_url: x\n")
    result, out = deploy(inventory)
    assert result.returncode != 0
    assert "group_vars/fastapi_servers.yml: Ansible reads the directory beside this file and ignores the file" in out, out[-3000:]
    assert "PLAY [Take the deploy lock" not in out and UNREACHED not in out


@pytest.fixture
def fleet(inventory):
    """The sandbox inventory as a fleet: two app hosts and a load balancer (none reachable)."""
    (inventory / "hosts.yml").write_text(
        "fastapi_servers:\n  hosts:\n    app-1.invalid:\n    app-2.invalid:\n"
        "fastapi_proxies:\n  hosts:\n    lb-1.invalid:\n")
    return inventory


@pytest.mark.parametrize("playbook", ["deploy.yml", "rollback.yml"])
def test_a_limit_that_leaves_out_a_load_balancer_is_refused(fleet, playbook):
    """--limit with app hosts but not every balancer: a switch would move the app hosts to the
    port a balancer left out does not use. Refused by the check play, naming it and the fix;
    with the balancers in the limit, the checks pass (the run stops where it reaches a host)."""
    result, out = deploy(fleet, "--limit", "app-1.invalid", playbook=playbook)
    assert result.returncode != 0
    assert ("includes the app hosts app-1.invalid but leaves out the load balancers lb-1.invalid" in out
            and "--limit 'app-1.invalid:fastapi_proxies'" in out), out[-3000:]
    assert UNREACHED not in out
    for limit in ("app-1.invalid:fastapi_proxies", "lb-1.invalid"):  # a run of balancers alone passes too
        result, out = deploy(fleet, "--limit", limit, playbook=playbook)
        assert "leaves out the load balancers" not in out and "Check that the run's --limit" in out, out[-3000:]
        assert "[ERROR]: Task failed: Action failed" not in out.split("PLAY [Take the deploy lock")[0], out[-3000:]
