"""The VM is reached over SSH like a user's server (the shared tests of
molecule/resources/transport_tests.py)."""

from transport_tests import *  # noqa: F401,F403  (the shared tests, collected by pytest)
