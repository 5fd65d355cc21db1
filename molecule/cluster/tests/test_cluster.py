"""The cluster layout: HTTPS through one nginx load balancer to two app hosts, the real
client address, the firewall, and rolling deploys under load (a good one, then a broken one
that stops the rollout at the first host). The tests run in order, each on the state the
one before left."""

import json
import re
import subprocess
import sys
import time

import pytest

from conftest import APPS, LB, REPO_ROOT, app_copy, container_ip, current_release, https_json, run_deploy

ROOT = "/srv/fastapi"
PORT = 8000
STATE = {}


def _served(lb_ip, n=24):
    """(hosts, versions) that answered n requests through the balancer."""
    seen_hosts, versions = set(), set()
    for _ in range(n):
        data, _ = https_json(lb_ip)
        seen_hosts.add(data["host"])
        versions.add(data["version"])
    return seen_hosts, versions


class Load:
    """bench/loadgen.py on the controller, against the balancer, until stop()."""

    def __init__(self, url, tmp_path):
        self.stop_file = tmp_path / "load.stop"
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "bench/loadgen.py"), url, "--requests", "200000",
             "--concurrency", "8", "--pause", "0.02", "--max-seconds", "900", "--timeout", "60",
             "--stop-file", str(self.stop_file)],
            stdout=subprocess.PIPE, text=True)
        time.sleep(1)

    def stop(self):
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=120)
        return json.loads(out)


def test_https_through_the_balancer_serves_the_app(lb_ip):
    data, tls = https_json(lb_ip)
    assert data["app"] == "hello_api"
    assert data["scheme"] == "https"
    assert tls in ("TLSv1.2", "TLSv1.3")


