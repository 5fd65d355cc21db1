"""Rolling deploys and rollback across the cluster, under load through the balancer. On each
host a new instance starts beside the serving one on the other port; the balancer moves to it
only once it is healthy (seen on the balancer itself: every host's upstream changes once, from
the old port to the new, never marked down). One host at a time, a broken release that stops
the rollout at the first host without touching it, two hosts at once (fastapi_deploy_serial=2;
a percentage, '50%', is what test_switch_cases.py deploys with), rollback.yml, and a new host. The tests run in order, each on the state the one
before left; the converged state comes back at the end."""

import json

import pytest

from conftest import APPS, LB
from deploytest import (ROOT, SANDBOX_VARS, BackendWatcher, Load, app_copy, assert_load_spanned, current_release,
                        releases, run_playbook, served, serving)

pytestmark = pytest.mark.usefixtures("restore")
STATE = {}
# A request never waits for a switch (the new instance serves before the balancer moves to it);
# slack for a 2-core machine running the deploy, the hosts and the load at once.
SWITCH_BOUND = 5.0


def _deploy_watched(hosts, url, *args, span_field="version", playbook="deploy.yml"):
    watcher = BackendWatcher(hosts[LB], "hello-api")
    load = Load(url, span_field=span_field)
    watcher.start()
    result = run_playbook(*args, playbook=playbook)
    stats = load.stop()
    watcher.stop()
    return result, stats, watcher


def _releases_now(hosts):
    return {name: current_release(hosts[name]) for name in APPS}


def _units(host):
    """The app's unit files on the host and a checksum of each, and the instance recorded as serving."""
    sums = host.check_output("cd /etc/systemd/system && sha1sum hello-api*.service hello-api*.socket")
    return sums, serving(host)


def _assert_moved_once_each(watcher, before):
    """Each app host's upstream moved once, from the port its serving instance had to the other,
    and was never marked down; the hosts moved one after the other, in inventory order."""
    assert watcher.seen_down == set(), vars(watcher)
    for name in APPS:
        old = before[name][1][1]
        assert watcher.ports(name) == [old, {8000: 8001, 8001: 8000}[old]], (name, watcher.moves)
    return [watcher.moved_at[name][-1] for name in APPS]


def test_rolling_redeploy_one_host_at_a_time(hosts, url, lb_ip, tmp_path_factory):
    before = {name: _units(hosts[name]) for name in APPS}
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
    # two batches; the balancer moved each host to its new instance, one host after the other
    assert result.stdout.count("PLAY [Roll the release out") == 2, "two batches of one host"
    first_moved, second_moved = _assert_moved_once_each(watcher, before)
    assert first_moved < second_moved
    for name in APPS:
        unit, port = serving(hosts[name])
        assert unit != before[name][1][0] and port != before[name][1][1], (unit, port, before[name])
        # the old instance is gone: its units removed, nothing listens on its port
        assert not hosts[name].file(f"/etc/systemd/system/{before[name][1][0]}.service").exists
        assert not hosts[name].socket(f"tcp://0.0.0.0:{before[name][1][1]}").is_listening
    # the pre-start step ran once for the whole cluster
    proofs = [name for name in APPS if hosts[name].file("/tmp/pre-start-proof").exists]
    assert len(proofs) == 1, proofs
    assert hosts[proofs[0]].file("/tmp/pre-start-proof").content_string.strip() == STATE["v2"]
    # and the clients saw nothing of it
    assert_load_spanned(stats, result, STATE["v1_version"], "2.0.0", SWITCH_BOUND)


