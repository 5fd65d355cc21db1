"""The cluster layout as converged: HTTPS through either of two nginx load balancers to two
app hosts, the real client address, uvicorn trusting only the balancers, the firewall. Nothing here
changes what the hosts serve (the rollouts are in test_rollout.py)."""

import json
import re
import subprocess

import pytest
import yaml

from conftest import APPS, LB, LBS
from deploytest import REPO_ROOT, ROOT, SANDBOX_VARS, Load, container_ip, current_release, http_json, https_json, served, serving

# The cluster deploys a lock a year behind the index (group_vars/fastapi_servers/10-cluster.yml).
CLUSTER_VARS = yaml.safe_load((REPO_ROOT / "molecule/cluster/group_vars/fastapi_servers/10-cluster.yml").read_text())
OLD_LOCK = REPO_ROOT / "molecule/cluster/lock-2025-11-01/requirements.lock"

# On the host, with the virtualenv's own Python: the lock's lines whose markers hold there
# (as pip evaluates them: its own packaging), and every distribution in the virtualenv.
LOCK_VS_VENV = r"""
import importlib.metadata, json, re, sys
from pip._vendor.packaging.markers import Marker
from pip._vendor.packaging.utils import canonicalize_name
want = {}
for line in open(sys.argv[1]):
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*(.+?))?\s*\\?$", line)
    if m and (not m.group(3) or Marker(m.group(3)).evaluate()):
        want[canonicalize_name(m.group(1))] = m.group(2)
have = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
print(json.dumps({"want": want, "have": have, "python": "%d.%d" % sys.version_info[:2]}))
"""

# The app's instances take turns on its port and the next one: both are guarded.
PORTS = (SANDBOX_VARS["fastapi_service_port"], SANDBOX_VARS["fastapi_service_port"] + 1)


def test_https_through_each_balancer_serves_the_app(lb_ips):
    for ip in lb_ips:
        data, tls = https_json(ip)
        assert data["app"] == "hello_api"
        assert data["scheme"] == "https"
        assert tls in ("TLSv1.2", "TLSv1.3")


