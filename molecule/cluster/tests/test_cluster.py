"""The cluster layout as converged: HTTPS through one nginx load balancer to two app hosts,
the real client address, uvicorn trusting only the balancer, the firewall. Nothing here
changes what the hosts serve (the rollouts are in test_rollout.py)."""

import json
import re
import subprocess

from conftest import APPS, LB
from deploytest import SANDBOX_VARS, container_ip, https_json, served, serving

# The app's instances take turns on its port and the next one: both are guarded.
PORTS = (SANDBOX_VARS["fastapi_service_port"], SANDBOX_VARS["fastapi_service_port"] + 1)


def test_https_through_the_balancer_serves_the_app(lb_ip):
    data, tls = https_json(lb_ip)
    assert data["app"] == "hello_api"
    assert data["scheme"] == "https"
    assert tls in ("TLSv1.2", "TLSv1.3")


def test_http_redirects_to_https(hosts):
    out = hosts[APPS[0]].check_output(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{LB}/x?y=1")
    assert out == f"301 https://{LB}/x?y=1"


def test_requests_are_spread_over_both_app_hosts(lb_ip):
    seen_hosts, versions = served(lb_ip)
    assert seen_hosts == set(APPS)
    assert versions == {SANDBOX_VARS["fastapi_app_version"]}


def test_app_sees_the_client_not_the_balancer(hosts, lb_ip):
    # from an app host as a client: the app must report that host's address, not the balancer's
    client = APPS[1]
    for _ in range(4):  # whichever app host answers
        data = json.loads(hosts[client].check_output(f"curl -sk https://{LB}/"))
        assert data["client"] == container_ip(client), data
        assert data["scheme"] == "https"
    assert https_json(lb_ip)[0]["client"] not in (lb_ip, "127.0.0.1")


def test_uvicorn_trusts_only_the_balancer(hosts, lb_ip):
    # loopback and every global address of the balancer, IPv4 and IPv6 (those the firewall lets in)
    lb_addresses = hosts[LB].check_output(
        "ip -o addr show scope global | awk '{print $4}' | cut -d/ -f1").split()
    assert lb_ip in lb_addresses
    for name in APPS:
        execstart = hosts[name].check_output("systemctl show -p ExecStart %s", serving(hosts[name])[0])
        trusted = execstart.split("--forwarded-allow-ips ", 1)[1].split()[0].split(",")
        assert sorted(trusted) == sorted(["127.0.0.1", "::1", *lb_addresses]), trusted


def test_firewall_lets_only_the_balancer_reach_the_app_port(hosts):
    target = APPS[0]
    port = serving(hosts[target])[1]
    assert port in PORTS
    # the balancer: yes
    assert hosts[LB].check_output(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{target}:{port}/health") == "200"
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
