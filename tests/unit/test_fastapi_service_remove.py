"""Unit tests of the fastapi_service role's module that stops, disables and removes an instance
(roles/fastapi_service/library/fastapi_service_remove.py): what it asks systemctl for and in which
order, what it removes, what it reports as changed, and that check mode does nothing. A real
units directory in a temporary path; systemctl is a recorder (every deploy of the Molecule
scenarios runs the module against real systemd)."""

import importlib.util
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "roles/fastapi_service/library/fastapi_service_remove.py"
spec = importlib.util.spec_from_file_location("fastapi_service_remove", MODULE)
remove = importlib.util.module_from_spec(spec)
spec.loader.exec_module(remove)


class Systemctl:
    """Answers `systemctl show` from `states` ({unit: (ActiveState, UnitFileState)}), records
    every other call, and fails those listed in `failing`."""

    def __init__(self, states=None, failing=()):
        self.states, self.failing, self.calls = states or {}, set(failing), []

    def __call__(self, args):
        if args[0] == "show":
            active, file_state = self.states.get(args[-1], ("inactive", ""))
            return 0, f"ActiveState={active}\nUnitFileState={file_state}\n"
        self.calls.append(" ".join(args))
        return (1, "Job failed.\n") if " ".join(args) in self.failing else (0, "")


def units(tmp_path, unit="api-a"):
    for suffix in ("service", "socket"):
        (tmp_path / f"{unit}.{suffix}").write_text("[Unit]\n")
    (tmp_path / "api-b.service").write_text("[Unit]\n")  # the other instance: never touched


def test_a_running_instance_is_stopped_service_first_disabled_and_removed(tmp_path):
    units(tmp_path)
    systemctl = Systemctl({"api-a.service": ("active", "enabled"), "api-a.socket": ("active", "enabled")})
    changed, actions, warnings = remove.remove_instance("api-a", str(tmp_path), systemctl)
    assert changed and warnings == []
    assert systemctl.calls == ["stop api-a.service", "disable api-a.service", "stop api-a.socket", "disable api-a.socket",
                               "daemon-reload", "reset-failed api-a.service api-a.socket"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api-b.service"]
    assert actions[-2:] == [f"remove {tmp_path}/api-a.service", f"remove {tmp_path}/api-a.socket"]


def test_check_mode_reports_the_same_actions_and_does_nothing(tmp_path):
    units(tmp_path)
    states = {"api-a.service": ("active", "enabled"), "api-a.socket": ("active", "enabled")}
    systemctl = Systemctl(states)
    changed, actions, _ = remove.remove_instance("api-a", str(tmp_path), systemctl, check_mode=True)
    assert changed and systemctl.calls == []
    assert len(list(tmp_path.iterdir())) == 3
    assert actions == remove.remove_instance("api-a", str(tmp_path), Systemctl(states))[1]


def test_an_instance_already_gone_changes_nothing(tmp_path):
    systemctl = Systemctl()
    assert remove.remove_instance("api-a", str(tmp_path), systemctl) == (False, [], [])
    assert systemctl.calls == ["reset-failed api-a.service api-a.socket"], "no daemon-reload without a removed file"


def test_a_crash_looping_or_stopping_instance_is_stopped_a_failed_one_only_cleared(tmp_path):
    units(tmp_path)
    systemctl = Systemctl({"api-a.service": ("activating", "disabled"), "api-a.socket": ("deactivating", "enabled")})
    remove.remove_instance("api-a", str(tmp_path), systemctl)
    assert systemctl.calls[:3] == ["stop api-a.service", "stop api-a.socket", "disable api-a.socket"]
    units(tmp_path)
    systemctl = Systemctl({"api-a.service": ("failed", "disabled")})
    changed, _, _ = remove.remove_instance("api-a", str(tmp_path), systemctl)
    assert changed and systemctl.calls == ["daemon-reload", "reset-failed api-a.service api-a.socket"]


def test_a_stop_that_fails_is_a_warning_and_the_files_go_all_the_same(tmp_path):
    units(tmp_path)
    systemctl = Systemctl({"api-a.service": ("active", "enabled")}, failing=["stop api-a.service"])
    changed, _, warnings = remove.remove_instance("api-a", str(tmp_path), systemctl)
    assert changed and warnings == ["systemctl stop api-a.service failed: Job failed."]
    assert not (tmp_path / "api-a.service").exists() and "daemon-reload" in systemctl.calls


def test_unit_state_reads_systemctl_show():
    assert remove.unit_state("ActiveState=active\nUnitFileState=\n") == {"ActiveState": "active", "UnitFileState": ""}
