"""Secrets: a value from fastapi_app_secret_environment reaches the app's processes and its
0640 root:app environment file, and nowhere else: not in a deploy's output at -vvv --diff,
not in the unit file, not in the journal. Changing it restarts the app with the new value
through the zero-downtime path (0 failed requests under load). The converged state comes
back when the module ends."""

import json
import uuid

import pytest

from deploytest import ROOT, Load, main_pid, run_playbook, serving

pytestmark = pytest.mark.usefixtures("restore")
SECRETS = [f"s3cr3t-{uuid.uuid4().hex}", f"s3cr3t-{uuid.uuid4().hex}"]


def _worker_environ(host, name):
    pid = main_pid(host, name)
    return pid, host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")


@pytest.mark.parametrize("index", [0, 1], ids=["new-secret", "changed-secret"])
def test_secret_reaches_the_app_and_nothing_else(host, svars, name, url, index):
    secret = SECRETS[index]
    pid_before, _ = _worker_environ(host, name)
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    load = Load(url, span_field="pid")
    result = run_playbook("-vvv", "--diff", "-e", json.dumps({"fastapi_app_secret_environment": {"API_TOKEN": secret}}))
    stats = load.stop()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]

    # the app has it, through its environment file
    pid, environ = _worker_environ(host, name)
    assert pid != pid_before, "a changed secret restarts the app"
    assert f"API_TOKEN={secret}" in environ.splitlines()
    current = host.check_output(f"readlink -f {ROOT}/current")
    env = host.file(f"{current}/app.env")
    assert (env.user, env.group, env.mode) == ("root", "fastapi", 0o640)
    assert secret in env.content_string
    # nobody else: not the deploy's output, the unit, the journal; no private key printed
    assert secret not in out
    assert "PRIVATE KEY" not in out
    assert secret not in host.check_output(f"cat /etc/systemd/system/{serving(host)[0]}.*")
    journal = host.run(f"journalctl --since '{since}' --no-pager -o cat")
    assert journal.rc == 0 and journal.stdout.strip(), "the journal has the deploy"
    assert secret not in journal.stdout
    # the other users of the host cannot read it
    assert host.run(f"runuser -u nobody -- cat {current}/app.env").rc != 0
    # and the switch to it failed no request: old workers answered before it, new ones after
    assert stats["failed"] == 0, stats
    assert stats["started_at"] < result.started and stats["ended_at"] > result.ended, stats
    before = {p for p, (first, _) in stats["spans"].items() if first < result.started}
    after = {p for p, (_, last) in stats["spans"].items() if last > result.ended}
    assert before and after and not before & after, stats["spans"]
    bound = svars["fastapi_service_timeout_stop_sec"] + 10
    assert stats["max_latency_s"] <= bound, f"a request waited {stats['max_latency_s']} s (bound {bound} s)"
