"""The firewall stays in force, and the balancer's TLS passes a real scanner.

- The app hosts' firewall survives what an administrator does to nftables.service (start,
  reload, restart: Debian's nftables.conf flushes every table), and a deploy finds rules that
  are not in force (a flushed table, or an older set of rules that a run stopped before
  loading), loads them again and says so.
- Overlapping allowed sources (10-cluster.yml lists a network and an address inside it) load.
- sslyze, against the balancer: Mozilla's "intermediate" profile, no weak protocol or cipher.

A deploy of the converged settings is run (no release changes); the hosts serve the same
release afterwards. It is also the scenario's idempotence check (molecule.yml has no
idempotence step): that second run changes nothing but the rules taken away by hand."""

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import APPS, LB, LBS
from deploytest import changed_tasks, run_playbook, serving

SSLYZE = str(Path(sys.executable).with_name("sslyze"))


def _reach(hosts, client, target):
    """Whether `client` can reach the app on `target`'s serving port (curl's exit code 0)."""
    port = serving(hosts[target])[1]
    return hosts[client].run(f"curl -s -m 3 -o /dev/null http://{target}:{port}/health").rc == 0


def _rules_id(hosts, target):
    rules = hosts[target].run("nft list table inet fastapi_firewall")
    found = re.search(r'comment "fastapi-deploy rules ([0-9a-f]+)"', rules.stdout)
    return found.group(1) if rules.rc == 0 and found else None


def test_firewall_survives_nftables_service(hosts):
    target, other = APPS[0], APPS[1]
    rules_id = _rules_id(hosts, target)
    assert rules_id, "the converged firewall is loaded, with its id"
    assert _reach(hosts, LB, target) and not _reach(hosts, other, target)
    for action in ("start", "reload", "restart"):
        done = hosts[target].run(f"systemctl {action} nftables.service")
        assert done.rc == 0, done.stderr
        # Debian's own ruleset is loaded (nftables.conf: table inet filter), and ours with it
        tables = hosts[target].check_output("nft list tables")
        assert "table inet filter" in tables, tables
        assert _rules_id(hosts, target) == rules_id, f"the table is gone after systemctl {action} nftables"
        assert _reach(hosts, LB, target), action
        assert not _reach(hosts, other, target), f"a non-balancer got in after systemctl {action} nftables"
    assert hosts[target].service("fastapi-firewall").is_running


def test_a_deploy_restores_rules_not_in_force(hosts):
    first, second = APPS
    rules_id = _rules_id(hosts, first)
    releases = {name: serving(hosts[name]) for name in APPS}
    try:
        # first: the table flushed by hand; second: an older set of rules is in force (as if a
        # run had written the new file and died before loading it)
        assert hosts[first].run("nft delete table inet fastapi_firewall").rc == 0
        assert _reach(hosts, second, first), "without the table the app port is open (the test is real)"
        old = hosts[second].run("sed 's/fastapi-deploy rules [0-9a-f]*/fastapi-deploy rules 00000000/'"
                                " /etc/fastapi-firewall.nft > /tmp/old.nft && nft -f /tmp/old.nft")
        assert old.rc == 0, old.stderr
        assert _rules_id(hosts, second) == "00000000"
        result = run_playbook("-e", "fastapi_deploy_serial=100%")  # both app hosts in one batch: a no-op either way
    finally:
        after = {name: _rules_id(hosts, name) for name in APPS}
        for name in APPS:  # whatever happened, the next test finds the firewall in force
            hosts[name].run("systemctl reload fastapi-firewall")
    assert result.returncode == 0, result.stdout[-4000:]
    flat = result.flat
    assert f"The firewall of the app ports on {first} was not in force (no table inet fastapi_firewall)" in flat
    assert f"The firewall of the app ports on {second} was not in force (an older set of rules)" in flat
    assert after == {name: rules_id for name in APPS}, "the deploy loaded the rules again"
    for name in APPS:
        assert serving(hosts[name]) == releases[name], "nothing else changed"
    assert not _reach(hosts, second, first) and not _reach(hosts, first, second)
    assert all(_reach(hosts, lb, app) for lb in LBS for app in APPS)
    # the one change on each app host is that load; the balancers did not change at all. This is
    # the cluster's idempotence check (the scenario has no idempotence step): a second run of the
    # converged settings changes nothing but what was taken away by hand.
    for name, changed in ((first, 1), (second, 1), *((lb, 0) for lb in LBS)):
        assert re.search(rf"{name}\s*: ok=\d+\s+changed={changed}\b", result.stdout), result.stdout[-3000:]
    changes = changed_tasks(result)
    assert sorted(host for _, host in changes) == sorted(APPS), changes
    assert all(task.startswith("fastapi_firewall : Load") for task, _ in changes), changes


def test_overlapping_sources_are_merged(hosts):
    rules = hosts[APPS[0]].check_output("nft list set inet fastapi_firewall allowed_v4")
    assert "192.0.2.0/24" in rules and "192.0.2.7" not in rules, rules  # the address is inside the network
    assert "auto-merge" in rules


def test_balancer_tls_is_mozilla_intermediate(hosts, lb_ip, tmp_path):
    """sslyze's verdict against Mozilla's "intermediate" configuration, trusting the
    balancer's (self-signed) certificate as the root."""
    ca = tmp_path / "balancer.pem"
    ca.write_text(hosts[LB].check_output("cat /etc/ssl/certs/fastapi-*-selfsigned.crt"))
    out_json = tmp_path / "sslyze.json"
    scan = subprocess.run([SSLYZE, "--mozilla_config=intermediate", f"--certinfo_ca_file={ca}",
                           f"--json_out={out_json}", f"{lb_ip}:443"], capture_output=True, text=True, timeout=300)
    assert scan.returncode == 0, scan.stdout[-3000:] + scan.stderr[-2000:]
    assert "OK - Compliant" in scan.stdout and "Not compliant" not in scan.stdout, scan.stdout[-3000:]
    result = json.loads(out_json.read_text())["server_scan_results"][0]["scan_result"]
    for weak in ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites", "tls_1_1_cipher_suites"):
        assert result[weak]["result"]["accepted_cipher_suites"] == [], weak
    accepted = [c["cipher_suite"]["name"] for v in ("tls_1_2_cipher_suites", "tls_1_3_cipher_suites")
                for c in result[v]["result"]["accepted_cipher_suites"]]
    assert accepted and not [c for c in accepted if re.search(r"RC4|3DES|CBC|NULL|EXPORT|MD5|_SHA$", c)], accepted
