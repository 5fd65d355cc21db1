"""Fixtures of the single-host scenarios (default and releases): one container that is both
the app host and its nginx proxy (the single-host layout), converged with the sandbox
inventory's settings. A scenario's conftest calls `fixtures_for(__file__)` and star-imports
the result; the helpers are in deploytest.py."""

from pathlib import Path

import pytest

import deploytest


def fixtures_for(conftest_file):
    """The scenario's fixtures, for the conftest at `conftest_file` (molecule/<scenario>/tests)."""
    platforms = deploytest.use_scenario(Path(conftest_file).resolve().parents[1])
    name_of_instance = platforms[0]["name"]

    @pytest.fixture(scope="module")
    def instance():
        return name_of_instance

    @pytest.fixture(scope="module")
    def host():
        return deploytest.ssh_host(name_of_instance)

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
        return deploytest.container_ip(name_of_instance)

    @pytest.fixture(scope="module")
    def url(address):
        """The app as clients reach it: through nginx, over HTTPS."""
        return f"https://{address}/"

    return name_of_instance, {"instance": instance, "host": host, "balancer_host": balancer_host, "svars": svars,
                              "name": name, "unit_path": unit_path, "address": address, "url": url}
