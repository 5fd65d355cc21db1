#!/usr/bin/python
"""Ansible module of the fastapi_app role: the release lifecycle of an app on a host (list,
mark, choose, prune). deploy.yml, rollback.yml and releases.yml all go through it; the rules
are the pure functions below, unit-tested in tests/unit/test_fastapi_app_releases.py."""

DOCUMENTATION = r"""
module: fastapi_app_releases
short_description: The releases of a FastAPI app on a host, and what happens to them
description:
  - A release is a directory C(<root>/releases/<id>) with C(release.json) (id, creation time,
    versions, source revision, virtualenv key). C(FAILED) in it (the reason) marks it failed:
    it is never served again. C(SERVED) (the time it first served) marks it as one that served.
    C(<root>/current) links to the release being served.
  - Releases are ordered by their creation time (C(created) in C(release.json)), never by
    name: custom ids such as C(v9), C(v10), C(hotfix1) order as they were made.
  - A release is B(good) when it is not marked failed and it has served (releases made before
    C(SERVED) existed, without C(format) in C(release.json), count as served).
options:
  state:
    description:
      - C(list) reads the releases (changes nothing).
      - C(failed) marks I(release) failed with I(reason), where it exists (a reason already
        there is kept).
      - C(served) records that I(release) served (the first time only).
      - C(pruned) keeps the I(keep) newest good releases, the current release, the releases in
        I(protect), the rollback target (the newest good release older than the current one),
        and any release newer than the current one (a failed one until a newer release serves),
        and removes the other releases and every virtualenv no kept release uses.
      - C(settled) is what every deploy and rollback does at its end - marks the releases in
        I(failed) failed (where they exist), records that the current release served, then
        C(pruned).
      - C(chosen) chooses one release for a whole fleet from I(fleet) (changes nothing): I(wanted)
        if it is good on every host, or else the newest release good on every host that is older
        than the newest release any host serves.
    type: str
    choices: [list, failed, served, pruned, settled, chosen]
    default: list
  root:
    description: The app root (fastapi_app_root).
    type: path
  release:
    description: The release to mark (C(failed), C(served)).
    type: str
  reason:
    description: Why the release failed (C(failed)).
    type: str
    default: ""
  failed:
    description: C(settled) only. Release id to the reason it failed.
    type: dict
    default: {}
  keep:
    description: How many good releases to keep (C(pruned), C(settled)).
    type: int
    default: 5
  protect:
    description: Releases never removed (C(pruned)), e.g. a fleet's rollback target.
    type: list
    elements: str
    default: []
  fleet:
    description: C(chosen) only. Host name to the result of C(state=list) on that host.
    type: dict
    default: {}
  wanted:
    description: C(chosen) only. The release asked for (empty to choose).
    type: str
    default: ""
"""

import json
import os
import shutil
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule

FORMAT = 2


