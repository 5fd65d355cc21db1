"""Releases, zero-downtime switches, health-gated rollback, pre-start steps, rollback.yml.

The tests run in order, each on the state the one before left, starting from whatever
release serves when the module starts (v1: the converged settings): v2 (code-only, under
load) -> v4 with a failing pre-start step -> rollback to v1 under load -> named rollback to v2
(by the former variable name) -> refusals -> a release from git (its commit in release.json and
the deploy log), keeping 2 releases: v2 stays, v1 and the failed v4 go. When the module ends,
the next module starts from the converged state again (the `restore` fixture). A release that
fails its health check: test_default.py (one host, the serving process untouched) and the
cluster's test_rollout.py (a fleet, under load).
"""

import json
import uuid

import pytest

from deploytest import (ROOT, Load, app_copy, assert_load_spanned, current_release, deploy_log, http_json,
                        lock_holder, main_pid, releases, run_playbook, sandbox_applied, serving)

STATE = {}

pytestmark = pytest.mark.usefixtures("restore")


def test_first_release_layout(host, svars, name):
    release = current_release(host)
    STATE["v1"] = release
    STATE["v1_version"] = http_json(host, "/")["version"]
    assert host.file(f"{ROOT}/current").is_symlink
    assert host.file(f"{ROOT}/releases/{release}/app/main.py").exists
    venv = host.file(f"{ROOT}/releases/{release}/venv")
    assert venv.is_symlink and venv.linked_to.startswith(f"{ROOT}/venvs/")
    info = json.loads(host.file(f"{ROOT}/releases/{release}/release.json").content_string)
    assert info["id"] == release
    assert info["fastapi_version"] == svars["fastapi_app_fastapi_version"]
    assert info["app_version"] == svars["fastapi_app_version"]
    unit = serving(host)[0]
    assert f"WorkingDirectory={ROOT}/releases/{release}/app" in host.file(f"/etc/systemd/system/{unit}.service").content_string


