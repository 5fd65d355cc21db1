#!/usr/bin/python
"""Ansible module of the fastapi_deploy role: the state a deploy or rollback keeps on an app host,
its lock and its log. Unit-tested in tests/unit/test_fastapi_deploy.py."""

DOCUMENTATION = r"""
module: fastapi_deploy_run
short_description: The deploy lock and the deploy log of a FastAPI app on a host
description:
  - B(The lock) is a file, C(<lock_dir>/<app>.lock), holding who holds it (JSON - run id, user,
    controller, process id, playbook, message, since). It is created with its content in one
    step (a link to a complete file), so two runs can never both take it and a reader never
    sees half a holder. A run may take a lock it already holds.
  - B(The log) is C(<log_dir>/<app>.log), one JSON object per line, only ever appended to (one
    write of a whole line to a file opened with O_APPEND, then fsync).
  - C(started) takes the lock for I(holder) and, if it was taken, appends I(record) to the log.
    Another run holding the lock does not fail the task - it returns C(acquired=false) and the
    holder, so that the playbook gives back what it took elsewhere and says who holds it.
  - C(ended) appends I(record) to the log and gives back the lock if I(holder) holds it.
  - C(released) gives back the lock whoever holds it (the forced release), and logs who did.
  - C(status) reads the lock; C(read) returns the log records of the last I(runs) runs.
  - The lock and the log are the run's own bookkeeping, not the host's configuration - the module
    never reports a change, so that a run that changes nothing else reports changed=0.
options:
  app:
    description: The app's name (fastapi_service_name) - one lock and one log per app and host.
    type: str
    required: true
  state:
    type: str
    choices: [started, ended, released, status, read]
    default: status
  holder:
    description: The run (C(started) - who takes the lock; C(ended) - its key C(run)).
    type: dict
    default: {}
  record:
    description: The log record to append (C(started), C(ended), C(released)).
    type: dict
    default: {}
  runs:
    description: How many of the latest runs to read (C(read)).
    type: int
    default: 10
  lock_dir:
    type: path
    default: /var/lib/fastapi-deploy
  log_dir:
    type: path
    default: /var/log/fastapi-deploy
"""

import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


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


def append(path, record):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path, runs):
    """The records of the last `runs` runs, oldest first (lines that are not JSON are skipped)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    order = []
    for r in records:
        if r.get("run") not in order:
            order.append(r.get("run"))
    wanted = set(order[-runs:]) if runs > 0 else set()
    return [r for r in records if r.get("run") in wanted]


def main():
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "state": {"type": "str", "default": "status", "choices": ["started", "ended", "released", "status", "read"]},
            "holder": {"type": "dict", "default": {}},
            "record": {"type": "dict", "default": {}},
            "runs": {"type": "int", "default": 10},
            "lock_dir": {"type": "path", "default": "/var/lib/fastapi-deploy"},
            "log_dir": {"type": "path", "default": "/var/log/fastapi-deploy"},
        },
        supports_check_mode=True,
    )
    p = module.params
    app = p["app"]
    if not app or "/" in app or app.startswith("."):
        module.fail_json(msg=f"app: '{app}' is not a name")
    lock_path = os.path.join(p["lock_dir"], app + ".lock")
    log_path = os.path.join(p["log_dir"], app + ".log")
    state = p["state"]
    if state == "read":
        module.exit_json(changed=False, path=log_path, records=read(log_path, p["runs"]))
    if state == "status" or module.check_mode:
        holder = read_holder(lock_path)
        module.exit_json(changed=False, locked=bool(holder), holder=holder, path=lock_path)
    if state == "started":
        if not p["holder"].get("run"):
            module.fail_json(msg="holder.run is required to take the lock")
        acquired, holder = acquire(lock_path, p["holder"])
        if acquired and p["record"]:
            append(log_path, p["record"])
        module.exit_json(changed=False, acquired=acquired, holder=holder, path=lock_path)
    if state == "ended":
        if p["record"]:
            append(log_path, p["record"])
        released, holder = release(lock_path, p["holder"].get("run"), False)
        module.exit_json(changed=False, released=released, holder=holder, path=lock_path)
    released, holder = release(lock_path, None, True)
    if released:
        append(log_path, dict(p["record"], run=holder.get("run", "?")))
    module.exit_json(changed=False, released=released, holder=holder, path=lock_path)


if __name__ == "__main__":
    main()
