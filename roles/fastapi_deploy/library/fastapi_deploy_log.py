#!/usr/bin/python
"""Ansible module of the fastapi_deploy role: the append-only deploy log of one app on one host."""

DOCUMENTATION = r"""
module: fastapi_deploy_log
short_description: Append to, or read, the deploy log of a FastAPI app on a host
description:
  - The log is C(<dir>/<app>.log), one JSON object per line, only ever appended to (one
    C(write) of a whole line to a file opened with C(O_APPEND), then C(fsync)): each deploy or
    rollback adds a C(start) record when it takes the lock and an C(end) record when it ends
    (release, source revision, versions, who, where, start and end, and the result on this host).
  - A run that was killed leaves a C(start) without an C(end): it shows as interrupted.
options:
  app:
    description: The app's name (fastapi_service_name).
    type: str
    required: true
  state:
    description: C(appended) adds I(record); C(read) returns the records of the last I(runs) runs.
    type: str
    choices: [appended, read]
    default: read
  record:
    description: The record to append (a mapping; C(run) and C(event) are expected).
    type: dict
    default: {}
  runs:
    description: How many of the latest runs to return (C(read)).
    type: int
    default: 10
  dir:
    description: Where the logs are.
    type: path
    default: /var/log/fastapi-deploy
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule


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
            "state": {"type": "str", "default": "read", "choices": ["appended", "read"]},
            "record": {"type": "dict", "default": {}},
            "runs": {"type": "int", "default": 10},
            "dir": {"type": "path", "default": "/var/log/fastapi-deploy"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not p["app"] or "/" in p["app"] or p["app"].startswith("."):
        module.fail_json(msg=f"app: '{p['app']}' is not a name")
    path = os.path.join(p["dir"], p["app"] + ".log")
    if p["state"] == "appended":
        if not module.check_mode:
            append(path, p["record"])
        # The log is the run's own record, not the host's configuration: a deploy that changes
        # nothing else still reports changed=0.
        module.exit_json(changed=False, path=path)
    module.exit_json(changed=False, path=path, records=read(path, p["runs"]))


if __name__ == "__main__":
    main()
