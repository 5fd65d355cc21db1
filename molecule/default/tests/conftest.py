"""Fixtures of the default scenario: one host that is both the app host and its nginx proxy
(the single-host layout), converged with the sandbox inventory's settings (the fixtures are
molecule/resources/single_host.py's, the helpers deploytest.py's). Every test file stands
alone: one that changes what the host serves (the `restore` fixture) has the converged state
deployed again before the next module starts (the `converged` fixture), not after the last
one (destroy follows); the modules that change nothing run first (deploytest.py's
`pytest_collection_modifyitems`), so that they need no restore.
"""

from deploytest import baseline, converged, pytest_collection_modifyitems, restore  # noqa: F401  (fixtures, hook)
from single_host import fixtures_for

INSTANCE, _fixtures = fixtures_for(__file__)
globals().update(_fixtures)
