"""Rolling deploys and rollback across the cluster, under load through both balancers. On each
host a new instance starts beside the serving one on the other port; the balancers move to it
only once it is healthy (seen on each balancer itself: every host's upstream changes once, from
the old port to the new, never marked down). One host at a time; a broken release that stops
the rollout at the first host without touching it, and is then known failed on every host; two
hosts at once (fastapi_deploy_serial=100%) changing the code, port, workers, environment and
graceful shutdown at once, while a slow request is in progress on an old instance and a second
deploy is refused by the deploy lock; rollback.yml choosing one release for the whole fleet,
with retention; the deploy log; notifications; a new host.

The releases have custom ids whose names order otherwise than their times (v9, v10, hotfix1
in time; hotfix1, v10, v9 by name). The tests run in order, each on the state the one before
left; the converged state comes back before the next module."""

import json
import re
import secrets
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import APPS, LB, LBS
from deploytest import (ROOT, SANDBOX_VARS, BackendWatcher, Load, Notifier, ansible_env, app_copy, assert_load_spanned,
                        console, current_release, deploy_log, end_shared_connection, http_get, https_json, lock_holder,
                        release_lock, releases, run_playbook, served, serving, worker_pids)

pytestmark = pytest.mark.usefixtures("restore")
TAG = secrets.token_hex(2)  # the hosts may keep releases of an earlier run of this module
V9, V10, HOTFIX1 = f"v9-{TAG}", f"v10-{TAG}", f"hotfix1-{TAG}"
STATE = {}


@pytest.fixture(scope="module")
def notifier(tmp_path_factory):
    n = Notifier(tmp_path_factory.mktemp("notify"))
    yield n
    n.close()


def _deploy_watched(hosts, url, *args, span_field="version", playbook="deploy.yml", env=None, during=None,
                    keep_alive=0, load=True):
    """Run a deploy under load through both balancers (unless not `load`: the stats are then
    None) with each balancer watched (one BackendWatcher each, in LBS order);
    `during(result_future, watchers)` runs while it does."""
    watchers = [BackendWatcher(hosts[lb], "hello-api") for lb in LBS]
    load = Load(url, span_field=span_field, balancer=[hosts[lb] for lb in LBS], keep_alive=keep_alive) if load else None
    for watcher in watchers:
        watcher.start()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run_playbook, *args, playbook=playbook, env=env)
        if during:
            during(future, watchers)
        result = future.result()
    stats = load.stop() if load else None
    for watcher in watchers:
        watcher.stop()
    return result, stats, watchers


def _assert_unmoved(watchers):
    """No balancer's view of any app host changed, nor marked one down."""
    for watcher in watchers:
        assert watcher.seen_down == set() and all(len(m) == 1 for m in watcher.moves.values()), vars(watcher)


def _last_end(host):
    """The host's last "end" record of the deploy log: how the last run ended there."""
    return [r for r in deploy_log(host) if r["event"] == "end"][-1]


def _releases_now(hosts):
    return {name: current_release(hosts[name]) for name in APPS}


def _units(host):
    """The app's unit files on the host and a checksum of each, and the instance recorded as serving."""
    sums = host.check_output("cd /etc/systemd/system && sha1sum hello-api*.service hello-api*.socket")
    return sums, serving(host)


def _main_pid(host):
    """The main PID of the instance that serves on the host."""
    return host.check_output(f"systemctl show -p MainPID --value {serving(host)[0]}.service")


def _assert_moved_once_each(watchers, before, hosts, ports=(8000, 8001)):
    """On each balancer, each app host's upstream moved once, from the port its serving
    instance had to the one of `ports` its new instance has (the other of the pair, when the
    app's port did not change), and was never marked down. Returns, for each app host, when the
    first and when the last balancer moved it."""
    for watcher in watchers:
        assert watcher.seen_down == set(), vars(watcher)
        for name in APPS:
            old = before[name][1][1]
            new = serving(hosts[name])[1]
            assert new in ports and new != old, (name, old, new, ports)
            assert watcher.ports(name) == [old, new], (name, watcher.lb_host.instance, watcher.moves)
    return [(min(w.moved_at[name][-1] for w in watchers), max(w.moved_at[name][-1] for w in watchers)) for name in APPS]


# V9's code has one more route: GET /held?name=FLAG answers once $STATE_DIRECTORY/FLAG exists (at
# most 120 s), so that a test decides when a request in progress ends, whatever the load.
HELD = """

@app.get("/held")
async def held(name: str) -> dict:
    flag = os.path.join(os.environ["STATE_DIRECTORY"], os.path.basename(name))
    for _ in range(1200):
        if os.path.exists(flag):
            return {"released": True, "version": APP_VERSION, "pid": os.getpid()}
        await asyncio.sleep(0.1)
    return {"released": False, "version": APP_VERSION, "pid": os.getpid()}
"""


