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
