"""Filters of the fastapi_app role: what is awkward to say in Jinja.

fastapi_env_bad_values   the names of environment values systemd cannot carry
fastapi_redact_url       a URL with its user name and password (or token) replaced by "***"
fastapi_url_has_credentials   whether a URL carries a user name, password or token
fastapi_lock_check_problems   what `pip check` found in a virtualenv built from a lock file
fastapi_lock_check_message    the error for a lock file that is incomplete or inconsistent
"""

import re

# scheme://userinfo@host...: the userinfo is everything up to the last "@" before the path
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")


def fastapi_env_bad_values(environment):
    """Names whose values cannot reach the app exactly: lists, mappings, None, or a NUL
    character (systemd's EnvironmentFile= cannot carry one). Strings, numbers and booleans
    are fine; the values themselves are never returned."""
    bad = []
    for name, value in sorted((environment or {}).items(), key=lambda kv: str(kv[0])):
        if isinstance(value, bool) or isinstance(value, (int, float)):
            continue
        if isinstance(value, str) and "\x00" not in value:
            continue
        bad.append(str(name))
    return bad


def fastapi_url_has_credentials(url):
    match = _USERINFO.match(str(url or ""))
    return bool(match and match.group("userinfo"))


def fastapi_redact_url(text):
    """Replace the userinfo of every URL in text (a URL, or an error message that quotes one)."""
    return re.sub(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@", r"\g<scheme>***@", str(text or ""))


# `pip check` (pip 23 to 26): "<name> <version> requires <req>, which is not installed." and
# "<name> <version> has requirement <req>, but you have <name> <version>."
_MISSING = re.compile(r"^(?P<by>\S+ \S+) requires (?P<req>.+?), which is not installed\.?$")
_CONFLICT = re.compile(r"^(?P<by>\S+ \S+) has requirement (?P<req>.+?), but you have (?P<have>.+?)\.?$")
_REQ_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def fastapi_lock_check_problems(pip_check_output):
    """What `pip check` found: {"missing": {package: [required by, ...]}, "conflicts": [...],
    "other": [...]}. Packages are named as PyPI does (lower case, '-')."""
    missing, conflicts, other = {}, [], []
    for line in str(pip_check_output or "").splitlines():
        line = line.strip()
        if not line or line.lower().startswith("no broken requirements"):
            continue
        found = _MISSING.match(line)
        if found:
            name = _REQ_NAME.match(found.group("req"))
            key = _canonical(name.group(0)) if name else found.group("req")
            missing.setdefault(key, []).append(found.group("by"))
            continue
        found = _CONFLICT.match(line)
        if found:
            conflicts.append(f"{found.group('by')} needs {found.group('req')}, but the lock has {found.group('have')}")
            continue
        other.append(line)
    return {"missing": {k: sorted(v) for k, v in sorted(missing.items())}, "conflicts": conflicts, "other": other}


def fastapi_lock_check_message(pip_check_output, lock_file):
    """The error for a virtualenv that `pip check` found broken after an install of exactly what
    the lock file lists: each missing or conflicting package named, and how to make a complete lock."""
    problems = fastapi_lock_check_problems(pip_check_output)
    lines = []
    for name, by in problems["missing"].items():
        lines.append(f"missing: {name} (needed by {', '.join(by)}) is not in the lock file")
    lines += [f"conflict: {c}" for c in problems["conflicts"]]
    lines += [f"pip check: {o}" for o in problems["other"]]
    if not lines:
        lines.append("pip check failed without saying why")
    return (
        f"The lock file {lock_file} is incomplete or inconsistent. Only what it lists is installed "
        "(pip install --no-deps --require-hashes: nothing is resolved against the index), and then "
        "pip check found: " + "; ".join(lines) + ". The new release is not served; the current one serves on. "
        "A lock must list every package the app needs, each pinned with == and with its hashes: "
        "regenerate it from your requirements.in with 'scripts/lock.sh APP_DIR' (uv pip compile "
        "--universal --generate-hashes) or 'pip-compile --generate-hashes --allow-unsafe', and "
        "deploy again."
    )


class FilterModule:
    def filters(self):
        return {
            "fastapi_env_bad_values": fastapi_env_bad_values,
            "fastapi_redact_url": fastapi_redact_url,
            "fastapi_url_has_credentials": fastapi_url_has_credentials,
            "fastapi_lock_check_problems": fastapi_lock_check_problems,
            "fastapi_lock_check_message": fastapi_lock_check_message,
        }