def test_rolling_redeploy_one_host_at_a_time(hosts, url, lb_ip, tmp_path_factory, notifier, baseline):
    before = {name: _units(hosts[name]) for name in APPS}
    STATE["v1"] = _releases_now(hosts)
    STATE["v1_version"] = served(lb_ip)[1].pop()
    result, stats, watchers = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v2', HELD)}", "-e", "fastapi_app_version=2.0.0",
        "-e", "fastapi_deploy_serial=1", "-e", f"fastapi_app_release_id={V9}",
        "-e", json.dumps({"fastapi_app_pre_start_commands": ['echo "$FASTAPI_RELEASE_ID" > /tmp/pre-start-proof']}),
        *notifier.args(broken=True), env=ansible_env(FASTAPI_DEPLOY_USER="ci-alice"))
    assert result.returncode == 0, result.stdout[-6000:]
    # one release id on both hosts, the one given, serving 2.0.0 from both
    assert _releases_now(hosts) == {name: V9 for name in APPS}
    assert served(lb_ip) == (set(APPS), {"2.0.0"})
    # two batches; the balancer moved each host to its new instance, one host after the other
    assert result.stdout.count("TASK [Check that the app host can be reached before its switch]") == 2, "two batches of one host"
    first_moved, second_moved = _assert_moved_once_each(watchers, before, hosts)
    assert first_moved[1] < second_moved[0], "every balancer moved the first host before either moved the second"
    for name in APPS:
        unit, port = serving(hosts[name])
        assert unit != before[name][1][0] and port != before[name][1][1], (unit, port, before[name])
        # the old instance is gone: its units removed, nothing listens on its port
        assert not hosts[name].file(f"/etc/systemd/system/{before[name][1][0]}.service").exists
        assert not hosts[name].socket(f"tcp://0.0.0.0:{before[name][1][1]}").is_listening
    # the pre-start step ran once for the whole cluster
    proofs = [name for name in APPS if hosts[name].file("/tmp/pre-start-proof").exists]
    assert len(proofs) == 1, proofs
    assert hosts[proofs[0]].file("/tmp/pre-start-proof").content_string.strip() == V9
    # and the clients saw nothing of it
    assert_load_spanned(stats, result, STATE["v1_version"], "2.0.0", baseline)
    # the notifiers heard the start and the success, with the run in their environment; the
    # ones that fail, hang or answer 500 are reported, never printed, and fail nothing
    events = notifier.events()
    assert [e["event"] for e in events] == ["started", "succeeded"], events
    done = events[1]
    assert done["release"] == V9 and done["previous"] == STATE["v1"][APPS[0]], done
    assert done["user"] == "ci-alice" and done["hosts"] == " ".join(APPS) and done["failed_hosts"] == "", done
    assert done["revision"].startswith("sha1:") and done["app_version"] == "2.0.0", done
    STATE["v9_revision"] = done["revision"]
    assert notifier.file.with_name("events.jsonl.env").read_text().split("\n")[:2] == ["started ci-alice", "succeeded ci-alice"]
    assert [p["event"] for p in notifier.posted] == ["started", "succeeded"], "the webhook got the same JSON"
    assert "notifier 3 of fastapi_deploy_notify_commands exited 3" in result.flat
    assert "notifier 4 of fastapi_deploy_notify_commands did not finish within 3s" in result.flat
    assert "fastapi_deploy_notify_webhook_url answered 500" in result.flat
    assert "/broken" not in result.stdout and "echo broken" not in result.stdout, "notifiers are never printed"
    assert all(lock_holder(hosts[name]) == {} for name in APPS), "the lock was given back"


def _backend_files(lb):
    return lb.check_output("cd /etc/nginx/fastapi-backends/hello-api && sha256sum *.conf && grep -h '^server' *.conf")


def test_a_limit_leaves_every_upstream_serving(hosts, lb_ips):
    """After a rollout (each app host now serves on the port it did not serve on at converge):
    `--limit fastapi_servers` (and `--limit <app host>:<one balancer>`) is refused by the check
    play, naming the balancers it leaves out and the fix (the switch would have moved the app
    hosts without them: a full outage reported as success); `--limit <balancer>` runs that
    balancer's part and leaves its entry for each app host as it is (the run that did not know
    their ports wrote them `down`: every request 502), and the other balancer untouched; a
    balancer with no entry for an app host outside the run stops with the reason and writes none."""
    lb = hosts[LB]
    files = {name: _backend_files(hosts[name]) for name in LBS}
    ports = {name: serving(hosts[name])[1] for name in APPS}
    for limit, left_out in (("fastapi_servers", LBS), (f"{APPS[0]}:{LB}", LBS[1:])):
        refused = run_playbook(limit=limit)
        assert refused.returncode != 0
        named = re.search(r"includes the app hosts (.*?) but leaves out the load balancers (.*?):", refused.flat)
        assert named, refused.flat[-3000:]
        assert named.group(1).split(", ") == [a for a in APPS if a in limit or limit == "fastapi_servers"], named.group(0)
        assert named.group(2).split(", ") == left_out, named.group(0)
        assert re.search(rf"--limit '({'|'.join(APPS)}):fastapi_proxies'", refused.flat), refused.flat[-3000:]
        assert "PLAY [Take the deploy lock" not in refused.stdout
    balancer_only = run_playbook(limit=LB)
    assert balancer_only.returncode == 0, balancer_only.stdout[-4000:]
    assert re.search(rf"{LB}\s*: ok=\d+\s+changed=0\b", balancer_only.stdout), balancer_only.stdout[-3000:]
    assert {name: _backend_files(hosts[name]) for name in LBS} == files
    assert {name: serving(hosts[name])[1] for name in APPS} == ports
    for ip in lb_ips:
        assert served(ip) == (set(APPS), {"2.0.0"})
    # a balancer that lacks the entry of an app host outside the run (as a new one would)
    entry = f"/etc/nginx/fastapi-backends/hello-api/{APPS[1]}.conf"
    lb.run(f"mv {entry} /root/entry.keep")
    try:
        unknown = run_playbook(limit=LB)
        assert unknown.returncode != 0
        assert f"{LB} has no entry yet for the app hosts {APPS[1]}, which this run's --limit ({LB}) leaves out" \
            in unknown.flat, unknown.flat[-3000:]
        assert not lb.file(entry).exists, "no entry was guessed"
    finally:
        lb.run(f"mv /root/entry.keep {entry}")
    assert _backend_files(lb) == files[LB] and served(lb_ips[0]) == (set(APPS), {"2.0.0"})


