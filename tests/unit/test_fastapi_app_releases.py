"""Unit tests of the release lifecycle (roles/fastapi_app/library/fastapi_app_releases.py): how
releases are ordered, which are good, what pruning keeps, and the fleet's rollback choice.
Real directories in a temporary app root, as the role lays them out."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "roles/fastapi_app/library/fastapi_app_releases.py"
spec = importlib.util.spec_from_file_location("fastapi_app_releases", MODULE)
lifecycle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lifecycle)


def make(root, rid, created, failed=None, served=True, venv="k1", legacy=False):
    path = root / "releases" / rid
    path.mkdir(parents=True)
    info = {"id": rid, "created": created, "venv": venv, "revision": f"rev-{rid}"}
    if not legacy:
        info["format"] = 2
    (path / "release.json").write_text(json.dumps(info))
    (root / "venvs" / venv).mkdir(parents=True, exist_ok=True)
    os.symlink(root / "venvs" / venv, path / "venv")
    if failed:
        (path / "FAILED").write_text(failed + "\n")
    if served:
        (path / "SERVED").write_text("2026-11-26T00:00:00Z\n")
    return rid


def point(root, rid):
    link = root / "current"
    if link.is_symlink():
        link.unlink()
    os.symlink(f"releases/{rid}", link)


def ids(releases):
    return [r["id"] for r in releases]


def test_releases_order_by_creation_time_not_by_name(tmp_path):
    make(tmp_path, "v9", "2026-11-26T10:00:00Z")
    make(tmp_path, "v10", "2026-11-26T10:05:00.5Z")
    make(tmp_path, "hotfix1", "2026-11-26T10:05:00.75Z")
    make(tmp_path, "20261126T095900Z", "2026-11-26T09:59:00Z")
    point(tmp_path, "hotfix1")
    releases, current = lifecycle.read_all(str(tmp_path))
    assert ids(releases) == ["20261126T095900Z", "v9", "v10", "hotfix1"]
    assert current == "hotfix1"
    assert [r["current"] for r in releases] == [False, False, False, True]


def test_a_fraction_of_a_second_orders_after_the_whole_second():
    assert lifecycle.parse_time("2026-11-26T10:00:00.5Z") > lifecycle.parse_time("2026-11-26T10:00:00Z")
    assert lifecycle.parse_time("not a time") is None and lifecycle.parse_time(None) is None


def test_good_means_served_and_not_failed_and_legacy_releases_count_as_served(tmp_path):
    make(tmp_path, "a", "2026-11-26T10:00:00Z", legacy=True, served=False)
    make(tmp_path, "b", "2026-11-26T10:01:00Z", served=False)
    make(tmp_path, "c", "2026-11-26T10:02:00Z", failed="health check")
    make(tmp_path, "d", "2026-11-26T10:03:00Z")
    releases, _ = lifecycle.read_all(str(tmp_path))
    assert [lifecycle.is_good(r) for r in releases] == [True, False, False, True]
    assert releases[2]["failed_reason"] == "health check"


def test_a_release_without_a_description_orders_by_its_file_time(tmp_path):
    make(tmp_path, "old", "2026-11-26T10:00:00Z")
    broken = tmp_path / "releases" / "zzz"
    broken.mkdir()
    (broken / "release.json").write_text("{not json")
    os.utime(broken / "release.json", (1, 1))  # 1970
    releases, _ = lifecycle.read_all(str(tmp_path))
    assert ids(releases) == ["zzz", "old"]


def test_rollback_target_is_the_newest_good_older_release(tmp_path):
    make(tmp_path, "r1", "2026-11-26T10:00:00Z")
    make(tmp_path, "r2", "2026-11-26T10:01:00Z")
    make(tmp_path, "r3", "2026-11-26T10:02:00Z", failed="x")
    make(tmp_path, "r4", "2026-11-26T10:03:00Z", served=False)
    make(tmp_path, "r5", "2026-11-26T10:04:00Z")
    point(tmp_path, "r5")
    releases, current = lifecycle.read_all(str(tmp_path))
    assert lifecycle.rollback_target(releases, current) == "r2"
    assert lifecycle.rollback_target(releases, "r1") == ""
    assert lifecycle.rollback_target(releases, "") == ""


def test_prune_keeps_good_releases_whatever_failed_in_between(tmp_path):
    for n in range(1, 4):
        make(tmp_path, f"good{n}", f"2026-11-26T10:0{n}:00Z", venv=f"k{n}")
    make(tmp_path, "bad1", "2026-11-26T10:04:00Z", failed="x", venv="kbad")
    make(tmp_path, "bad2", "2026-11-26T10:05:00Z", failed="x", venv="kbad")
    make(tmp_path, "good4", "2026-11-26T10:06:00Z", venv="k4")
    make(tmp_path, "bad3", "2026-11-26T10:07:00Z", failed="newer than current: kept", venv="kbad3")
    point(tmp_path, "good4")
    gone, unused = lifecycle.prune(str(tmp_path), 2, [], False)
    assert sorted(gone) == ["bad1", "bad2", "good1", "good2"]
    assert sorted(os.listdir(tmp_path / "releases")) == ["bad3", "good3", "good4"]
    assert sorted(os.listdir(tmp_path / "venvs")) == ["k3", "k4", "kbad3"]
    assert sorted(Path(v).name for v in unused) == ["k1", "k2", "kbad"]


def test_prune_never_removes_the_current_the_rollback_target_or_protected(tmp_path):
    make(tmp_path, "a", "2026-11-26T10:00:00Z", venv="shared")
    make(tmp_path, "b", "2026-11-26T10:01:00Z", venv="shared")
    make(tmp_path, "c", "2026-11-26T10:02:00Z", failed="x", venv="shared")
    make(tmp_path, "d", "2026-11-26T10:03:00Z", served=False, venv="kd")
    point(tmp_path, "c")  # serving a release another host failed: the fleet marked it
    releases, current = lifecycle.read_all(str(tmp_path))
    # keep 1 good: b; current c; target b; protect a
    assert lifecycle.plan_prune(releases, current, 1, ["a"]) == []
    assert lifecycle.plan_prune(releases, current, 1, []) == ["a"]


def test_prune_with_nothing_serving_removes_nothing(tmp_path):
    make(tmp_path, "a", "2026-11-26T10:00:00Z")
    make(tmp_path, "b", "2026-11-26T10:01:00Z", failed="x")
    releases, current = lifecycle.read_all(str(tmp_path))
    assert lifecycle.plan_prune(releases, current, 1) == []


def test_prune_in_check_mode_removes_nothing(tmp_path):
    for n in range(1, 5):
        make(tmp_path, f"r{n}", f"2026-11-26T10:0{n}:00Z", venv=f"k{n}")
    point(tmp_path, "r4")
    gone, unused = lifecycle.prune(str(tmp_path), 2, [], True)
    assert gone == ["r1", "r2"] and len(unused) == 2
    assert len(os.listdir(tmp_path / "releases")) == 4


def test_mark_keeps_the_first_reason(tmp_path):
    make(tmp_path, "a", "2026-11-26T10:00:00Z")
    releases_dir = str(tmp_path / "releases")
    assert lifecycle.mark(releases_dir, "a", "FAILED", "health check on app1", False)
    assert not lifecycle.mark(releases_dir, "a", "FAILED", "failed on another host", False)
    assert (tmp_path / "releases/a/FAILED").read_text() == "health check on app1\n"
    assert not lifecycle.mark(releases_dir, "missing", "FAILED", "x", False)


def host(root, current):
    releases, cur = lifecycle.read_all(str(root))
    assert cur == current
    return {"releases": releases, "current": cur}


@pytest.fixture
def fleet(tmp_path):
    """Two hosts: v9 (good), v10 (failed on app1 only, before the fleet marked it), hotfix1."""
    app1, app2 = tmp_path / "app1", tmp_path / "app2"
    for root in (app1, app2):
        make(root, "20261126T095900Z", "2026-11-26T09:59:00Z")
        make(root, "v9", "2026-11-26T10:00:00Z")
    make(app1, "v10", "2026-11-26T10:01:00Z", failed="health check", served=False)
    make(app2, "v10", "2026-11-26T10:01:03Z", served=False)
    for root in (app1, app2):
        make(root, "hotfix1", "2026-11-26T10:02:00Z")
        point(root, "hotfix1")
    return app1, app2


def test_fleet_rollback_target_is_good_everywhere(fleet):
    app1, app2 = fleet
    target, source, error = lifecycle.choose({"app1": host(app1, "hotfix1"), "app2": host(app2, "hotfix1")})
    assert (target, source, error) == ("v9", "hotfix1", "")


def test_fleet_rollback_after_a_partial_rollout(fleet):
    """app1 switched to v10 then v10 failed on app2: the fleet rolls back from v10 to v9."""
    app1, app2 = fleet
    (app1 / "releases/v10/FAILED").unlink()
    (app1 / "releases/v10/SERVED").write_text("x")
    (app2 / "releases/v10/FAILED").write_text("health check on app2\n")
    point(app1, "v10")
    point(app2, "v9")
    target, source, _ = lifecycle.choose({"app1": host(app1, "v10"), "app2": host(app2, "v9")})
    assert (target, source) == ("v9", "v10")


def test_fleet_refuses_a_release_failed_on_one_host_or_missing_on_one(fleet):
    app1, app2 = fleet
    f = {"app1": host(app1, "hotfix1"), "app2": host(app2, "hotfix1")}
    target, _, error = lifecycle.choose(f, "v10")
    assert target == "" and "release 'v10' is marked failed (app1: health check)" in error
    (app2 / "releases/v9/release.json").unlink()
    (app2 / "releases/v9/SERVED").unlink()
    (app2 / "releases/v9/venv").unlink()
    (app2 / "releases/v9").rmdir()
    f = {"app1": host(app1, "hotfix1"), "app2": host(app2, "hotfix1")}
    target, _, error = lifecycle.choose(f, "v9")
    assert target == "" and "release 'v9' does not exist on app2" in error
    # without v9 everywhere, the automatic choice goes further back
    assert lifecycle.choose(f)[0] == "20261126T095900Z"
    target, _, error = lifecycle.choose(f, "nope")
    assert target == "" and "does not exist on app1, app2" in error


def test_fleet_with_nothing_older_says_so(tmp_path):
    make(tmp_path, "only", "2026-11-26T10:00:00Z")
    point(tmp_path, "only")
    target, source, error = lifecycle.choose({"h": host(tmp_path, "only")})
    assert target == "" and source == "only" and "no release older than only" in error


def test_fleet_view_merges_hosts(fleet):
    app1, app2 = fleet
    view = lifecycle.fleet_view({"app1": host(app1, "hotfix1"), "app2": host(app2, "hotfix1")})
    v10 = next(m for m in view if m["id"] == "v10")
    assert v10["failed_on"] == {"app1": "health check"} and not v10["good"]
    assert v10["created"] == "2026-11-26T10:01:00Z", "the earliest creation time of the hosts"
    assert [m["id"] for m in view] == ["20261126T095900Z", "v9", "v10", "hotfix1"]
    assert next(m for m in view if m["id"] == "hotfix1")["current_on"] == ["app1", "app2"]


def test_settle_marks_failed_everywhere_records_served_and_prunes(tmp_path, monkeypatch):
    """What the end of every run does on a host, through the module's own entry point."""
    make(tmp_path, "r1", "2026-11-26T10:00:00Z")
    make(tmp_path, "r2", "2026-11-26T10:01:00Z")
    make(tmp_path, "r3", "2026-11-26T10:02:00Z", served=False)
    make(tmp_path, "r4", "2026-11-26T10:03:00Z", served=False)
    point(tmp_path, "r3")
    args = {"ANSIBLE_MODULE_ARGS": {"state": "settled", "root": str(tmp_path) + "/", "keep": 1,
                                    "failed": {"r4": "health check on app1", "gone": "x"}}}
    monkeypatch.setattr("sys.argv", ["x", json.dumps(args)])
    with pytest.raises(SystemExit):
        lifecycle.main()
    assert (tmp_path / "releases/r4/FAILED").read_text() == "health check on app1\n"
    assert (tmp_path / "releases/r3/SERVED").exists()
    # keep 1 good: r3 (current, now served); r2 the rollback target; r4 newer than current
    assert sorted(os.listdir(tmp_path / "releases")) == ["r2", "r3", "r4"]
