"""Releases, zero-downtime switches, health-gated rollback, pre-start steps, rollback.yml.

The tests run in order on the converged host, each starting from the state the one before
left: v1 (converge) -> v2 (code-only, under load) -> broken v3 (rolled back, under load) ->
v4 with a failing pre-start step -> rollback to v1 -> named rollback to v2 -> pruning.
"""

import json

import pytest

from conftest import Load, app_copy, current_release, http_json, main_pid, run_playbook, sandbox_applied

ROOT = "/srv/fastapi"
STATE = {}


def _releases(host):
    return sorted(host.check_output(f"ls -1 {ROOT}/releases").split())


def test_first_release_layout(host, svars):
    release = current_release(host)
    STATE["v1"] = release
    assert host.file(f"{ROOT}/current").is_symlink
    assert host.file(f"{ROOT}/releases/{release}/app/main.py").exists
    venv = host.file(f"{ROOT}/releases/{release}/venv")
    assert venv.is_symlink and venv.linked_to.startswith(f"{ROOT}/venvs/")
    info = json.loads(host.file(f"{ROOT}/releases/{release}/release.json").content_string)
    assert info["id"] == release
    assert info["fastapi_version"] == svars["fastapi_app_fastapi_version"]
    assert info["app_version"] == "1.0.0"
    env = host.file(f"{ROOT}/releases/{release}/app.env")
    assert (env.user, env.group, env.mode) == ("root", "fastapi", 0o640)
    assert "WorkingDirectory=/srv/fastapi/current/app" in host.file(
        f"/etc/systemd/system/{svars['fastapi_service_name']}.service").content_string


def test_code_only_redeploy_under_load(host, instance, svars, tmp_path_factory):
    venv_before = host.file(f"{ROOT}/releases/{STATE['v1']}/venv").linked_to
    load = Load(host, instance)
    result = run_playbook(
        instance, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v2')}", "-e", "fastapi_app_version=2.0.0",
        "-e", json.dumps({"fastapi_app_pre_start_commands": [
            'echo "$FASTAPI_RELEASE_ID $APP_VERSION $(id -un) $(pwd)" > /tmp/pre-start-proof']}))
    stats = load.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    v2 = current_release(host)
    STATE["v2"] = v2
    assert v2 != STATE["v1"]
    assert http_json(host, "/")["version"] == "2.0.0"
    # the pre-start step ran once, in the new release, as the app user, with its environment
    assert host.file("/tmp/pre-start-proof").content_string.split() == [
        v2, "2.0.0", "fastapi", f"{ROOT}/releases/{v2}/app"]
    # same requirements: the virtualenv was reused, not reinstalled
    assert host.file(f"{ROOT}/releases/{v2}/venv").linked_to == venv_before
    assert len(host.check_output(f"ls -1 {ROOT}/venvs").split()) == 1
    assert stats["failed"] == 0, stats
    assert stats["requests"] > 1000, stats
    assert set(stats["versions"]) == {"1.0.0", "2.0.0"}, stats
    # the summary names the release, and warns if (and only if) systemd did not sandbox the app
    summary = " ".join(result.stdout.split())
    assert f"serves http://127.0.0.1:8000/ (loopback only: clients go through the load balancer) (release {v2}," in summary
    pid = main_pid(host, svars["fastapi_service_name"])
    assert ("WARNING: systemd did not apply the sandbox" in summary) == (not sandbox_applied(host, pid)), summary


def test_broken_release_is_rolled_back_under_load(host, instance, tmp_path_factory):
    broken = app_copy(tmp_path_factory, "v3", '\nraise RuntimeError("v3 cannot start")\n')
    load = Load(host, instance)
    result = run_playbook(instance, "-e", f"fastapi_app_src={broken}", "-e", "fastapi_app_version=3.0.0",
                          "-e", "fastapi_service_health_timeout=10")
    stats = load.stop()
    out = " ".join((result.stdout + result.stderr).split())
    v3 = [r for r in _releases(host) if r not in (STATE["v1"], STATE["v2"])]
    assert len(v3) == 1
    STATE["v3"] = v3[0]
    assert result.returncode != 0
    assert f"Release {STATE['v3']} failed its health check on {instance}" in out
    assert "did not answer 200 within 10s (last answer:" in out
    assert f"Rolled back: release {STATE['v2']} is current and serves again." in out
    assert "RuntimeError: v3 cannot start" in out, "the unit's journal lines"
    assert current_release(host) == STATE["v2"]
    assert http_json(host, "/")["version"] == "2.0.0"
    assert host.file(f"{ROOT}/releases/{STATE['v3']}/FAILED").exists, "kept, marked failed"
    assert stats["failed"] == 0, stats
    assert "3.0.0" not in stats["versions"], stats


