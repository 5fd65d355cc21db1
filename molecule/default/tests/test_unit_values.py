"""Values reach uvicorn exactly as given: an argument of fastapi_service_extra_args holding
'%', '$', quotes, a backslash, a ';' and spaces is one argument, unchanged (systemd would
otherwise expand specifiers and variables, or split it). uvicorn's --header shows it: the
app's answers carry that header, byte for byte. The converged state comes back when the module
ends."""

import json

import pytest

from deploytest import run_playbook, serving

pytestmark = pytest.mark.usefixtures("restore")
VALUE = '50% of $HOME and %n, "double" \'single\' back\\slash; end'


def test_an_argument_reaches_uvicorn_unchanged(host, name):
    result = run_playbook("-e", json.dumps({"fastapi_service_extra_args": ["--header", f"X-Deploy-Test:{VALUE}"]}))
    assert result.returncode == 0, result.stdout[-4000:]
    unit, port = serving(host)
    headers = host.check_output(f"curl -sS -D - -o /dev/null http://127.0.0.1:{port}/health")
    got = [line.split(":", 1)[1].strip() for line in headers.splitlines() if line.lower().startswith("x-deploy-test:")]
    assert got == [VALUE], headers
    # and systemd itself reads the unit as one argument (nothing left over for it to expand)
    assert "X-Deploy-Test:" in host.check_output(f"systemctl show -p ExecStart {unit}")
