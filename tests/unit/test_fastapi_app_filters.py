"""Unit tests of the fastapi_app role's filters (roles/fastapi_app/filter_plugins/fastapi_app.py):
which environment values are refused, and how credentials are cut out of URLs and messages."""

import importlib.util
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "roles/fastapi_app/filter_plugins/fastapi_app.py"
spec = importlib.util.spec_from_file_location("fastapi_app_filters", MODULE)
filters = importlib.util.module_from_spec(spec)
spec.loader.exec_module(filters)


def test_values_systemd_can_carry_are_accepted():
    env = {"A": "plain", "B": 'quo"te \\ $HOME %i `x`', "C": "multi\nline\n", "D": "é ü 東京",
           "E": 3, "F": 1.5, "G": True, "H": "", "I": "\t\r\x1b"}
    assert filters.fastapi_env_bad_values(env) == []


def test_values_systemd_cannot_carry_are_named_not_printed():
    env = {"NUL": "a\x00b", "LIST": [1, 2], "MAP": {"a": 1}, "NONE": None, "OK": "fine"}
    bad = filters.fastapi_env_bad_values(env)
    assert bad == ["LIST", "MAP", "NONE", "NUL"]
    assert filters.fastapi_env_bad_values(None) == []


@pytest.mark.parametrize("url, has", [
    ("https://user:pa55@pypi.example.com/simple", True),
    ("https://ghp_token@github.com/org/repo.git", True),
    ("https://u:p@ss@host/x", True),
    ("ssh://git@github.com/org/repo.git", True),
    ("https://pypi.org/simple", False),
    ("git@github.com:org/repo.git", False),
    ("/srv/git/hello.git", False),
    ("https://host/path@v1", False),
    ("", False),
])
def test_url_has_credentials(url, has):
    assert filters.fastapi_url_has_credentials(url) is has


@pytest.mark.parametrize("text, redacted", [
    ("https://user:pa55@pypi.example.com/simple", "https://***@pypi.example.com/simple"),
    ("https://u:p@ss@host/x", "https://***@host/x"),
    ("fatal: could not read from 'https://tok@github.com/o/r.git' and https://a:b@c/d",
     "fatal: could not read from 'https://***@github.com/o/r.git' and https://***@c/d"),
    ("https://host/path@v1", "https://host/path@v1"),
    ("/srv/git/hello.git@0123abcd", "/srv/git/hello.git@0123abcd"),
])
def test_redact_url(text, redacted):
    assert filters.fastapi_redact_url(text) == redacted


# `pip check` in a virtualenv built from an incomplete and inconsistent lock (pip 23.2, as
# printed; pip 25 prints the same two forms).
PIP_CHECK = """\
httpx 0.28.1 requires anyio, which is not installed.
httpx 0.28.1 requires idna, which is not installed.
email-validator 2.3.0 requires idna>=2.0.0, which is not installed.
pydantic 2.12.3 has requirement pydantic-core==2.41.4, but you have pydantic-core 2.41.0.
"""


def test_pip_check_names_each_missing_package_once_with_what_needs_it():
    problems = filters.fastapi_lock_check_problems(PIP_CHECK)
    assert problems["missing"] == {"anyio": ["httpx 0.28.1"], "idna": ["email-validator 2.3.0", "httpx 0.28.1"]}
    assert problems["conflicts"] == ["pydantic 2.12.3 needs pydantic-core==2.41.4, but the lock has pydantic-core 2.41.0"]
    assert problems["other"] == []


def test_pip_check_names_are_canonical_and_lines_it_does_not_know_are_kept():
    problems = filters.fastapi_lock_check_problems(
        "Foo 1.0 requires Typing_Extensions[x]>=4; python_version < '3.12', which is not installed.\n"
        "bar 2.0 is not supported on this platform\nNo broken requirements found.\n")
    assert problems["missing"] == {"typing-extensions": ["Foo 1.0"]}
    assert problems["other"] == ["bar 2.0 is not supported on this platform"]
    assert filters.fastapi_lock_check_problems("No broken requirements found.\n") == \
        {"missing": {}, "conflicts": [], "other": []}


def test_lock_check_message_names_the_lock_the_packages_and_the_fix():
    message = filters.fastapi_lock_check_message(PIP_CHECK, "/src/app/requirements.lock")
    assert "The lock file /src/app/requirements.lock is incomplete or inconsistent" in message
    assert "missing: idna (needed by email-validator 2.3.0, httpx 0.28.1) is not in the lock file" in message
    assert "conflict: pydantic 2.12.3 needs pydantic-core==2.41.4" in message
    assert "scripts/lock.sh APP_DIR" in message
    assert "the current one serves on" in message
    assert "failed without saying why" in filters.fastapi_lock_check_message("", "x.lock")
