"""Each change to what the host serves (port, workers, environment, code with a slow request
in progress) switches new beside old under load through nginx on the host: the shared tests
of molecule/resources/switch_tests.py."""

import pytest

from switch_tests import *  # noqa: F401,F403  (the shared tests, collected by pytest)


@pytest.fixture(scope="module")
def app_hosts(host, instance):
    return {instance: host}


@pytest.fixture(scope="module")
def balancer(host):
    return host


@pytest.fixture(scope="module")
def rollout():
    """Every deploy as it comes: one host, one batch."""
    return [], 1