def test_code_only_redeploy_under_load(host, svars, name, url, tmp_path_factory, baseline):
    venv_before = host.file(f"{ROOT}/releases/{STATE['v1']}/venv").linked_to
    load = Load(url, balancer=host)
    result = run_playbook(
        "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v2')}", "-e", "fastapi_app_version=2.0.0",
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
    assert_load_spanned(stats, result, STATE["v1_version"], "2.0.0", baseline)
    # the summary names the release, and warns if (and only if) systemd did not sandbox the app
    unit, port = serving(host)
    assert f"serves http://127.0.0.1:{port}/ (loopback only: clients go through the load balancer) (release {v2}," \
        in result.flat
    assert f"unit {unit}.service)" in result.flat
    pid = main_pid(host, name)
    assert ("WARNING: systemd did not apply the sandbox" in result.flat) == (not sandbox_applied(host, pid)), \
        result.flat


def _new_release(host, before):
    """The one release made since `before` (the releases then)."""
    made = sorted(set(releases(host)) - before)
    assert len(made) == 1, made
    return made[0]


def test_failing_pre_start_step_switches_nothing(host, tmp_path_factory):
    pid = main_pid(host, "hello-api")
    before = set(releases(host))
    result = run_playbook(
        "-e", f"fastapi_app_src={app_copy(tmp_path_factory, 'v4')}", "-e", "fastapi_app_version=4.0.0",
        "-e", json.dumps({"fastapi_app_pre_start_commands": ["echo migrating", "echo boom >&2; exit 3"]}))
    assert result.returncode != 0
    assert "pre-start step 2: echo boom >&2; exit 3 failed (exit code 3)" in result.flat
    assert f"Nothing was switched: the current release ({STATE['v2']}) still serves" in result.flat
    assert current_release(host) == STATE["v2"]
    assert main_pid(host, "hello-api") == pid, "the app was not restarted"
    assert http_json(host, "/")["version"] == "2.0.0"
    STATE["v4"] = _new_release(host, before)
    assert host.file(f"{ROOT}/releases/{STATE['v4']}/FAILED").exists


def test_rollback_to_previous_release_under_load(host, svars, url, baseline):
    load = Load(url, balancer=host)
    result = run_playbook(playbook="rollback.yml")
    stats = load.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    # the failed v4 is never picked: v2 -> v1
    assert current_release(host) == STATE["v1"]
    assert http_json(host, "/")["version"] == STATE["v1_version"], "the release's own environment came back too"
    assert "<- current" in result.stdout
    assert_load_spanned(stats, result, "2.0.0", STATE["v1_version"], baseline)


def test_rollback_to_named_release(host):
    result = run_playbook("-e", f"fastapi_service_rollback_to={STATE['v2']}", playbook="rollback.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert current_release(host) == STATE["v2"]
    assert http_json(host, "/")["version"] == "2.0.0"


@pytest.mark.parametrize("name,words", [
    ("20000101T000000Z", "release '20000101T000000Z' does not exist on"),
    ("v4", "release 'V4' is marked failed (INSTANCE: pre-start step 2: echo boom"),
])
def test_rollback_refuses_missing_or_failed_release(host, instance, name, words):
    name = STATE.get(name, name)
    words = words.replace("INSTANCE", instance).replace("V4", STATE["v4"])
    result = run_playbook("-e", f"fastapi_app_rollback_to={name}", playbook="rollback.yml")
    assert result.returncode != 0
    assert words in result.flat, result.flat[-3000:]
    assert "is marked failed" not in words or ") and is never served again. Releases, newest first: " in result.flat
    assert "fastapi_app_rollback_to: " in result.flat and "Nothing was changed" in result.flat
    assert current_release(host) == STATE["v2"]
    assert lock_holder(host) == {}, "a refused rollback gives its lock back"


def test_releases_playbook_lists_them(host):
    result = run_playbook(playbook="releases.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"* {STATE['v2']}" in result.stdout
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert any(STATE["v4"] in line for line in failed), failed
    assert not any(STATE["v2"] in line or STATE["v1"] in line for line in failed), failed


def test_deploy_from_git(host):
    """The code can come from a git repository and ref instead of a directory. The URL has a
    token in it (git on the host maps it to a local bare repository, as it would reach a real
    server): the token is never printed (-vvv --diff), not in release.json, and the clone that
    holds it is root's alone. git's group-writable modes do not reach the release."""
    token = f"ghp_{uuid.uuid4().hex}"
    repo_url = f"https://deploy:{token}@git.example.test/org/hello.git"
    made = host.run(
        f"set -e; rm -rf /tmp/gitsrc /srv/git; mkdir -p /srv/git; cp -r {ROOT}/current/app /tmp/gitsrc;"
        " cd /tmp/gitsrc; echo v6 > RELEASE_NOTE; chmod 0775 RELEASE_NOTE; git init -q -b main; git add -A;"
        " git -c user.email=test@example.com -c user.name=test commit -qm v6;"
        " git clone -q --bare /tmp/gitsrc /srv/git/hello.git;"
        f" git config --global url./srv/git/hello.git.insteadOf {repo_url}; git rev-parse HEAD")
    assert made.rc == 0, made.stderr
    commit = made.stdout.strip()
    try:
        result = run_playbook("-vvv", "--diff", "-e", "fastapi_app_src=", "-e", f"fastapi_app_git_repo={repo_url}",
                              "-e", "fastapi_app_git_version=main", "-e", "fastapi_app_version=6.0.0",
                              "-e", "fastapi_app_keep_releases=2")
    finally:
        host.run("git config --global --remove-section url./srv/git/hello.git")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert token not in out, "the token was printed"
    release = current_release(host)
    info = json.loads(host.file(f"{ROOT}/releases/{release}/release.json").content_string)
    assert info["source"] == f"https://***@git.example.test/org/hello.git@{commit}"
    assert info["revision"] == commit, "the deploy log and releases.yml show the commit"
    end = [r for r in deploy_log(host) if r["event"] == "end"][-1]
    assert (end["release"], end["revision"], end["result"]) == (release, commit, "served"), end
    assert host.file(f"{ROOT}/releases/{release}/app/RELEASE_NOTE").content_string.strip() == "v6"
    assert not host.file(f"{ROOT}/releases/{release}/app/.git").exists, "an export, not a checkout"
    assert http_json(host, "/")["version"] == "6.0.0"
    # keeping 2 good releases: this one and the rollback target v2 (which served before it); v1
    # went, and the failed v4 did not count and went too; no virtualenv is left that no kept
    # release uses
    kept = releases(host)
    assert set(kept) == {STATE["v2"], release} and kept[-1] == release, kept
    used = {host.file(f"{ROOT}/releases/{r}/venv").linked_to for r in kept}
    assert {f"{ROOT}/venvs/{v}" for v in host.check_output(f"ls -1 {ROOT}/venvs").split()} == used
    # git archive writes 0664/0775 files: the release is read-only for the app's group all the same
    assert host.check_output(f"find {ROOT}/releases/{release}/app -perm /022") == ""
    assert host.file(f"{ROOT}/releases/{release}/app/RELEASE_NOTE").mode == 0o750
    # the clone keeps the URL (and its token) in .git/config: root's alone
    assert token in host.check_output(f"cat {ROOT}/repo/.git/config")
    assert host.run(f"runuser -u fastapi -- cat {ROOT}/repo/.git/config").rc != 0
    # grep: 1 = read everything, found nothing (2 would be a file it could not read)
    assert host.run(f"runuser -u fastapi -- grep -r {token} {ROOT}/releases/{release}/").rc == 1


def test_git_url_token_is_cut_out_of_a_failure(host):
    """A git URL that cannot be fetched fails the deploy with the URL shown without its token."""
    token = f"glpat-{uuid.uuid4().hex}"
    before = current_release(host)
    result = run_playbook("-vvv", "-e", "fastapi_app_src=", "-e",
                          f"fastapi_app_git_repo=https://oauth2:{token}@127.0.0.1:9/org/hello.git")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "Could not fetch https://***@127.0.0.1:9/org/hello.git at 'HEAD'" in result.flat, out[-3000:]
    assert token not in out, "the token was printed"
    assert current_release(host) == before