def test_http_redirects_to_https(hosts):
    out = hosts[APPS[0]].check_output(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{LB}/x?y=1")
    assert out == f"301 https://{LB}/x?y=1"


def test_each_balancer_spreads_requests_over_both_app_hosts(lb_ips):
    for ip in lb_ips:
        seen_hosts, versions = served(ip)
        assert seen_hosts == set(APPS), ip
        assert versions == {SANDBOX_VARS["fastapi_app_version"]}


def test_a_host_that_refuses_shows_in_the_balancer_log(hosts, url, balancer_host):
    """Why every load test reads the balancer's upstream log: an app host that refuses
    connections for half a second fails attempts the clients mostly never see. nginx sends a
    failed GET again to the other app host (200 to the client); a POST it had already sent on a
    kept-alive connection it does not (502 to the client), one it could not connect for it
    does. The upstream log shows every refused attempt, retried or not."""
    _, port = serving(hosts[APPS[0]])
    refuse = (f"nft add table inet refuse && nft add chain inet refuse input '{{ type filter hook input priority -10; }}'"
              f" && nft add rule inet refuse input tcp dport {port} reject with tcp reset"
              " && sleep 0.5; nft delete table inet refuse")
    load = Load(url, balancer=balancer_host)  # through both balancers
    hosts[APPS[0]].run(refuse)
    stats = load.stop()
    assert stats["get_failed"] == 0 and stats["get_ok"] > 0 and stats["post_ok"] > 0, stats  # GETs retried
    assert stats["upstream_failures"], stats
    target = f'"{container_ip(APPS[0])}:{port}'
    for line in stats["upstream_failures"]:  # each one an attempt at the refusing host
        assert f' {target}' in line and ('"502"' in line or '"502, 200"' in line), stats["upstream_failures"]
    assert stats["post_failed"] <= len(stats["upstream_failures"]), stats  # no failure the log missed


def test_app_sees_the_client_not_the_balancer(hosts, lb_ip):
    # from an app host as a client: the app must report that host's address, not the balancer's
    client = APPS[1]
    for _ in range(4):  # whichever app host answers
        data = json.loads(hosts[client].check_output(f"curl -sk https://{LB}/"))
        assert data["client"] == container_ip(client), data
        assert data["scheme"] == "https"
    assert https_json(lb_ip)[0]["client"] not in (lb_ip, "127.0.0.1")


def test_uvicorn_trusts_only_the_balancers(hosts, lb_ips):
    # loopback and every global address of each balancer, IPv4 and IPv6 (those the firewall lets in)
    lb_addresses = [address for lb in LBS for address in hosts[lb].check_output(
        "ip -o addr show scope global | awk '{print $4}' | cut -d/ -f1").split()]
    assert set(lb_ips) <= set(lb_addresses)
    for name in APPS:
        execstart = hosts[name].check_output("systemctl show -p ExecStart %s", serving(hosts[name])[0])
        trusted = execstart.split("--forwarded-allow-ips ", 1)[1].split()[0].split(",")
        assert sorted(trusted) == sorted(["127.0.0.1", "::1", *lb_addresses]), trusted


def test_firewall_lets_only_the_balancers_reach_the_app_port(hosts):
    target = APPS[0]
    port = serving(hosts[target])[1]
    assert port in PORTS
    # each balancer: yes
    for lb in LBS:
        assert hosts[lb].check_output(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{target}:{port}/health") == "200"
    # another host of the network (the other app host): no
    assert hosts[APPS[1]].run(f"curl -s -m 3 http://{target}:{port}/health").rc != 0
    # the controller: no
    assert subprocess.run(["curl", "-s", "-m", "3", f"http://{container_ip(target)}:{port}/health"]).returncode != 0
    # the host itself (loopback, as the deploy's health gate does): yes
    assert hosts[target].check_output(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/health") == "200"
    # both ports the instances take turns on are guarded; no rule for any other port
    rules = hosts[target].check_output("nft list table inet fastapi_firewall")
    dropped = re.search(r"tcp dport \{ ([0-9, ]+) \} counter packets (\d+) bytes \d+ drop", rules)
    assert dropped and int(dropped.group(2)) > 0, rules  # it dropped the tries above
    assert sorted(int(p) for p in dropped.group(1).split(",")) == sorted(PORTS), rules
    assert " 22" not in rules and " 443" not in rules
    assert hosts[target].service("fastapi-firewall").is_enabled


@pytest.mark.parametrize("app", APPS)
def test_lock_behind_the_index_installs_exactly_what_it_lists(hosts, app):
    host = hosts[app]
    venv = host.check_output(f"readlink -f {ROOT}/releases/{current_release(host)}/venv")
    assert host.file(f"{venv}/requirements.lock").content_string == OLD_LOCK.read_text(), "not the 2025 lock"
    found = json.loads(host.check_output(f"{venv}/bin/python - {venv}/requirements.lock <<'EOF'\n{LOCK_VS_VENV}\nEOF"))
    want, have = found["want"], found["have"]
    assert want["uvicorn"] == "0.38.0" and "colorama" not in want  # markers: win32 only
    # every locked package at its locked version, and nothing else but the virtualenv's own
    # installer (python3 -m venv puts pip there, and setuptools on Python 3.11)
    assert {k: have.get(k) for k in want} == want
    assert set(have) - set(want) <= {"pip", "setuptools"}, sorted(set(have) - set(want))
    debian = host.file("/etc/debian_version").content_string.split(".")[0]
    assert found["python"] == {"12": "3.11", "13": "3.13"}[debian]  # the same lock on both releases
    # and the app answers with the locked FastAPI
    assert http_json(host, "/")["fastapi"] == CLUSTER_VARS["fastapi_app_fastapi_version"] == want["fastapi"]