def parse_time(text):
    """Seconds since the epoch of an ISO 8601 UTC time ('2026-11-26T01:02:03Z', with or
    without a fraction), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def now_text():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def read_release(releases_dir, rid):
    """One release's description: what release.json says, whether it failed (the reason) and
    whether it served."""
    path = os.path.join(releases_dir, rid)
    info = {}
    text = _read_text(os.path.join(path, "release.json"))
    if text:
        try:
            info = json.loads(text)
        except ValueError:
            info = {}
    if not isinstance(info, dict):
        info = {}
    created = parse_time(info.get("created"))
    if created is None:  # no description, or an unreadable one: the directory's time
        try:
            created = os.stat(os.path.join(path, "release.json")).st_mtime
        except OSError:
            created = os.stat(path).st_mtime
    failed = _read_text(os.path.join(path, "FAILED"))
    served = _read_text(os.path.join(path, "SERVED"))
    legacy = "format" not in info
    return {
        "id": rid,
        "created": info.get("created") or datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "created_ts": created,
        "app_version": info.get("app_version", ""),
        "fastapi_version": info.get("fastapi_version", ""),
        "source": info.get("source", ""),
        "revision": info.get("revision", ""),
        "venv": info.get("venv", ""),
        "failed": failed is not None,
        "failed_reason": (failed or "").strip(),
        "served": served is not None or (legacy and failed is None),
        "served_at": (served or "").strip(),
    }


def order(releases):
    """Oldest first, by creation time (the id only breaks a tie)."""
    return sorted(releases, key=lambda r: (r["created_ts"], r["id"]))


def is_good(release):
    return not release["failed"] and release["served"]


def read_all(root):
    """(releases oldest first, the current release's id or '')."""
    releases_dir = os.path.join(root, "releases")
    try:
        ids = [n for n in os.listdir(releases_dir)
               if os.path.isdir(os.path.join(releases_dir, n)) and not os.path.islink(os.path.join(releases_dir, n))]
    except FileNotFoundError:
        ids = []
    current = ""
    link = os.path.join(root, "current")
    if os.path.islink(link):
        current = os.path.basename(os.readlink(link).rstrip("/"))
    releases = order([read_release(releases_dir, rid) for rid in ids])
    for r in releases:
        r["current"] = r["id"] == current
        if r["current"] and not r["failed"]:
            r["served"] = True  # it serves now (a play that uses the roles alone records no SERVED)
    return releases, current


def rollback_target(releases, current):
    """The newest good release older than `current` on one host, or ''."""
    ids = [r["id"] for r in releases]
    if current not in ids:
        return ""
    older = releases[:ids.index(current)]
    good = [r["id"] for r in older if is_good(r)]
    return good[-1] if good else ""


def plan_prune(releases, current, keep, protect=()):
    """The ids to remove from `releases` (oldest first). Kept: the `keep` newest good releases,
    the current one, `protect`, the rollback target, and whatever is newer than the current one
    (a failed or unfinished release stays until a newer release serves)."""
    ids = [r["id"] for r in releases]
    kept = set(protect) | {current}
    kept.update([r["id"] for r in releases if is_good(r)][-keep:] if keep > 0 else [])
    kept.add(rollback_target(releases, current))
    if current in ids:
        kept.update(ids[ids.index(current) + 1:])
    elif current == "":
        kept.update(ids)  # nothing serves yet: nothing is known to be old
    return [rid for rid in ids if rid not in kept]


def fleet_view(fleet):
    """Releases across hosts, oldest first: for each id, the hosts that have it, where it is
    failed (and why), where it served, where it is current, and whether it is good everywhere."""
    hosts = sorted(fleet)
    merged = {}
    for host in hosts:
        for r in fleet[host].get("releases", []):
            m = merged.setdefault(r["id"], {"id": r["id"], "created": r["created"], "created_ts": r["created_ts"],
                                            "app_version": r.get("app_version", ""), "revision": r.get("revision", ""),
                                            "hosts": [], "failed_on": {}, "served_on": [], "current_on": []})
            if r["created_ts"] < m["created_ts"]:
                m["created"], m["created_ts"] = r["created"], r["created_ts"]
            m["hosts"].append(host)
            if r["failed"]:
                m["failed_on"][host] = r.get("failed_reason", "")
            if r["served"]:
                m["served_on"].append(host)
            if r["id"] == fleet[host].get("current"):
                m["current_on"].append(host)
    view = order(list(merged.values()))
    for m in view:
        m["missing_on"] = [h for h in hosts if h not in m["hosts"]]
        m["good"] = not m["failed_on"] and not m["missing_on"] and bool(m["served_on"])
    return view


def choose(fleet, wanted=""):
    """(target, from, error): one release for the whole fleet. `wanted` must be on every host
    and failed on none; else the newest release good everywhere that is older than the newest
    release a host serves ('from')."""
    view = fleet_view(fleet)
    by_id = {m["id"]: m for m in view}
    serving = [m for m in view if m["current_on"]]
    newest = serving[-1]["id"] if serving else ""
    listing = ", ".join(
        m["id"] + (" (failed on " + ", ".join(sorted(m["failed_on"])) + ")" if m["failed_on"] else "")
        + (" (missing on " + ", ".join(m["missing_on"]) + ")" if m["missing_on"] else "")
        + ("" if m["served_on"] or m["failed_on"] else " (never served)")
        for m in reversed(view)) or "none"
    if wanted:
        m = by_id.get(wanted)
        if m is None or m["missing_on"]:
            where = ", ".join(m["missing_on"]) if m else ", ".join(sorted(fleet))
            return "", newest, f"release '{wanted}' does not exist on {where}. Releases, newest first: {listing}."
        if m["failed_on"]:
            why = "; ".join(f"{h}: {reason.splitlines()[0] if reason else 'no reason recorded'}"
                            for h, reason in sorted(m["failed_on"].items()))
            return "", newest, (f"release '{wanted}' is marked failed ({why}) and is never served again. "
                                f"Releases, newest first: {listing}.")
        return wanted, newest, ""
    if not newest:
        return "", "", f"no host serves a release: nothing to roll back from. Releases, newest first: {listing}."
    ids = [m["id"] for m in view]
    older = [m for m in view[:ids.index(newest)] if m["good"]]
    if not older:
        return "", newest, (f"there is no release older than {newest} that is good on every host "
                            f"(on all of them, never failed, served). Releases, newest first: {listing}.")
    return older[-1]["id"], newest, ""


def mark(releases_dir, rid, name, text, check_mode):
    """Write `name` (FAILED or SERVED) in release `rid` unless it is there: True if written."""
    path = os.path.join(releases_dir, rid)
    marker = os.path.join(path, name)
    if not os.path.isdir(path) or os.path.exists(marker):
        return False
    if not check_mode:
        tmp = marker + ".new"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, marker)
    return True


