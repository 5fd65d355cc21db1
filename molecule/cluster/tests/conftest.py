"""Fixtures of the cluster scenario: a load balancer and two app hosts. The helpers are in
molecule/resources/deploytest.py. Every test file stands alone: one that changes what the
hosts serve (the `restore` fixture) has the converged state deployed again before the next
module starts (the `converged` fixture), not after the last one (destroy follows)."""

from pathlib import Path

import pytest
import testinfra

import deploytest
from deploytest import baseline, converged, restore  # noqa: F401  (fixtures: the converged state, a load's baseline)

PLATFORMS = deploytest.use_scenario(Path(__file__).resolve().parents[1])
LB = next(p["name"] for p in PLATFORMS if "fastapi_proxies" in p["groups"])
APPS = [p["name"] for p in PLATFORMS if "fastapi_servers" in p["groups"]]


@pytest.fixture(scope="module")
def hosts():
    return {name: testinfra.get_host(f"podman://{name}") for name in [LB, *APPS]}


@pytest.fixture(scope="module")
def lb_ip():
    return deploytest.container_ip(LB)


@pytest.fixture(scope="module")
def url(lb_ip):
    return f"https://{lb_ip}/"


@pytest.fixture(scope="module")
def balancer_host(hosts):
    """The load balancer: its upstream log."""
    return hosts[LB]
