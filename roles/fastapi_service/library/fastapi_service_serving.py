#!/usr/bin/python
"""Ansible module of the fastapi_service role: point the app's `current` link at a release and
record which instance serves it, in one module run (it was three: a command for the link, and a
copy, which runs two modules, for the record)."""

DOCUMENTATION = r"""
module: fastapi_service_serving
short_description: Point current at a release, and record the instance of a FastAPI app that serves
description:
  - Points C(<app_root>/current) at C(releases/<release>), replacing the link in one rename (a
    reader sees the old or the new target, never none).
  - With C(unit), writes it into C(<state_dir>/<name>.serving) (root's, 0644), through a
    temporary file that is synced and renamed: the record is the old or the new one, whole,
    even after a power loss. The fastapi_service_instances module reads it.
  - The link first, then the record. Changed when either changed; in check mode, reports what
    would change and changes nothing.
options:
  app_root:
    description: The app's root (fastapi_service_app_root), which holds releases/ and current.
    type: path
    required: true
  release:
    description: The release id; C(<app_root>/releases/<release>) must be a directory.
    type: str
    required: true
  name:
    description: The app's unit name (fastapi_service_name); names the record. Required with C(unit).
    type: str
  unit:
    description: The instance that serves (C(<name>-a), C(<name>-b) or C(<name>)); empty records nothing.
    type: str
    default: ""
  state_dir:
    description: Where the name of the serving instance is kept.
    type: path
    default: /var/lib/fastapi-deploy
"""

import os

from ansible.module_utils.basic import AnsibleModule


def point_current(app_root, release, check_mode=False):
    """Point app_root/current at releases/<release>. Returns whether it changed; raises
    ValueError when the release is not a directory there."""
    target = f"releases/{release}"
    if not release or "/" in release or release in (".", "..") or not os.path.isdir(os.path.join(app_root, target)):
        raise ValueError(f"release {release!r} does not exist in {app_root}/releases")
    link = os.path.join(app_root, "current")
    if os.path.islink(link) and os.readlink(link) == target:
        return False
    if not check_mode:
        tmp = os.path.join(app_root, ".current.new")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.rename(tmp, link)  # replaces the link itself, never what it points to
    return True


def record_serving(state_file, unit, check_mode=False):
    """Write `unit` into state_file (0644, synced, renamed into place). Returns whether it changed."""
    try:
        with open(state_file, encoding="utf-8") as f:
            if f.read().strip() == unit:
                return False
    except FileNotFoundError:
        pass
    if not check_mode:
        tmp = f"{state_file}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, f"{unit}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, state_file)
        dir_fd = os.open(os.path.dirname(state_file) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power loss
        finally:
            os.close(dir_fd)
    return True


def main():
    module = AnsibleModule(
        argument_spec={
            "app_root": {"type": "path", "required": True},
            "release": {"type": "str", "required": True},
            "name": {"type": "str"},
            "unit": {"type": "str", "default": ""},
            "state_dir": {"type": "path", "default": "/var/lib/fastapi-deploy"},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        current_changed = point_current(p["app_root"], p["release"], module.check_mode)
    except ValueError as e:
        module.fail_json(msg=str(e))
    recorded_changed = False
    if p["unit"]:
        if not p["name"] or "/" in p["name"] or "/" in p["unit"]:
            module.fail_json(msg=f"name {p['name']!r} and unit {p['unit']!r}: give the app's unit name and an instance's")
        recorded_changed = record_serving(os.path.join(p["state_dir"], f"{p['name']}.serving"), p["unit"], module.check_mode)
    module.exit_json(changed=current_changed or recorded_changed, current=f"releases/{p['release']}",
                     current_changed=current_changed, recorded=p["unit"], recorded_changed=recorded_changed)


if __name__ == "__main__":
    main()
