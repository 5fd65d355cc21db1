"""Each change to what the app hosts serve (port, workers, environment, code with a slow
request in progress) switches new beside old, one host at a time, under load through the
balancer: the shared tests of molecule/resources/switch_tests.py."""

import pytest

from conftest import APPS, LB
from switch_tests import *  # noqa: F401,F403  (the shared tests, collected by pytest)


@pytest.fixture(scope="module")
def app_hosts(hosts):
    return {name: hosts[name] for name in APPS}


@pytest.fixture(scope="module")
def balancer(hosts):
    return hosts[LB]


@pytest.fixture(scope="module")
def name():
    return "hello-api"


@pytest.fixture(scope="module")
def rollout():
    """Half the app hosts at a time (fastapi_deploy_serial as a percentage): two batches of one."""
    return ["-e", "fastapi_deploy_serial=50%"], 2
