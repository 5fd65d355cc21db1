#!/usr/bin/python
"""Ansible module of the fastapi_deploy role: the deploy lock of one app on one host."""

DOCUMENTATION = r"""
module: fastapi_deploy_lock
short_description: Take, release or read the deploy lock of a FastAPI app on a host
description:
  - The lock is a file, C(<dir>/<app>.lock), holding who holds it (JSON: run id, user,
    controller, process id, playbook, message, since). It is created with its content in one
    step (a link of a complete file), so two runs can never both take it and a reader never sees
    half a holder.
  - Taking a lock the same run already holds succeeds (a run takes it once per host). Taking a
    lock another run holds does not fail the task: it returns C(acquired=false) and the holder, so
    that the playbook releases what it took elsewhere and says who holds it.
  - Releasing removes the lock only when this run holds it, or with C(force).
options:
  app:
    description: The app's name (fastapi_service_name): one lock per app and host.
    type: str
    required: true
  state:
    description: C(acquired), C(released) or C(status) (reads only).
    type: str
    choices: [acquired, released, status]
    default: status
  holder:
    description: Who takes the lock (C(acquired)), or the run releasing it (C(released), key C(run)).
    type: dict
    default: {}
  force:
    description: Release the lock whoever holds it.
    type: bool
    default: false
  dir:
    description: Where the locks are.
    type: path
    default: /var/lib/fastapi-deploy
"""

import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


def lock_path(directory, app):
    return os.path.join(directory, app + ".lock")


def read_holder(path):
    """The holder recorded in the lock file, {} when there is no lock; an unreadable file is a
    lock all the same (its holder unknown)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        holder = {"run": "?", "user": "?", "message": "the lock file is unreadable: " + text[:200]}
    return holder


def acquire(path, holder):
    """(acquired, holder now): the lock file made with `holder` in it, unless another run holds it."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".lock.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(holder, f, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)  # fails if the lock exists: atomic, and complete when it appears
            return True, holder
        except FileExistsError:
            current = read_holder(path)
            if current and current.get("run") == holder.get("run"):
                return True, current
            return False, current
    finally:
        os.unlink(tmp)


def release(path, run, force):
    """(released, holder that was there)."""
    current = read_holder(path)
    if not current:
        return False, {}
    if not force and current.get("run") != run:
        return False, current
    os.unlink(path)
    return True, current


def main():
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "state": {"type": "str", "default": "status", "choices": ["acquired", "released", "status"]},
            "holder": {"type": "dict", "default": {}},
            "force": {"type": "bool", "default": False},
            "dir": {"type": "path", "default": "/var/lib/fastapi-deploy"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not p["app"] or "/" in p["app"] or p["app"].startswith("."):
        module.fail_json(msg=f"app: '{p['app']}' is not a name")
    path = lock_path(p["dir"], p["app"])
    if p["state"] == "status" or module.check_mode:
        holder = read_holder(path)
        module.exit_json(changed=False, locked=bool(holder), holder=holder, path=path)
    if p["state"] == "acquired":
        if not p["holder"].get("run"):
            module.fail_json(msg="holder.run is required to take the lock")
        acquired, holder = acquire(path, p["holder"])
        module.exit_json(changed=acquired, acquired=acquired, holder=holder, path=path)
    released, holder = release(path, p["holder"].get("run"), p["force"])
    module.exit_json(changed=released, released=released, holder=holder, path=path)


if __name__ == "__main__":
    main()