def test_failing_pre_start_step_switches_nothing(host, instance, tmp_path_factory):
    result = run_playbook(
        instance, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v4')}", "-e", "fastapi_app_version=4.0.0",
        "-e", json.dumps({"fastapi_app_pre_start_commands": ["echo migrating", "echo boom >&2; exit 3"]}))
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "pre-start step 2: echo boom >&2; exit 3 failed (exit code 3)" in out
    assert f"Nothing was switched: the current release ({STATE['v2']}) still serves" in out
    assert current_release(host) == STATE["v2"]
    assert http_json(host, "/")["version"] == "2.0.0"
    v4 = [r for r in _releases(host) if r not in (STATE["v1"], STATE["v2"], STATE["v3"])]
    assert len(v4) == 1 and host.file(f"{ROOT}/releases/{v4[0]}/FAILED").exists
    STATE["v4"] = v4[0]


def _rollback(instance, *args):
    return run_playbook(instance, *args, playbook="rollback.yml")


def test_rollback_to_previous_release(host, instance):
    result = _rollback(instance)
    assert result.returncode == 0, result.stdout + result.stderr
    # the failed v3 and v4 are never picked: v2 -> v1
    assert current_release(host) == STATE["v1"]
    assert http_json(host, "/")["version"] == "1.0.0", "the release's own environment came back too"
    assert "<- current" in result.stdout


def test_rollback_to_named_release(host, instance):
    result = _rollback(instance, "-e", f"fastapi_service_rollback_to={STATE['v2']}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert current_release(host) == STATE["v2"]
    assert http_json(host, "/")["version"] == "2.0.0"


@pytest.mark.parametrize("name,words", [
    ("20000101T000000Z", "release '20000101T000000Z' does not exist on"),
    ("v3", "is marked failed and is never served again"),
])
def test_rollback_refuses_missing_or_failed_release(host, instance, name, words):
    name = STATE.get(name, name)
    result = _rollback(instance, "-e", f"fastapi_service_rollback_to={name}")
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert words in out
    assert "fastapi_service_rollback_to" in out
    assert current_release(host) == STATE["v2"]


def test_releases_playbook_lists_them(host, instance):
    result = run_playbook(instance, playbook="releases.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"* {STATE['v2']}" in result.stdout
    assert f"{STATE['v3']}" in result.stdout and "FAILED" in result.stdout


def test_pruning_keeps_the_newest_releases(host, instance, tmp_path_factory):
    result = run_playbook(instance, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v5')}",
                          "-e", "fastapi_app_version=5.0.0", "-e", "fastapi_app_keep_releases=2")
    assert result.returncode == 0, result.stdout + result.stderr
    releases = _releases(host)
    assert len(releases) == 2, releases
    assert current_release(host) == releases[-1]
    used = {host.file(f"{ROOT}/releases/{r}/venv").linked_to for r in releases}
    venvs = {f"{ROOT}/venvs/{v}" for v in host.check_output(f"ls -1 {ROOT}/venvs").split()}
    assert venvs == used
    again = run_playbook(instance, "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v5')}",
                         "-e", "fastapi_app_version=5.0.0", "-e", "fastapi_app_keep_releases=2")
    assert again.returncode == 0
    assert "changed=0" in again.stdout, "a second run of the same release changes nothing"


def test_deploy_from_git(host, instance):
    """The code can come from a git repository and ref instead of a directory."""
    made = host.run(
        "set -e; rm -rf /tmp/gitsrc /srv/git; mkdir -p /srv/git; cp -r /srv/fastapi/current/app /tmp/gitsrc;"
        " cd /tmp/gitsrc; echo v6 > RELEASE_NOTE; git init -q -b main; git add -A;"
        " git -c user.email=test@example.com -c user.name=test commit -qm v6;"
        " git clone -q --bare /tmp/gitsrc /srv/git/hello.git; git rev-parse HEAD")
    assert made.rc == 0, made.stderr
    commit = made.stdout.strip()
    result = run_playbook(instance, "-e", "fastapi_app_src=", "-e", "fastapi_app_git_repo=/srv/git/hello.git",
                          "-e", "fastapi_app_git_version=main", "-e", "fastapi_app_version=6.0.0")
    assert result.returncode == 0, result.stdout + result.stderr
    release = current_release(host)
    info = json.loads(host.file(f"{ROOT}/releases/{release}/release.json").content_string)
    assert info["source"] == f"/srv/git/hello.git@{commit}"
    assert host.file(f"{ROOT}/releases/{release}/app/RELEASE_NOTE").content_string.strip() == "v6"
    assert not host.file(f"{ROOT}/releases/{release}/app/.git").exists, "an export, not a checkout"
    assert http_json(host, "/")["version"] == "6.0.0"