def test_broken_release_stops_the_rollout_at_the_first_host(hosts, url, lb_ip, tmp_path_factory, notifier, baseline):
    broken = app_copy(tmp_path_factory, "v3", '\nraise RuntimeError("v3 cannot start")\n')
    before = set(releases(hosts[APPS[0]]))
    units_before = {name: _units(hosts[name]) for name in APPS}
    pid_before = {name: _main_pid(hosts[name]) for name in APPS}
    notifier.clear()
    result, stats, watchers = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={broken}", "-e", "fastapi_app_version=3.0.0", "-e", f"fastapi_app_release_id={V10}",
        "-e", "fastapi_deploy_serial=1", "-e", "fastapi_service_health_timeout=6", *notifier.args())
    first, second = APPS
    assert result.returncode != 0
    assert f"stopped at {first} (not switched: the previous instance serves on, untouched)" in result.flat, result.flat[-6000:]
    assert f"Hosts not yet switched keep the previous release: {second}." in result.flat
    assert f"failed its health check on {first}" in result.flat
    assert "RuntimeError: v3 cannot start" in result.flat, "the app's own error, from the new instance's journal"
    # failed where it failed, once: not again from a balancer as if the host had been lost
    assert "could not be reached" not in result.flat
    assert all(re.search(rf"{lb}\s*: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0\b", result.stdout) for lb in LBS), \
        result.stdout[-3000:]
    candidate_port = 8001 if units_before[first][1][1] == 8000 else 8000
    assert "/health did not answer 200 within 6s" in result.flat and f":{candidate_port}/health" in result.flat
    assert "Last lines of 'journalctl -u hello-api-" in result.flat
    # the balancers' view of both hosts never changed, nor their unit files (the new instance's
    # removed) or serving instance, nor its process
    _assert_unmoved(watchers)
    assert {name: _units(hosts[name]) for name in APPS} == units_before
    assert {name: _main_pid(hosts[name]) for name in APPS} == pid_before
    assert _releases_now(hosts) == {name: V9 for name in APPS}
    assert served(lb_ip) == (set(APPS), {"2.0.0"})
    assert "3.0.0" not in stats["versions"], stats
    assert_load_spanned(stats, result, "2.0.0", "2.0.0", baseline)
    # the release is known failed on every host, the second one (which never ran it) included
    assert sorted(set(releases(hosts[first])) - before) == [V10]
    assert "did not become healthy" in hosts[first].file(f"{ROOT}/releases/{V10}/FAILED").content_string
    assert f"Release {V10} failed its health check on {first}" in hosts[second].file(f"{ROOT}/releases/{V10}/FAILED").content_string
    # the notifiers heard the start and the failure, with the reason; the lock was given back
    events = notifier.events()
    assert [e["event"] for e in events] == ["started", "failed"], events
    assert events[1]["release"] == V10 and events[1]["failed_hosts"] == first, events[1]
    assert f"failed its health check on {first}" in events[1]["result"], events[1]
    assert [p["event"] for p in notifier.posted] == ["started", "failed"]
    assert all(lock_holder(hosts[name]) == {} for name in APPS)


