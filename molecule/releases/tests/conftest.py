"""Fixtures of the releases scenario: the default scenario's single-host layout on a host of
its own (molecule/resources/single_host.py), for the tests of the release lifecycle (releases,
rollback, pruning, git), the lock file and the secrets, which run beside the default
scenario's. Every test file stands alone, as there (deploytest.py's `converged` and `restore`).
"""

from deploytest import baseline, converged, pytest_collection_modifyitems, restore  # noqa: F401  (fixtures, hook)
from single_host import fixtures_for

INSTANCE, _fixtures = fixtures_for(__file__)
globals().update(_fixtures)
