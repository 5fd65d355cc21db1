"""Unit tests of the fastapi_service role's module that points current at a release and records
the instance that serves (roles/fastapi_service/library/fastapi_service_serving.py), on a real
app root and state directory in a temporary path."""

import importlib.util
import os
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "roles/fastapi_service/library/fastapi_service_serving.py"
spec = importlib.util.spec_from_file_location("fastapi_service_serving", MODULE)
serving = importlib.util.module_from_spec(spec)
spec.loader.exec_module(serving)


@pytest.fixture
def root(tmp_path):
    for rid in ("r1", "r2"):
        (tmp_path / "releases" / rid).mkdir(parents=True)
    os.symlink("releases/r1", tmp_path / "current")
    return tmp_path


def test_current_moves_to_the_release_in_one_rename_and_only_once(root):
    assert serving.point_current(str(root), "r2") is True
    assert os.readlink(root / "current") == "releases/r2"
    assert not (root / ".current.new").exists()
    assert serving.point_current(str(root), "r2") is False


def test_check_mode_leaves_current_alone(root):
    assert serving.point_current(str(root), "r2", check_mode=True) is True
    assert os.readlink(root / "current") == "releases/r1"


def test_a_leftover_link_of_a_killed_run_is_replaced(root):
    os.symlink("releases/r1", root / ".current.new")
    assert serving.point_current(str(root), "r2") and os.readlink(root / "current") == "releases/r2"


def test_a_first_release_gets_current(tmp_path):
    (tmp_path / "releases" / "r1").mkdir(parents=True)
    assert serving.point_current(str(tmp_path), "r1") and os.readlink(tmp_path / "current") == "releases/r1"


@pytest.mark.parametrize("release", ["r9", "", "..", "../releases/r1", "r1/../r2"])
def test_a_release_that_is_not_there_is_refused(root, release):
    with pytest.raises(ValueError, match="does not exist in"):
        serving.point_current(str(root), release)
    assert os.readlink(root / "current") == "releases/r1"


def test_the_record_is_written_whole_root_readable_and_only_when_it_differs(tmp_path):
    state = tmp_path / "api.serving"
    assert serving.record_serving(str(state), "api-b") is True
    assert state.read_text() == "api-b\n" and oct(state.stat().st_mode & 0o777) == "0o644"
    assert not (tmp_path / "api.serving.new").exists()
    assert serving.record_serving(str(state), "api-b") is False
    assert serving.record_serving(str(state), "api-a", check_mode=True) is True
    assert state.read_text() == "api-b\n"