def test_a_build_failing_on_one_host_ends_the_run_on_every_host(hosts, url, lb_ip, tmp_path_factory, notifier):
    """The release cannot be made on the second app host (a directory of its id is already
    there: releases are never overwritten), while the first builds it: no host switches, the
    balancer's view does not change, no serving process is touched, the first host is not
    counted as failed but still finishes (its lock given back, its log saying why it did not
    switch), the second logs the failure, and the notifiers hear it. (Under any_errors_fatal the
    first host was failed too and left out of the finish: its lock stayed.) No load: nothing
    that serves moves here, which the balancer's view and the main PIDs show. The pre-start
    steps (a migration) never run: a host could not build the release."""
    first, second = APPS
    blocked = f"v11-{TAG}"
    proof = f"/tmp/pre-start-{blocked}"
    hosts[second].run(f"mkdir -p {ROOT}/releases/{blocked}")
    units_before = {name: _units(hosts[name]) for name in APPS}
    pid_before = {name: _main_pid(hosts[name]) for name in APPS}
    version = served(lb_ip)[1].pop()
    notifier.clear()
    try:
        result, _, watchers = _deploy_watched(
            hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v11')}", "-e", "fastapi_app_version=11.0.0",
            "-e", f"fastapi_app_release_id={blocked}", *notifier.args(),
            "-e", json.dumps({"fastapi_app_pre_start_commands": [f"touch {proof}"]}), load=False)
    finally:  # neither the half-made release nor the obstacle stays for the next tests
        for name in APPS:
            hosts[name].run(f"rm -rf {ROOT}/releases/{blocked}")
    assert result.returncode != 0
    assert f"The deploy stopped while preparing {second}" in result.flat, result.flat[-6000:]
    assert f"Release {blocked} already exists" in result.flat
    assert not any(hosts[name].file(proof).exists for name in APPS), "the pre-start steps ran for a release not built everywhere"
    _assert_unmoved(watchers)
    assert {name: _units(hosts[name]) for name in APPS} == units_before
    assert {name: _main_pid(hosts[name]) for name in APPS} == pid_before
    assert served(lb_ip) == (set(APPS), {version})
    assert all(lock_holder(hosts[name]) == {} for name in APPS), "every lock given back"
    ends = {name: _last_end(hosts[name]) for name in APPS}
    assert ends[second]["result"] == "failed" and "already exists" in ends[second]["reason"], ends[second]
    assert ends[first]["result"] == f"not switched (the run stopped at {second})", ends[first]
    events = notifier.events()
    assert [e["event"] for e in events] == ["started", "failed"], events
    assert events[1]["failed_hosts"] == second, events[1]


def test_a_pre_start_step_failing_ends_the_run_on_every_host(hosts, lb_ip, tmp_path_factory, notifier):
    """The pre-start steps (migrations) run once for the fleet, on one app host, after every
    host built the release and before any switch: a step that fails there switches no host,
    touches no serving process and no balancer, marks the release failed on both hosts, gives
    every lock back, and each host logs why; the notifiers hear it. No load: nothing that
    serves moves (the balancers' files and the main PIDs show it)."""
    release = f"v14-{TAG}"
    units_before = {name: _units(hosts[name]) for name in APPS}
    pid_before = {name: _main_pid(hosts[name]) for name in APPS}
    files = {name: _backend_files(hosts[name]) for name in LBS}
    version = served(lb_ip)[1].pop()
    notifier.clear()
    try:
        result = run_playbook(
            "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v14')}", "-e", "fastapi_app_version=14.0.0",
            "-e", f"fastapi_app_release_id={release}", *notifier.args(),
            "-e", json.dumps({"fastapi_app_pre_start_commands": ["echo migrating", "echo 'no such table' >&2; exit 3"]}))
        marks = {name: hosts[name].run(f"cat {ROOT}/releases/{release}/FAILED").stdout for name in APPS}
    finally:  # the failed release does not stay for the next tests (retention, the listing)
        for name in APPS:
            hosts[name].run(f"rm -rf {ROOT}/releases/{release}")
    assert result.returncode != 0
    assert "pre-start step 2: echo 'no such table' >&2; exit 3 failed (exit code 3)" in result.flat, result.flat[-6000:]
    assert "no such table" in result.flat and "could not be reached" not in result.flat
    assert {name: _units(hosts[name]) for name in APPS} == units_before
    assert {name: _main_pid(hosts[name]) for name in APPS} == pid_before
    assert {name: _backend_files(hosts[name]) for name in LBS} == files
    assert served(lb_ip) == (set(APPS), {version})
    # known failed on both; the step ran on the first app host, which logs the failure, the
    # other that the run stopped there
    first, second = APPS
    assert all("pre-start step 2" in marks[name] for name in APPS), marks
    ends = {name: _last_end(hosts[name]) for name in APPS}
    assert all(ends[name]["release"] == release for name in APPS), ends
    assert ends[first]["result"] == "failed" and ends[second]["result"] == f"not switched (the run stopped at {first})", ends
    assert all(lock_holder(hosts[name]) == {} for name in APPS), "every lock given back"
    events = notifier.events()
    assert [e["event"] for e in events] == ["started", "failed"], events
    assert events[1]["failed_hosts"] == first and "pre-start step 2" in events[1]["result"], events[1]


HELPER = "/usr/local/lib/fastapi-deploy/nginx-reload-and-wait"


