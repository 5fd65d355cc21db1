"""Filters of the fastapi_app role: what is awkward to say in Jinja.

fastapi_env_bad_values   the names of environment values systemd cannot carry
fastapi_redact_url       a URL with its user name and password (or token) replaced by "***"
fastapi_url_has_credentials   whether a URL carries a user name, password or token
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


class FilterModule:
    def filters(self):
        return {
            "fastapi_env_bad_values": fastapi_env_bad_values,
            "fastapi_redact_url": fastapi_redact_url,
            "fastapi_url_has_credentials": fastapi_url_has_credentials,
        }
