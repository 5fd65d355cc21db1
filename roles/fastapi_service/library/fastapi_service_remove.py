#!/usr/bin/python
"""Ansible module of the fastapi_service role: stop an instance of the app, disable it and remove
its unit files, in one module run (it was six: a stop and a removal per unit, a daemon-reload
and a reset-failed)."""

DOCUMENTATION = r"""
module: fastapi_service_remove
short_description: Stop, disable and remove one instance of a FastAPI app
description:
  - Stops the instance's service, then its socket (the service gracefully: requests in progress
    finish), disables both, removes their unit files, makes systemd forget them (daemon-reload)
    and clears a failed state they left (reset-failed).
  - A unit that never started, is already stopped or whose file is gone is no error: what is
    left of the instance is removed, whatever an interrupted run left. A stop that fails is
    reported in C(warnings) and the files are removed all the same, as before.
  - Changed when a unit was stopped or disabled or a file removed. In check mode, reports what
    it would do and does nothing.
options:
  unit:
    description: The instance's unit name without its suffix (C(<name>-a), C(<name>-b), or C(<name>)).
    type: str
    required: true
  units_dir:
    description: Where the unit files are.
    type: path
    default: /etc/systemd/system
"""

import os

from ansible.module_utils.basic import AnsibleModule


def unit_state(show_output):
    """`systemctl show --property=...` output as a {property: value} map."""
    return dict(line.split("=", 1) for line in show_output.splitlines() if "=" in line)


def remove_instance(unit, units_dir, systemctl, check_mode=False):
    """Stop, disable and remove `unit`'s service and socket. `systemctl(args)` runs systemctl
    and returns (rc, its stdout and stderr). Returns (changed, actions, warnings): the actions done, or that
    would be done in check mode, in their order."""
    actions, warnings = [], []
    for suffix in ("service", "socket"):  # the service first: its socket would start it again
        name = f"{unit}.{suffix}"
        state = unit_state(systemctl(["show", "--property=ActiveState", "--property=UnitFileState", name])[1])
        # activating: starting, or waiting to be restarted after a crash; deactivating: its stop
        # job is waited for, so that no process of it is left when its files go
        if state.get("ActiveState", "inactive") not in ("inactive", "failed", ""):
            actions.append(f"stop {name}")
            if not check_mode:
                rc, out = systemctl(["stop", name])
                if rc != 0:
                    warnings.append(f"systemctl stop {name} failed: {out.strip()}")
        if state.get("UnitFileState", "") in ("enabled", "enabled-runtime", "linked", "linked-runtime"):
            actions.append(f"disable {name}")
            if not check_mode:
                rc, out = systemctl(["disable", name])
                if rc != 0:
                    warnings.append(f"systemctl disable {name} failed: {out.strip()}")
    removed = False
    for suffix in ("service", "socket"):
        path = os.path.join(units_dir, f"{unit}.{suffix}")
        if os.path.lexists(path):
            actions.append(f"remove {path}")
            removed = True
            if not check_mode:
                os.unlink(path)
    if not check_mode:
        if removed:
            systemctl(["daemon-reload"])
        systemctl(["reset-failed", f"{unit}.service", f"{unit}.socket"])  # nothing to clear is no error
    return bool(actions), actions, warnings


def main():
    module = AnsibleModule(
        argument_spec={
            "unit": {"type": "str", "required": True},
            "units_dir": {"type": "path", "default": "/etc/systemd/system"},
        },
        supports_check_mode=True,
    )
    unit = module.params["unit"]
    if not unit or "/" in unit or unit.startswith("."):
        module.fail_json(msg=f"unit is {unit!r}: give an instance's unit name, such as myapp-a")
    systemctl_bin = module.get_bin_path("systemctl", required=True)

    def systemctl(args):
        rc, out, err = module.run_command([systemctl_bin, *args])
        return rc, out + err

    changed, actions, warnings = remove_instance(unit, module.params["units_dir"], systemctl, module.check_mode)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=changed, actions=actions)


if __name__ == "__main__":
    main()