def test_a_reload_failing_on_the_second_balancer_points_both_back_first(hosts, url, lb_ip, tmp_path_factory, baseline):
    """The second balancer's reload succeeds but its helper then reports a failure (as when it
    times out waiting for the new workers): both balancers already send the first host's
    requests to the new instance. The rollout stops there, and every balancer is pointed back at
    the old instance (and reloaded) before the new one is removed: on each, that host's upstream
    went old, new, old; no upstream attempt failed (none reached a closed port), and the host
    serves from the same process. (The helper fails once: installed after the balancers' own
    setup, during the build.)"""
    first, second = APPS
    release = f"v12-{TAG}"
    units_before = {name: _units(hosts[name]) for name in APPS}
    pid_before = {name: _main_pid(hosts[name]) for name in APPS}
    version = served(lb_ip)[1].pop()
    failing = LBS[-1]
    lb = hosts[failing]
    lb.run("rm -f /run/reload-failed-once")

    def fail_the_next_reload_once(future, _watchers):
        while not future.done() and not hosts[first].file(f"{ROOT}/releases/{release}").exists:
            time.sleep(0.2)
        wrapper = ('#!/bin/sh\n"$0.real" "$@" || exit $?\n[ -e /run/reload-failed-once ] && exit 0\n'
                   'touch /run/reload-failed-once\necho "injected: the new workers did not start in time" >&2\nexit 1\n')
        lb.run(f"cp -p {HELPER} {HELPER}.real")
        subprocess.run(["podman", "exec", "-i", failing, "sh", "-c", f"cat > {HELPER}.new && chmod 0755 {HELPER}.new && mv -f {HELPER}.new {HELPER}"],
                       input=wrapper, text=True, check=True)

    try:
        result, stats, watchers = _deploy_watched(
            hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v12')}", "-e", "fastapi_app_version=12.0.0",
            "-e", f"fastapi_app_release_id={release}", "-e", "fastapi_deploy_serial=1", during=fail_the_next_reload_once)
    finally:  # the real helper back; no release of this run stays for the next tests
        lb.run(f"[ -e {HELPER}.real ] && mv -f {HELPER}.real {HELPER}; rm -f /run/reload-failed-once")
        for name in APPS:
            hosts[name].run(f"rm -rf {ROOT}/releases/{release}")
    assert result.returncode != 0
    assert "injected: the new workers did not start in time" in result.flat, result.flat[-6000:]
    assert f"stopped at {first}" in result.flat
    old_port = units_before[first][1][1]
    for watcher in watchers:
        ports = watcher.ports(first)
        assert len(ports) == 3 and ports[0] == ports[2] == old_port != ports[1], watcher.moves
        assert len(watcher.moves[second]) == 1 and watcher.seen_down == set(), vars(watcher)
    assert watchers[0].moved_at[first][1] < watchers[-1].moved_at[first][2], "the first balancer had moved"
    assert {name: _units(hosts[name]) for name in APPS} == units_before
    assert {name: _main_pid(hosts[name]) for name in APPS} == pid_before
    assert_load_spanned(stats, result, version, version, baseline)
    assert "12.0.0" in stats["versions"], "the new instance served while the balancers sent to it"
    assert all(lock_holder(hosts[name]) == {} for name in APPS)