def prune(root, keep, protect, check_mode):
    """Remove what plan_prune says and the virtualenvs no kept release uses: (removed releases,
    removed virtualenvs). Paths are compared resolved."""
    releases, current = read_all(root)
    gone = plan_prune(releases, current, keep, protect)
    releases_dir = os.path.join(root, "releases")
    venvs_dir = os.path.join(root, "venvs")
    used = set()
    for r in releases:
        if r["id"] not in gone:
            link = os.path.join(releases_dir, r["id"], "venv")
            if os.path.islink(link) or os.path.exists(link):
                used.add(os.path.realpath(link))
    try:
        venvs = [os.path.realpath(os.path.join(venvs_dir, n)) for n in sorted(os.listdir(venvs_dir))]
    except FileNotFoundError:
        venvs = []
    unused = [v for v in venvs if os.path.isdir(v) and v not in used]
    if not check_mode:
        for rid in gone:
            shutil.rmtree(os.path.join(releases_dir, rid))
        for v in unused:
            shutil.rmtree(v)
    return gone, unused


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "list",
                      "choices": ["list", "failed", "served", "pruned", "settled", "chosen"]},
            "failed": {"type": "dict", "default": {}},
            "root": {"type": "path"},
            "release": {"type": "str"},
            "reason": {"type": "str", "default": ""},
            "keep": {"type": "int", "default": 5},
            "protect": {"type": "list", "elements": "str", "default": []},
            "fleet": {"type": "dict", "default": {}},
            "wanted": {"type": "str", "default": ""},
        },
        required_if=[("state", "list", ["root"]), ("state", "failed", ["root", "release"]),
                     ("state", "served", ["root", "release"]), ("state", "pruned", ["root"]),
                     ("state", "settled", ["root"])],
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "chosen":
        target, source, error = choose(p["fleet"], p["wanted"])
        module.exit_json(changed=False, target=target, rollback_from=source, error=error,
                         releases=list(reversed(fleet_view(p["fleet"]))))
    root = p["root"].rstrip("/") or "/"
    if p["state"] == "list":
        releases, current = read_all(root)
        module.exit_json(changed=False, releases=releases, current=current,
                         rollback_target=rollback_target(releases, current))
    if p["state"] in ("failed", "served"):
        name = "FAILED" if p["state"] == "failed" else "SERVED"
        text = (p["reason"] or "failed") if name == "FAILED" else now_text()
        changed = mark(os.path.join(root, "releases"), p["release"], name, text, module.check_mode)
        module.exit_json(changed=changed, release=p["release"])
    if p["keep"] < 1:
        module.fail_json(msg=f"keep must be 1 or more, not {p['keep']}")
    marked = []
    if p["state"] == "settled":
        releases_dir = os.path.join(root, "releases")
        marked = [rid for rid, reason in sorted(p["failed"].items())
                  if mark(releases_dir, rid, "FAILED", str(reason or "failed"), module.check_mode)]
        current = read_all(root)[1]
        if current and mark(releases_dir, current, "SERVED", now_text(), module.check_mode):
            marked.append(f"{current} served")
    gone, unused = prune(root, p["keep"], p["protect"], module.check_mode)
    module.exit_json(changed=bool(marked or gone or unused), marked=marked, removed=gone, removed_venvs=unused)


if __name__ == "__main__":
    main()
