"""Rolling deploys and rollback across the cluster, under load through the balancer: one host
at a time (each taken out of the balancer while it switches, seen on the balancer itself), a
broken release that stops the rollout at the first host, two hosts at once
(fastapi_deploy_serial=2) and as a percentage ('50%'), and rollback.yml. The tests run in
order, each on the state the one before left; the converged state comes back at the end."""

import json

import pytest

from conftest import APPS, LB
from deploytest import (ROOT, SANDBOX_VARS, BackendWatcher, Load, app_copy, assert_load_spanned,
                        current_release, releases, run_playbook, served)

pytestmark = pytest.mark.usefixtures("restore")
STATE = {}
# Through the balancer while one host drains, a request should not wait for the switch at all;
# slack for a 2-core machine running the deploy, the hosts and the load at once.
DRAINED_BOUND = 5.0
# When every app host switches at once nothing drains: requests wait in the sockets' queues
# for a stop (the whole TimeoutStopSec on cgroup v1 container hosts) and a start.
SWITCH_BOUND = SANDBOX_VARS["fastapi_service_timeout_stop_sec"] + 10


def _deploy_watched(hosts, url, *args, span_field="version"):
    watcher = BackendWatcher(hosts[LB], "hello-api")
    load = Load(url, span_field=span_field)
    watcher.start()
    result = run_playbook(*args)
    stats = load.stop()
    watcher.stop()
    return result, stats, watcher


def _releases_now(hosts):
    return {name: current_release(hosts[name]) for name in APPS}


def test_rolling_redeploy_one_host_at_a_time(hosts, url, lb_ip, tmp_path_factory):
    STATE["v1"] = _releases_now(hosts)
    STATE["v1_version"] = served(lb_ip)[1].pop()
    result, stats, watcher = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v2')}", "-e", "fastapi_app_version=2.0.0",
        "-e", "fastapi_deploy_serial=1",
        "-e", json.dumps({"fastapi_app_pre_start_commands": ['echo "$FASTAPI_RELEASE_ID" > /tmp/pre-start-proof']}))
    assert result.returncode == 0, result.stdout[-6000:]
    # one release id on both hosts, new, serving 2.0.0 from both
    v2 = _releases_now(hosts)
    assert len(set(v2.values())) == 1 and v2 != STATE["v1"], v2
    STATE["v2"] = v2[APPS[0]]
    assert served(lb_ip) == (set(APPS), {"2.0.0"})
    # two batches; the balancer saw each host taken out, never both at once, and both are back
    assert result.stdout.count("PLAY [Roll the release out") == 2, "two batches of one host"
    assert watcher.seen_down == set(APPS) and watcher.most_down_at_once == 1, vars(watcher)
    for name in APPS:
        assert " down;" not in hosts[LB].file(f"/etc/nginx/fastapi-backends/hello-api/{name}.conf").content_string
    # the pre-start step ran once for the whole cluster
    proofs = [name for name in APPS if hosts[name].file("/tmp/pre-start-proof").exists]
    assert len(proofs) == 1, proofs
    assert hosts[proofs[0]].file("/tmp/pre-start-proof").content_string.strip() == STATE["v2"]
    # and the clients saw nothing of it
    assert_load_spanned(stats, result, STATE["v1_version"], "2.0.0", DRAINED_BOUND)


def test_broken_release_stops_the_rollout_at_the_first_host(hosts, url, lb_ip, tmp_path_factory):
    broken = app_copy(tmp_path_factory, "v3", '\nraise RuntimeError("v3 cannot start")\n')
    before = set(releases(hosts[APPS[0]]))
    result, stats, watcher = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={broken}", "-e", "fastapi_app_version=3.0.0",
        "-e", "fastapi_deploy_serial=1", "-e", "fastapi_service_health_timeout=10")
    first, second = APPS
    assert result.returncode != 0
    assert f"stopped at {first} (rolled back, serving the previous release again)" in result.flat, result.flat[-6000:]
    assert f"Hosts not yet switched keep the previous release: {second}." in result.flat
    assert f"failed its health check on {first}" in result.flat
    assert "RuntimeError: v3 cannot start" in result.flat
    # the balancer took the first host out and back, and never touched the second
    assert watcher.seen_down == {first}, vars(watcher)
    assert " down;" not in hosts[LB].file(f"/etc/nginx/fastapi-backends/hello-api/{first}.conf").content_string
    assert _releases_now(hosts) == {name: STATE["v2"] for name in APPS}
    assert served(lb_ip) == (set(APPS), {"2.0.0"})
    made = sorted(set(releases(hosts[first])) - before)
    assert len(made) == 1 and hosts[first].file(f"{ROOT}/releases/{made[0]}/FAILED").exists, made
    assert "3.0.0" not in stats["versions"], stats
    assert_load_spanned(stats, result, "2.0.0", "2.0.0", DRAINED_BOUND)


def test_two_hosts_at_once(hosts, url, lb_ip, tmp_path_factory):
    """fastapi_deploy_serial=2: one batch, both hosts switch together; no host can be taken
    out (no other stays in), so requests wait in the sockets' queues instead."""
    result, stats, watcher = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v4')}", "-e", "fastapi_app_version=4.0.0",
        "-e", "fastapi_deploy_serial=2")
    assert result.returncode == 0, result.stdout[-6000:]
    assert result.stdout.count("PLAY [Roll the release out") == 1, "one batch of two hosts"
    assert watcher.seen_down == set(), "no host was taken out: none would have stayed in"
    v4 = _releases_now(hosts)
    assert len(set(v4.values())) == 1 and STATE["v2"] not in v4.values(), v4
    STATE["v4"] = v4[APPS[0]]
    assert served(lb_ip) == (set(APPS), {"4.0.0"})
    assert_load_spanned(stats, result, "2.0.0", "4.0.0", SWITCH_BOUND)


def test_half_the_hosts_at_a_time(hosts, url, lb_ip, tmp_path_factory):
    """fastapi_deploy_serial='50%': batches of one host of the two, each drained."""
    result, stats, watcher = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v5')}", "-e", "fastapi_app_version=5.0.0",
        "-e", "fastapi_deploy_serial=50%")
    assert result.returncode == 0, result.stdout[-6000:]
    assert result.stdout.count("PLAY [Roll the release out") == 2, "two batches"
    assert watcher.seen_down == set(APPS) and watcher.most_down_at_once == 1, vars(watcher)
    assert served(lb_ip) == (set(APPS), {"5.0.0"})
    assert_load_spanned(stats, result, "4.0.0", "5.0.0", DRAINED_BOUND)


def test_rollback_across_the_cluster_under_load(hosts, url, lb_ip):
    """rollback.yml brings every app host back to the previous good release (v4: the broken
    v3 is never picked), under load, failing no request."""
    load = Load(url)
    result = run_playbook(playbook="rollback.yml")
    stats = load.stop()
    assert result.returncode == 0, result.stdout[-6000:]
    assert _releases_now(hosts) == {name: STATE["v4"] for name in APPS}
    assert served(lb_ip) == (set(APPS), {"4.0.0"})
    # rollback.yml switches every host at once (no drain): requests wait in the sockets' queues
    assert_load_spanned(stats, result, "5.0.0", "4.0.0", SWITCH_BOUND)
