#!/usr/bin/python
"""Ansible module of the fastapi_service role: what instances of an app a host has, and which
one serves. Reads only; changes nothing."""

DOCUMENTATION = r"""
module: fastapi_service_instances
short_description: The instances of a FastAPI app on a host, and the one that serves
description:
  - An app runs as one instance, two while it switches: each a pair of units
    C(<name>-a.socket)/C(<name>-a.service) or C(<name>-b.socket)/C(<name>-b.service) written by
    the fastapi_service role. The one that serves is named in C(<state_dir>/<name>.serving)
    (written when a switch completes); a host deployed before instances existed has
    C(<name>.service) and C(<name>.socket), which then serve.
  - Returns every instance with its port, release, fingerprint (of its unit files' settings),
    whether systemd has it enabled and active, and whether a rewrite of its files in place was
    interrupted (the copy of its previous unit file is still there); the one that serves; and the stale ones
    (any other: a candidate or an old instance a run left behind when it was interrupted).
  - C(<name>.service) without a slot is also what serves on a host without a load balancer whose
    app was first deployed before instances existed: its files are rewritten in place there.
options:
  name:
    description: The app's unit name (fastapi_service_name).
    type: str
    required: true
  units_dir:
    description: Where the unit files are.
    type: path
    default: /etc/systemd/system
  state_dir:
    description: Where the name of the serving instance is kept.
    type: path
    default: /var/lib/fastapi-deploy
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

MARK = "# fastapi-deploy "


def parse_unit(text):
    """The '# fastapi-deploy <key>: <value>' lines of a unit file written by the role."""
    info = {}
    for line in text.splitlines():
        if line.startswith(MARK) and ":" in line:
            key, value = line[len(MARK):].split(":", 1)
            info[key.strip()] = value.strip()
    return info


def listen_port(socket_text):
    """The port of a socket unit's ListenStream= ('host:port', '[v6]:port' or 'port'), or None."""
    for line in socket_text.splitlines():
        m = re.match(r"^ListenStream=(?:.*:)?([0-9]+)\s*$", line.strip())
        if m:
            return int(m.group(1))
    return None


def find_instances(name, files):
    """Instances from a {file name: text} map of the units directory."""
    instances = []
    for slot in ("a", "b", None):
        unit = f"{name}-{slot}" if slot else name
        text = files.get(f"{unit}.service")
        if text is None:
            continue
        info = parse_unit(text)
        instances.append({
            # written before instances existed (no fingerprint): always replaced
            "unit": unit, "slot": slot or "", "legacy": not info.get("fingerprint"),
            "port": listen_port(files.get(f"{unit}.socket", "")),
            "release": info.get("release", ""), "fingerprint": info.get("fingerprint", ""),
        })
    return instances


def choose_serving(instances, recorded):
    """The instance that serves: the one recorded when the last switch completed, or else (a
    host from before instances existed) the legacy unit, or else, when the record is missing or
    names no instance (lost, or written by hand), the one instance enabled at boot: a switch
    enables the new instance only once it passed its health check and the balancers moved to
    it. None when nothing serves, or when several are enabled (ambiguous()) and none recorded."""
    by_unit = {i["unit"]: i for i in instances}
    if recorded in by_unit:
        return by_unit[recorded]
    unslotted = [i for i in instances if not i["slot"]]
    if unslotted:
        return unslotted[0]
    enabled = [i for i in instances if i.get("enabled")]
    return enabled[0] if len(enabled) == 1 else None


def ambiguous(instances, recorded):
    """The instances that could each be the one serving when no (known) instance is recorded:
    several enabled at boot. Empty when choose_serving could tell."""
    if recorded in {i["unit"] for i in instances} or any(not i["slot"] for i in instances):
        return []
    enabled = [i["unit"] for i in instances if i.get("enabled")]
    return enabled if len(enabled) > 1 else []


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "units_dir": {"type": "path", "default": "/etc/systemd/system"},
            "state_dir": {"type": "path", "default": "/var/lib/fastapi-deploy"},
        },
        supports_check_mode=True,
    )
    name = module.params["name"]
    units_dir = module.params["units_dir"]
    files = {}
    if os.path.isdir(units_dir):
        for filename in os.listdir(units_dir):
            if filename.startswith(name) and filename.endswith((".service", ".socket")):
                path = os.path.join(units_dir, filename)
                if os.path.isfile(path):
                    with open(path, encoding="utf-8", errors="replace") as f:
                        files[filename] = f.read()
    instances = find_instances(name, files)
    systemctl = module.get_bin_path("systemctl")
    for instance in instances:
        # A copy of the unit file kept while a serving instance is rewritten in place (promote.yml):
        # still there, that rewrite was interrupted and the instance may run on settings that
        # were never checked.
        instance["interrupted"] = os.path.exists(os.path.join(units_dir, f".{instance['unit']}.service.previous"))
        for state in ("enabled", "active"):
            if systemctl:
                rc, _, _ = module.run_command([systemctl, f"is-{state}", "--quiet", instance["unit"] + ".service"])
                instance[state] = rc == 0
            else:
                instance[state] = False
    recorded = ""
    state_file = os.path.join(module.params["state_dir"], f"{name}.serving")
    if os.path.isfile(state_file):
        with open(state_file, encoding="utf-8") as f:
            recorded = f.read().strip()
    unclear = ambiguous(instances, recorded)
    if unclear:
        module.fail_json(msg=(
            f"{state_file} names no instance of {name} ({recorded or 'it is missing'}), and {' and '.join(unclear)} "
            "are both enabled at boot: which one the load balancers send to cannot be told, and the other would be "
            f"stopped. Write the name of the one that serves into {state_file} (for example: echo {unclear[0]} > "
            f"{state_file}), then run again. Nothing was changed."))
    serving = choose_serving(instances, recorded)
    if serving and serving["slot"] and serving["unit"] != recorded:
        module.warn(f"{state_file} names no instance of {name} ({recorded or 'it is missing'}): "
                    f"{serving['unit']}, the one enabled at boot, is taken as the one that serves.")
    stale = [i for i in instances if serving is None or i["unit"] != serving["unit"]]
    module.exit_json(changed=False, instances=instances, serving=serving or {}, stale=stale, recorded=recorded)


if __name__ == "__main__":
    main()
