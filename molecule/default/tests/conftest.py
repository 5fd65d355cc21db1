"""Fixtures of the default scenario: one host that is both the app host and its nginx proxy
(the single-host layout), converged with the sandbox inventory's settings. The helpers are
in molecule/resources/deploytest.py. Every test file stands alone: one that changes what the
host serves (the `restore` fixture) has the converged state deployed again before the next
module starts (the `converged` fixture), not after the last one (destroy follows).
"""

from pathlib import Path

import pytest
import testinfra

import deploytest
from deploytest import baseline, converged, restore  # noqa: F401  (fixtures: the converged state, a load's baseline)

PLATFORMS = deploytest.use_scenario(Path(__file__).resolve().parents[1])
INSTANCE = PLATFORMS[0]["name"]


@pytest.fixture(scope="module")
def instance():
    return INSTANCE


@pytest.fixture(scope="module")
def host():
    return testinfra.get_host(f"podman://{INSTANCE}")


@pytest.fixture(scope="module")
def balancer_host(host):
    """The nginx in front of the app (on the same host here): its upstream log."""
    return host


@pytest.fixture(scope="module")
def svars():
    """The sandbox settings the scenario was converged with."""
    return deploytest.SANDBOX_VARS


@pytest.fixture(scope="module")
def name(svars):
    return svars["fastapi_service_name"]


@pytest.fixture(scope="module")
def unit_path(name):
    return f"/etc/systemd/system/{name}.service"


@pytest.fixture(scope="module")
def address():
    return deploytest.container_ip(INSTANCE)


@pytest.fixture(scope="module")
def url(address):
    """The app as clients reach it: through nginx, over HTTPS."""
    return f"https://{address}/"