def test_http_redirects_to_https(hosts):
    out = hosts[APPS[0]].check_output(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{LB}/x?y=1")
    assert out == f"301 https://{LB}/x?y=1"


def test_requests_are_spread_over_both_app_hosts(lb_ip):
    seen_hosts, _ = _served(lb_ip)
    assert seen_hosts == set(APPS)


def test_app_sees_the_client_not_the_balancer(hosts, lb_ip):
    # from an app host as a client: the app must report that host's address, not the balancer's
    client = APPS[1]
    for _ in range(4):  # whichever app host answers
        data = json.loads(hosts[client].check_output(f"curl -sk https://{LB}/"))
        assert data["client"] == container_ip(client), data
        assert data["scheme"] == "https"
    assert https_json(lb_ip)[0]["client"] not in (lb_ip, "127.0.0.1")


def test_uvicorn_trusts_only_the_balancer(hosts, lb_ip):
    for name in APPS:
        execstart = hosts[name].check_output("systemctl show -p ExecStart hello-api")
        trusted = execstart.split("--forwarded-allow-ips ", 1)[1].split()[0].split(",")
        assert sorted(trusted) == sorted(["127.0.0.1", lb_ip]), trusted


def test_firewall_lets_only_the_balancer_reach_the_app_port(hosts):
    target = APPS[0]
    # the balancer: yes
    assert hosts[LB].check_output(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{target}:{PORT}/health") == "200"
    # another host of the network (the other app host): no
    assert hosts[APPS[1]].run(f"curl -s -m 3 http://{target}:{PORT}/health").rc != 0
    # the controller: no
    assert subprocess.run(["curl", "-s", "-m", "3", f"http://{container_ip(target)}:{PORT}/health"]).returncode != 0
    # the host itself (loopback, as the deploy's health gate does): yes
    assert hosts[target].check_output(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{PORT}/health") == "200"
    # only the app port is guarded: the table has no rule for any other port
    rules = hosts[target].check_output("nft list table inet fastapi_firewall")
    dropped = re.search(rf"tcp dport {PORT} counter packets (\d+) bytes \d+ drop", rules)
    assert dropped and int(dropped.group(1)) > 0, rules  # it dropped the tries above
    assert " 22" not in rules and " 443" not in rules
    assert hosts[target].service("fastapi-firewall").is_enabled


def test_rolling_redeploy_under_load_fails_no_request(hosts, lb_ip, tmp_path, tmp_path_factory):
    STATE["v1"] = {name: current_release(hosts[name]) for name in APPS}
    load = Load(f"https://{lb_ip}/", tmp_path)
    result = run_deploy(
        "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v2')}", "-e", "fastapi_app_version=2.0.0",
        "-e", "fastapi_deploy_serial=1",
        "-e", json.dumps({"fastapi_app_pre_start_commands": ['echo "$FASTAPI_RELEASE_ID" > /tmp/pre-start-proof']}))
    stats = load.stop()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    # one release id on both hosts, new, serving 2.0.0 from both
    v2 = {name: current_release(hosts[name]) for name in APPS}
    assert len(set(v2.values())) == 1 and v2 != STATE["v1"], v2
    STATE["v2"] = v2[APPS[0]]
    seen_hosts, versions = _served(lb_ip)
    assert seen_hosts == set(APPS) and versions == {"2.0.0"}
    # one host at a time, each taken out of the balancer and put back
    assert out.count("PLAY [Roll the release out") == 2, "two batches of one host"
    for name in APPS:
        assert f"Mark the app host on its proxies, {name} down" in out
        assert f"Mark the app host on its proxies, {name} up" in out
        conf = hosts[LB].file(f"/etc/nginx/fastapi-backends/hello-api/{name}.conf").content_string
        assert " down;" not in conf
    # the pre-start step ran once for the whole cluster
    proofs = [name for name in APPS if hosts[name].file("/tmp/pre-start-proof").exists]
    assert len(proofs) == 1, proofs
    assert hosts[proofs[0]].file("/tmp/pre-start-proof").content_string.strip() == STATE["v2"]
    # and the clients saw nothing of it
    assert stats["failed"] == 0, stats
    assert stats["requests"] > 500, stats
    assert set(stats["versions"]) == {"1.0.0", "2.0.0"}, stats


def test_broken_release_stops_the_rollout_at_the_first_host(hosts, lb_ip, tmp_path, tmp_path_factory):
    broken = app_copy(tmp_path_factory, "v3", '\nraise RuntimeError("v3 cannot start")\n')
    load = Load(f"https://{lb_ip}/", tmp_path)
    result = run_deploy("-e", f"fastapi_app_src={broken}", "-e", "fastapi_app_version=3.0.0",
                        "-e", "fastapi_deploy_serial=1", "-e", "fastapi_service_health_timeout=10")
    stats = load.stop()
    out = " ".join((result.stdout + result.stderr).split())
    first, second = APPS
    assert result.returncode != 0
    assert f"stopped at {first} (rolled back, serving the previous release again)" in out, out[-6000:]
    assert f"Hosts not yet switched keep the previous release: {second}." in out
    assert f"failed its health check on {first}" in out
    assert "RuntimeError: v3 cannot start" in out
    assert f"Mark the app host on its proxies, {second} down" not in out, "the rollout never reached the second host"
    # both still serve v2, through the balancer, and the first is back in it
    assert current_release(hosts[first]) == STATE["v2"]
    assert current_release(hosts[second]) == STATE["v2"]
    assert " down;" not in hosts[LB].file(f"/etc/nginx/fastapi-backends/hello-api/{first}.conf").content_string
    seen_hosts, versions = _served(lb_ip)
    assert seen_hosts == set(APPS) and versions == {"2.0.0"}
    failed = hosts[first].run(f"ls {ROOT}/releases/*/FAILED")
    assert failed.rc == 0 and len(failed.stdout.split()) == 1
    assert stats["failed"] == 0, stats
    assert "3.0.0" not in stats["versions"], stats


@pytest.mark.parametrize("name", APPS)
def test_app_hosts_serve_the_same_release(hosts, name):
    assert current_release(hosts[name]) == STATE["v2"]
