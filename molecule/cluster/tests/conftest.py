"""Fixtures of the cluster scenario: two load balancers and two app hosts. The helpers are in
molecule/resources/deploytest.py. Every test file stands alone: one that changes what the
hosts serve (the `restore` fixture) has the converged state deployed again before the next
module starts (the `converged` fixture), not after the last one (destroy follows).

A load (`url`, `balancer_host`) goes through both balancers, half its clients each, and reads
both balancers' upstream logs; `lb_ip` is the first balancer's address, `lb_ips` both."""

from pathlib import Path

import pytest

import deploytest
from deploytest import baseline, converged, restore  # noqa: F401  (fixtures: the converged state, a load's baseline)

PLATFORMS = deploytest.use_scenario(Path(__file__).resolve().parents[1])
LBS = [p["name"] for p in PLATFORMS if "fastapi_proxies" in p["groups"]]
LB = LBS[0]
APPS = [p["name"] for p in PLATFORMS if "fastapi_servers" in p["groups"]]


@pytest.fixture(scope="module")
def hosts():
    return {name: deploytest.ssh_host(name) for name in [*LBS, *APPS]}


@pytest.fixture(scope="module")
def lb_ips():
    return [deploytest.container_ip(name) for name in LBS]


@pytest.fixture(scope="module")
def lb_ip(lb_ips):
    return lb_ips[0]


@pytest.fixture(scope="module")
def url(lb_ips):
    """Every balancer's URL: a Load shares its clients out among them."""
    return [f"https://{ip}/" for ip in lb_ips]


@pytest.fixture(scope="module")
def balancer_host(hosts):
    """The load balancers, in the order of `url`: their upstream logs."""
    return [hosts[name] for name in LBS]