def test_broken_release_stops_the_rollout_at_the_first_host(hosts, url, lb_ip, tmp_path_factory):
    broken = app_copy(tmp_path_factory, "v3", '\nraise RuntimeError("v3 cannot start")\n')
    before = set(releases(hosts[APPS[0]]))
    units_before = {name: _units(hosts[name]) for name in APPS}
    result, stats, watcher = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={broken}", "-e", "fastapi_app_version=3.0.0",
        "-e", "fastapi_deploy_serial=1", "-e", "fastapi_service_health_timeout=10")
    first, second = APPS
    assert result.returncode != 0
    assert f"stopped at {first} (not switched: the previous instance serves on, untouched)" in result.flat, result.flat[-6000:]
    assert f"Hosts not yet switched keep the previous release: {second}." in result.flat
    assert f"failed its health check on {first}" in result.flat
    assert "RuntimeError: v3 cannot start" in result.flat
    # the balancer's view of both hosts never changed, nor their unit files or serving instance
    assert watcher.seen_down == set() and all(len(m) == 1 for m in watcher.moves.values()), vars(watcher)
    assert {name: _units(hosts[name]) for name in APPS} == units_before
    assert _releases_now(hosts) == {name: STATE["v2"] for name in APPS}
    assert served(lb_ip) == (set(APPS), {"2.0.0"})
    made = sorted(set(releases(hosts[first])) - before)
    assert len(made) == 1 and hosts[first].file(f"{ROOT}/releases/{made[0]}/FAILED").exists, made
    assert "3.0.0" not in stats["versions"], stats
    assert_load_spanned(stats, result, "2.0.0", "2.0.0", SWITCH_BOUND)


def test_two_hosts_at_once(hosts, url, lb_ip, tmp_path_factory):
    """fastapi_deploy_serial=2: one batch, both hosts switch together; each keeps serving on its
    old instance until its new one is healthy, so no request waits either."""
    before = {name: _units(hosts[name]) for name in APPS}
    result, stats, watcher = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v4')}", "-e", "fastapi_app_version=4.0.0",
        "-e", "fastapi_deploy_serial=2")
    assert result.returncode == 0, result.stdout[-6000:]
    assert result.stdout.count("PLAY [Roll the release out") == 1, "one batch of two hosts"
    _assert_moved_once_each(watcher, before)
    v4 = _releases_now(hosts)
    assert len(set(v4.values())) == 1 and STATE["v2"] not in v4.values(), v4
    STATE["v4"] = v4[APPS[0]]
    assert served(lb_ip) == (set(APPS), {"4.0.0"})
    assert_load_spanned(stats, result, "2.0.0", "4.0.0", SWITCH_BOUND)


def test_rollback_across_the_cluster_under_load(hosts, url, lb_ip):
    """rollback.yml brings every app host back to a named earlier release (v2), under load,
    failing no request, one host at a time like a deploy. (Named: the broken v3 is marked
    failed on the first host only, so each host would choose differently by itself; a
    fleet-wide choice is issue 14's.)"""
    before = {name: _units(hosts[name]) for name in APPS}
    result, stats, watcher = _deploy_watched(hosts, url, "-e", f"fastapi_service_rollback_to={STATE['v2']}",
                                             playbook="rollback.yml")
    assert result.returncode == 0, result.stdout[-6000:]
    assert _releases_now(hosts) == {name: STATE["v2"] for name in APPS}
    assert served(lb_ip) == (set(APPS), {"2.0.0"})
    assert result.stdout.count("PLAY [Roll back, new beside old") == 2, "two batches of one host"
    first_moved, second_moved = _assert_moved_once_each(watcher, before)
    assert first_moved < second_moved
    assert_load_spanned(stats, result, "4.0.0", "2.0.0", SWITCH_BOUND)


def test_a_new_app_host_joins_without_a_dead_backend(hosts, url, lb_ip):
    """An app host that serves nothing yet (as a new host added to the inventory: here the
    second one, its instance and the record of it removed) is in the balancer as `down` until
    its first instance serves; the other host serves every request meanwhile, none fails."""
    first, second = APPS
    unit, _ = serving(hosts[second])
    hosts[second].check_output(
        f"systemctl disable --now {unit}.socket {unit}.service && rm -f /etc/systemd/system/{unit}.* "
        f"/var/lib/fastapi-deploy/hello-api.serving && systemctl daemon-reload")
    (before,) = served(lb_ip)[1]
    after = SANDBOX_VARS["fastapi_app_version"]  # the converged settings are deployed
    result, stats, watcher = _deploy_watched(hosts, url)
    assert result.returncode == 0, result.stdout[-6000:]
    moves = watcher.moves[second]
    assert " down;" in moves[0] or " down;" in moves[1], moves  # down until it served
    assert " down" not in moves[-1] and watcher.ports(second)[-1] == 8000, moves
    assert serving(hosts[second]) == ("hello-api-a", 8000)
    assert served(lb_ip) == (set(APPS), {after})
    assert_load_spanned(stats, result, before, after, SWITCH_BOUND)