def test_deploy_log_and_releases_in_time_order(hosts):
    """releases.yml: each host's releases newest first by creation time (V10 before V9 although
    'v9' > 'v10' by name), V10 failed there; the fleet's deploy log with the failed and the good
    deploy, each with its revision and each host's result."""
    first, second = APPS
    result = run_playbook(playbook="releases.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    out = result.stdout
    for name in APPS:
        listing = out[out.index(f"Releases on {name}"):]
        assert listing.index(f" {V10}  created") < listing.index(f"* {V9}  created"), listing[:1500]
    v10_lines = [line for line in out.splitlines() if f" {V10}  created" in line]
    assert len(v10_lines) == 2 and all("  FAILED: " in line for line in v10_lines), v10_lines
    log = result.flat
    failed_run = log[log.index(f"deploy of release {V10}"):]
    assert failed_run.startswith(f"deploy of release {V10} (revision sha1:"), failed_run[:300]
    assert f"failed on {first}" in failed_run[:400]
    assert f"{first}: failed (before: {V9}): The rollout of release {V10} stopped at {first}" in failed_run
    assert f"{second}: not switched (the run stopped at {first}) (before: {V9})" in failed_run
    good_run = log[log.index(f"deploy of release {V9}"):]
    assert good_run.startswith(f"deploy of release {V9} (revision {STATE['v9_revision']}, app 2.0.0"), good_run[:300]
    assert "by ci-alice@" in good_run[:400] and ": succeeded" in good_run[:500]
    assert log.index(f"deploy of release {V10}") < log.index(f"deploy of release {V9}"), "newest first"
    # the log on each host: a start and an end record per run, appended
    records = [r for r in deploy_log(hosts[second]) if r.get("release") == V10 or r.get("run") in
               {x["run"] for x in deploy_log(hosts[second]) if x.get("release") == V10}]
    assert [r["event"] for r in records] == ["start", "end"], records
    assert records[1]["result"].startswith("not switched") and records[1]["revision"].startswith("sha1:")


PORT = 8010
GREETING = "Hello, switched"


def test_two_hosts_at_once_change_everything_while_a_request_is_slow_and_a_deploy_refused(
        hosts, url, lb_ip, tmp_path_factory, baseline):
    """fastapi_deploy_serial=100% (a percentage): one batch, both hosts switch together, each
    serving on its old instance until its new one is healthy, so no request waits either. The
    deploy changes the code, the port (8000 to 8010), the workers (2 to 3), an environment value
    and the graceful shutdown at once (a new instance starts whenever the unit files it would run
    differ, whatever the setting: fastapi_service's candidate.yml), under load with a keep-alive
    client. Meanwhile a request to the first host's serving instance, sent once its new instance
    is healthy and held until every balancer has moved to the new one, is answered by the old
    release: the old instance stops only once it is answered. A second deploy started meanwhile
    is refused by the deploy lock, saying who holds it and why, and changes nothing; the first
    finishes."""
    first = APPS[0]
    before = {name: _units(hosts[name]) for name in APPS}
    old_unit, old_port = before[first][1]
    new_port = PORT + 1 if old_port == PORT else PORT
    seen, slow = {}, {}

    def second_deploy(deploy):
        deadline = time.time() + 120
        while not lock_holder(hosts[APPS[1]]) and time.time() < deadline and not deploy.done():
            time.sleep(0.3)
        seen["holder"] = lock_holder(hosts[APPS[1]])
        seen["result"] = run_playbook("-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'other')}",
                                      "-e", json.dumps({"fastapi_deploy_message": "someone else"}))
        seen["first_done"] = deploy.done()

    def hold_a_slow_request(deploy, watchers):
        # sent once the new instance answers its health check (the balancers move after it) and
        # held until every balancer's watcher has seen the host's upstream move to the new port:
        # in progress on the old instance while they move, ended by the test whatever the load
        host, flag = hosts[first], f"held-{TAG}"
        deadline = time.monotonic() + 300
        while (time.monotonic() < deadline and not deploy.done()
               and host.run(f"curl -sf -m 1 http://127.0.0.1:{new_port}/health").rc != 0):
            time.sleep(0.2)

        def release_once_the_balancers_moved():
            while (time.monotonic() < deadline and not deploy.done()
                   and not all(w.ports(first)[-1:] == [new_port] for w in watchers)):
                time.sleep(0.1)
            slow["released"] = time.time()
            host.run(f"touch /var/lib/hello-api/{flag}")

        releaser = threading.Thread(target=release_once_the_balancers_moved)
        slow["sent"] = time.time()
        releaser.start()
        slow["status"], slow["body"] = http_get(host, f"/held?name={flag}", port=old_port, timeout=150)
        slow["answered"] = time.time()
        releaser.join(timeout=60)
        host.run(f"rm -f /var/lib/hello-api/{flag}")

    def during(deploy, watchers):
        sides = [threading.Thread(target=second_deploy, args=(deploy,)),
                 threading.Thread(target=hold_a_slow_request, args=(deploy, watchers))]
        for side in sides:
            side.start()
        for side in sides:
            side.join(timeout=600)

    env = {"fastapi_app_environment": {"APP_VERSION": "{{ fastapi_app_version }}", "GREETING": GREETING}}
    result, stats, watchers = _deploy_watched(
        hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v4')}", "-e", "fastapi_app_version=4.0.0",
        "-e", "fastapi_deploy_serial=100%", "-e", f"fastapi_app_release_id={HOTFIX1}",
        "-e", f"fastapi_service_port={PORT}", "-e", "fastapi_service_workers=3", "-e", json.dumps(env),
        "-e", "fastapi_service_timeout_graceful_shutdown=12", "-e", "fastapi_service_timeout_stop_sec=15",
        "-e", json.dumps({"fastapi_deploy_message": "hotfix for #1234"}), env=ansible_env(FASTAPI_DEPLOY_USER="ci-bob"),
        keep_alive=1, during=during)
    assert result.returncode == 0, result.stdout[-6000:]
    # the second deploy: refused while the first ran, before any host changed
    refused = seen["result"]
    assert seen["holder"].get("user") == "ci-bob", seen
    assert refused.returncode != 0 and not seen["first_done"], "refused while the first deploy ran"
    assert "is held by ci-bob@" in refused.flat and "'hotfix for #1234'" in refused.flat, refused.flat[-3000:]
    assert "Nothing was changed by this run" in refused.flat
    assert "Wait until it ends" in refused.flat and "that run is gone" not in refused.flat
    assert "PLAY [Put nginx in front" not in refused.stdout, "stopped before any host changed"
    # one batch; each host moved once to its new instance on the new port; the old ones gone
    assert result.stdout.count("TASK [Check that the app host can be reached before its switch]") == 1, "one batch of two hosts"
    _assert_moved_once_each(watchers, before, hosts, ports=(PORT, PORT + 1))
    for name in APPS:
        old_unit_h, old_port_h = before[name][1]
        assert not hosts[name].file(f"/etc/systemd/system/{old_unit_h}.service").exists
        assert hosts[name].run(f"curl -s -m 2 http://127.0.0.1:{old_port_h}/health").rc != 0, "the old port is silent"
        assert len(worker_pids(hosts[name], "hello-api")) == 3
    assert _releases_now(hosts) == {name: HOTFIX1 for name in APPS}
    assert served(lb_ip) == (set(APPS), {"4.0.0"})
    for _ in range(len(APPS) * 3):
        assert https_json(lb_ip)[0]["greeting"] == GREETING
    # the held request: sent before any balancer moved, answered by the old instance after all had
    assert slow.get("status") == 200, slow
    answer = json.loads(slow["body"])
    assert answer["released"] and answer["version"] == "2.0.0", ("answered by the old instance", slow)
    assert all(slow["sent"] < w.moved_at[first][-1] < slow["released"] < slow["answered"] for w in watchers), (
        "in progress on the old instance while every balancer moved", slow, [w.moved_at[first] for w in watchers])
    assert_load_spanned(stats, result, "2.0.0", "4.0.0", baseline)
    assert all(lock_holder(hosts[name]) == {} for name in APPS), "the first deploy gave its lock back"


def test_rollback_chooses_one_release_for_the_fleet_under_load(hosts, url, lb_ip, lb_ips, notifier, baseline):
    """rollback.yml with no release named: the newest release good on every host older than
    the one serving (HOTFIX1), by time, is V9 (V10 failed on the first host and is known failed
    on both), for every host, under load, one host at a time like a deploy, failing no request.
    The app's port stays where HOTFIX1 put it (8010, given again: rollback.yml does not run the
    firewall role, which guards the app's ports); the workers go back to the inventory's 2.
    With fastapi_app_keep_releases=2, retention keeps the good releases: the current one (V9),
    HOTFIX1 (newer than current), the rollback target (the release before V9), and removes the
    failed V10 and every virtualenv no kept release uses."""
    before = {name: _units(hosts[name]) for name in APPS}
    notifier.clear()
    result, stats, watchers = _deploy_watched(hosts, url, "-e", "fastapi_app_keep_releases=2", *notifier.args(),
                                             "-e", f"fastapi_service_port={PORT}", playbook="rollback.yml")
    assert result.returncode == 0, result.stdout[-6000:]
    assert _releases_now(hosts) == {name: V9 for name in APPS}
    assert served(lb_ip) == (set(APPS), {"2.0.0"})
    assert result.stdout.count("TASK [Check that the app host can be reached before its switch]") == 2, "two batches of one host"
    first_moved, second_moved = _assert_moved_once_each(watchers, before, hosts, ports=(PORT, PORT + 1))
    assert first_moved[1] < second_moved[0]
    assert all(len(worker_pids(hosts[name], "hello-api")) == 2 for name in APPS)
    # the settings a deploy computes from facts: the balancers are trusted for X-Forwarded-*
    for name in APPS:
        unit = hosts[name].file(f"/etc/systemd/system/{serving(hosts[name])[0]}.service").content_string
        trusted = re.search(r"--forwarded-allow-ips (\S+)", unit)
        assert trusted and set(lb_ips) <= set(trusted.group(1).split(",")), unit
    assert_load_spanned(stats, result, "4.0.0", "2.0.0", baseline)
    events = notifier.events()
    assert [e["event"] for e in events] == ["started", "rolled_back"], events
    assert events[1]["release"] == V9 and events[1]["previous"] == HOTFIX1 and events[1]["action"] == "rollback"
    for name in APPS:
        kept = set(releases(hosts[name]))
        assert kept == {STATE["v1"][name], V9, HOTFIX1}, (name, kept)
        used = {hosts[name].file(f"{ROOT}/releases/{r}/venv").linked_to for r in kept}
        venvs = {f"{ROOT}/venvs/{v}" for v in hosts[name].check_output(f"ls -1 {ROOT}/venvs").split()}
        assert venvs == used, name
        end = _last_end(hosts[name])
        assert (end["action"], end["result"], end["release"], end["previous"]) == ("rollback", "rolled back", V9, HOTFIX1)


def test_a_new_app_host_joins_without_a_dead_backend(hosts, url, lb_ip, baseline):
    """An app host that serves nothing yet (as a new host added to the inventory: here the
    second one, its instance and the record of it removed, and the balancers' entries for it) is
    in each balancer as `down` until its first instance serves; the other host serves every
    request meanwhile, none fails, and no upstream attempt goes to the new host before it serves."""
    first, second = APPS
    unit, _ = serving(hosts[second])
    for lb in LBS:
        hosts[lb].check_output(f"rm /etc/nginx/fastapi-backends/hello-api/{second}.conf && nginx -t -q && systemctl reload nginx")
    hosts[second].check_output(
        f"systemctl disable --now {unit}.socket {unit}.service && rm -f /etc/systemd/system/{unit}.* "
        f"/var/lib/fastapi-deploy/hello-api.serving && systemctl daemon-reload")
    (before,) = served(lb_ip)[1]
    after = SANDBOX_VARS["fastapi_app_version"]  # the converged settings are deployed
    result, stats, watchers = _deploy_watched(hosts, url, "-e", "fastapi_deploy_serial=100%")
    assert result.returncode == 0, result.stdout[-6000:]
    for each in watchers:
        moves = each.moves[second]
        assert " down;" in moves[0] or " down;" in moves[1], moves  # down until it served
        assert " down" not in moves[-1] and each.ports(second)[-1] == 8000, moves
    assert serving(hosts[second]) == ("hello-api-a", 8000)
    assert served(lb_ip) == (set(APPS), {after})
    assert_load_spanned(stats, result, before, after, baseline)



def test_an_app_host_lost_in_its_own_switch_ends_the_run_with_the_others_finished(
        hosts, url, lb_ips, tmp_path_factory, notifier, baseline):
    """One host at a time, under load through both balancers: the first app host switches; then,
    once the second one's new instance exists, the second can no longer be reached over SSH (its
    sshd stopped and its sessions cut, as a network partition between the controller and the
    host would leave it; the app on it serves on). Its switch is the run's failure: its serving
    instance serves on, untouched, and both balancers keep sending to it; the first host keeps
    the new release (it switched and is healthy). With Ansible's `serial`, a batch whose only
    host drops out ended the playbook there: here the finish runs on every host it can reach
    (the first host's lock given back, its log saying how the run ended), the notifiers hear
    the failure with the lost host, and the run fails naming it and the lock it could not give
    back, which lock.yml releases once the host is back. The next deploy (the `converged`
    fixture, when the module runs again) finds the new instance the lost run left and removes it."""
    first, second = APPS
    before = {name: _units(hosts[name]) for name in APPS}
    pid_second = _main_pid(hosts[second])
    serving_second = before[second][1][0]
    candidate_second = f"hello-api-{'b' if serving_second.endswith('-a') else 'a'}"
    release = f"v13-{TAG}"
    old = {name: current_release(hosts[name]) for name in APPS}
    (version,) = served(lb_ips[0])[1]  # what the fleet serves now, whichever test ran before
    notifier.clear()

    def cut_the_second_host_in_its_switch(deploy, _watchers):
        while not deploy.done() and not hosts[second].file(f"/etc/systemd/system/{candidate_second}.service").exists:
            time.sleep(0.2)
        console(second).run("systemctl stop ssh.socket ssh.service; pkill -x sshd; pkill -f '^sshd'; true")
        end_shared_connection(second)

    try:
        result, stats, watchers = _deploy_watched(
            hosts, url, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v13')}", "-e", "fastapi_app_version=13.0.0",
            "-e", f"fastapi_app_release_id={release}", "-e", "fastapi_deploy_serial=1", *notifier.args(),
            during=cut_the_second_host_in_its_switch)
        lost_lock = lock_holder(console(second))
    finally:
        console(second).run("systemctl start ssh.service")
    assert result.returncode != 0
    assert f"The run failed on {second}, which could not be reached to finish there: its deploy lock may still be held" \
        in result.flat, result.flat[-6000:]
    assert f"{second} dropped out of the run while switching to the new release" in result.flat
    assert "PLAY [Finish" in result.stdout
    # the first host switched and serves the new release; the second serves on, untouched
    assert current_release(hosts[first]) == release and serving(hosts[first]) != before[first][1]
    assert serving(hosts[second]) == before[second][1] and current_release(hosts[second]) == old[second]
    assert _main_pid(hosts[second]) == pid_second
    for watcher in watchers:
        assert watcher.ports(first) == [before[first][1][1], serving(hosts[first])[1]], watcher.moves
        assert len(watcher.moves[second]) == 1 and watcher.seen_down == set(), vars(watcher)
    for ip in lb_ips:
        assert served(ip)[0] == set(APPS)
    assert_load_spanned(stats, result, version, "13.0.0", baseline)
    # the finish ran where it could: the first host's lock given back, its log, the notifiers
    assert lock_holder(hosts[first]) == {}
    end = _last_end(hosts[first])
    assert end["release"] == release and end["result"] == "served", end
    events = notifier.events()
    assert [e["event"] for e in events] == ["started", "failed"], events
    assert events[1]["failed_hosts"] == second, events[1]
    # the lost host's lock is the killed-run kind: held until released by hand
    assert lost_lock.get("playbook") == "deploy.yml", lost_lock
    released = release_lock()
    assert released.returncode == 0 and lock_holder(hosts[second]) == {}, released.stdout[-3000:]


def test_an_unreachable_balancer_ends_the_run_before_any_app_host_changes(hosts, lb_ips, tmp_path_factory, notifier):
    """The second balancer cannot be reached over SSH when a deploy starts (its sshd stopped: a
    network partition between the controller and it; its nginx serves on). The run stops before
    any app host changes: no balancer's view of an app host moves, each app host serves what it
    served, with the same process; the finish runs on the app hosts (locks given back, the end
    logged, the failure notified) and the run fails naming the balancer."""
    lb2 = LBS[1]
    before = {name: (_units(hosts[name]), _main_pid(hosts[name]), current_release(hosts[name])) for name in APPS}
    notifier.clear()
    console(lb2).run("systemctl stop ssh.socket ssh.service; pkill -x sshd; pkill -f '^sshd'; true")
    end_shared_connection(lb2)
    try:
        result, _, watchers = _deploy_watched(
            hosts, None, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v14')}", "-e", "fastapi_app_version=14.0.0",
            *notifier.args(), load=False)
    finally:
        console(lb2).run("systemctl start ssh.service")
    assert result.returncode != 0
    assert f"{lb2} dropped out of the run while setting up the load balancer" in result.flat, result.flat[-6000:]
    assert "PLAY [Finish" in result.stdout
    _assert_unmoved(watchers)
    for name in APPS:
        assert (_units(hosts[name]), _main_pid(hosts[name]), current_release(hosts[name])) == before[name], name
        assert lock_holder(hosts[name]) == {}, "the lock was given back"
        assert _last_end(hosts[name])["result"] != "served", _last_end(hosts[name])
    for ip in lb_ips:
        assert served(ip)[0] == set(APPS)
    events = notifier.events()
    assert [e["event"] for e in events] == ["started", "failed"], events
