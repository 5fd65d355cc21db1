"""Filters of the fastapi_deploy role, run on the controller: who this run is (its process), who
holds a lock and whether that run is gone, and the fleet's deploy log as text. Unit-tested in
tests/unit/test_fastapi_deploy_filters.py."""

import os
import socket
import time
from datetime import datetime, timezone


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def controller_pid(_=None):
    """The process id of this ansible-playbook run. Templates are rendered in its forked workers,
    which have the same command line: go up while the parent has it too."""
    pid = os.getpid()
    mine = _cmdline(pid)
    if mine is None:  # no /proc (macOS): this process, the best there is
        return pid
    parent = _ppid(pid)
    while parent > 1 and _cmdline(parent) == mine:
        pid, parent = parent, _ppid(parent)
    return pid


def controller_name(_=None):
    return socket.gethostname()


def _parse(text):
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _age(since, now):
    started = _parse(since)
    if started is None:
        return "for an unknown time"
    minutes = int((now - started) // 60)
    if minutes < 1:
        return "for less than a minute"
    if minutes < 120:
        return f"for {minutes} min"
    return f"for {minutes // 60} h {minutes % 60} min"


def holder_gone(holder, here=None, alive=None):
    """Why the run holding a lock is known to be gone ('' when it may still run). Only a run
    from this controller can be checked: its process must still be an ansible-playbook."""
    here = here or controller_name()
    if not holder or holder.get("controller") != here or not holder.get("pid"):
        return ""
    alive = alive or (lambda pid: b"ansible" in (_cmdline(pid) or b""))
    if alive(int(holder["pid"])):
        return ""
    return (f"that run is gone: process {holder['pid']} no longer runs on {here} "
            "(it was stopped or killed half way)")


def lock_explain(holder, app, host, inventory="INVENTORY", here=None, alive=None, now=None):
    """The message of a refused lock: who holds it, since when, why, and what to do."""
    now = now if now is not None else time.time()
    who = f"{holder.get('user', '?')}@{holder.get('controller', '?')}"
    what = holder.get("playbook") or "a run"
    release = holder.get("release")
    message = holder.get("message")
    text = (f"The deploy lock of {app} on {host} is held by {who} since {holder.get('since', '?')} "
            f"({_age(holder.get('since'), now)}), for {what}"
            + (f" of release {release}" if release else "")
            + f" (run {holder.get('run', '?')})"
            + (f": '{message}'" if message else "") + ". ")
    gone = holder_gone(holder, here, alive)
    release_cmd = (f"ansible-playbook playbooks/lock.yml -i {inventory} -e fastapi_deploy_lock_action=release")
    if gone:
        text += (f"Nothing is deploying: {gone}. What it left serves on (each host serves a release "
                 f"that passed its health check); see it with ansible-playbook playbooks/releases.yml -i "
                 f"{inventory}, then release the lock with {release_cmd} and deploy again.")
    elif holder.get("controller") and holder.get("controller") != (here or controller_name()):
        text += (f"It was taken from {holder.get('controller')}: this controller cannot tell whether that "
                 f"run still goes on. Wait for it, or ask {holder.get('user', 'its holder')}; if it is gone, "
                 f"release the lock with {release_cmd}.")
    else:
        text += f"Wait until it ends, or (a maintenance lock) release it with {release_cmd}."
    return text


def fleet_log(records_by_host):
    """The deploy logs of the hosts (host -> records, oldest first) as one list of runs, newest
    first: each run once, with its release, revision, who, when, and each host's result."""
    runs = {}
    for host in sorted(records_by_host):
        for r in records_by_host[host] or []:
            run = runs.setdefault(r.get("run"), {"run": r.get("run"), "hosts": {}, "first": r})
            info = run["hosts"].setdefault(host, {})
            info.update(r)
            for key in ("action", "release", "previous", "revision", "app_version", "fastapi_version", "user",
                        "controller", "message", "started", "ended", "fleet_result"):
                if r.get(key) and not run.get(key):
                    run[key] = r[key]
    ordered = sorted(runs.values(), key=lambda x: (_parse(x.get("started")) or 0, str(x["run"])), reverse=True)
    lines = []
    for run in ordered:
        result = run.get("fleet_result") or "interrupted (no end recorded: the run was stopped or killed)"
        lines.append(
            f"{run.get('started', '?')}  {run.get('action', 'deploy')} of release {run.get('release') or '?'}"
            f" (revision {run.get('revision') or '?'}, app {run.get('app_version') or '?'}, "
            f"FastAPI {run.get('fastapi_version') or '?'}) by {run.get('user', '?')}@{run.get('controller', '?')}"
            + (f" '{run['message']}'" if run.get("message") else "")
            + f": {result}" + (f", ended {run['ended']}" if run.get("ended") else ""))
        for host, info in sorted(run["hosts"].items()):
            if info.get("event") == "end":
                lines.append(f"    {host}: {info.get('result', '?')}"
                             + (f" (before: {info['previous']})"
                                if info.get("previous") and info.get("previous") != info.get("release") else "")
                             + (f": {info['reason']}" if info.get("reason") else ""))
            else:
                lines.append(f"    {host}: no end recorded")
    return lines


class FilterModule:
    def filters(self):
        return {
            "fastapi_deploy_controller_pid": controller_pid,
            "fastapi_deploy_controller_name": controller_name,
            "fastapi_deploy_lock_explain": lock_explain,
            "fastapi_deploy_fleet_log": fleet_log,
        }
