"""What reaches the host is exactly what the user meant, and nothing more.

Environment values (tricky bytes: quotes, '$', '%', backslashes, newlines, non-ASCII letters,
spaces) reach the app's own process byte for byte. Secrets (fastapi_app_secret_environment,
and a package index URL with a password in it) are in the 0640 root:app environment file and
a 0600 /etc/pip.conf, and nowhere else: not in a deploy's output at -vvv --diff, not in the
unit file, not in the journal. Changing a secret restarts the app through the zero-downtime
path (0 failed requests under load).

The same deploys carry the user's own certificate for nginx (fastapi_proxy_tls_certificate and
_key, files on the controller) in place of the self-signed one: clients that trust the user's CA
verify the connection by the host's name and address, the key lands 0600 root and is never
printed, and the summary no longer says SELF-SIGNED. And an argument of
fastapi_service_extra_args holding '%', '$', quotes, a backslash, a ';' and spaces reaches
uvicorn as one argument, unchanged (systemd would otherwise expand specifiers and variables, or
split it): uvicorn's --header shows it in the app's answers, byte for byte.

The deploys also ship code as a developer's directory holds it (a .env file, a .git
directory, a virtualenv, caches, world-writable modes) to an app root spelt with a trailing
slash and two releases kept: none of the clutter reaches the release, the code and the
virtualenv are read-only for the app, and pruning keeps exactly the two releases deployed
here, with what they use. The converged state comes back before the next module."""

import base64
import json
import os
import subprocess
import uuid

import pytest

from deploytest import (PROXY_VARS, ROOT, Load, app_copy, assert_latency_within, current_release, http_get,
                        https_get, main_pid, releases, run_playbook, serving)

pytestmark = pytest.mark.usefixtures("restore")
# Its deploys give every setting it checks (code, environment, certificate, arguments): any
# serving state will do.
STARTS_FROM_ANY_SERVING_STATE = True
SECRETS = [f"s3cr3t-{uuid.uuid4().hex}", f"s3cr3t-{uuid.uuid4().hex}"]
PIP_PASSWORD = f"pipPW-{uuid.uuid4().hex}"
# No "{{" or "{%": Ansible would template those (quote them with !unsafe in an inventory).
TRICKY = {
    "APP_VERSION": "1.0.0",
    "QUOTES": "single ' double \" back ` tick",
    "DOLLARS": "$HOME ${PATH} $$ \\$ %i %% 100%",
    "BACKSLASHES": "C:\\path\\to\\ \\n is not a newline \\",
    "PEM": "-----BEGIN TEST KEY-----\nMIIB+line/two==\n  indented\n-----END TEST KEY-----\n",
    "UNICODE": "Grüße, café, Ελληνικά, 東京 🚀",
    "SPACES": "  leading and trailing  ",
    "HASH": "# not a comment ; nor this",
    "EMPTY": "",
    "NUMBER": 42,
}
HEADER_VALUE = '50% of $HOME and %n, "double" \'single\' back\\slash; end'
SITE = PROXY_VARS["fastapi_proxy_name"]
DEPLOYED = {}  # index -> (result, release)
CLUTTER = [".env", ".env.local", ".envrc", ".git/config", "venv/bin/python", ".venv/pyvenv.cfg",
           "__pycache__/main.cpython-311.pyc", ".pytest_cache/README.md", "sub/__pycache__/x.pyc"]


def _environ(host, name):
    """The environment of the app's main process, as bytes per name (read from /proc)."""
    pid = main_pid(host, name)
    raw = base64.b64decode(host.check_output(f"base64 -w0 /proc/{pid}/environ"))
    return pid, dict(entry.split(b"=", 1) for entry in raw.split(b"\0") if entry)


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory, instance, address):
    """A CA, and a certificate it signed for the host's name and address."""
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", "/CN=fastapi-deploy test CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={instance}",
             "-keyout", str(d / "site.key"), "-out", str(d / "site.csr"))
    (d / "san.ext").write_text(f"subjectAltName=DNS:{instance},IP:{address}\n")
    _openssl("x509", "-req", "-in", str(d / "site.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.ext"), "-out", str(d / "site.crt"))
    return d


@pytest.fixture(scope="module")
def cluttered_src(tmp_path_factory):
    src = app_copy(tmp_path_factory, "cluttered")
    for rel in CLUTTER:
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("LEAKED-CLUTTER\n")
    (src / "RELEASE_NOTE").chmod(0o666)
    (src / "sub").chmod(0o777)
    os.symlink("/etc/hostname", src / "hostname-link")
    return src


@pytest.mark.parametrize("index", [0, 1], ids=["new-secret", "changed-secret"])
def test_secret_reaches_the_app_and_nothing_else(host, svars, name, url, index, cluttered_src, certificate, baseline):
    secret = SECRETS[index]
    extra = {"fastapi_app_secret_environment": {"API_TOKEN": secret, "TLS_KEY": TRICKY["PEM"] + secret},
             "fastapi_host_pip_index_url": f"https://deploy-user:{PIP_PASSWORD}@pypi.org/simple",
             "fastapi_app_environment": TRICKY, "fastapi_app_src": str(cluttered_src),
             "fastapi_host_root": ROOT + "/", "fastapi_app_keep_releases": 2,
             "fastapi_service_extra_args": ["--header", f"X-Deploy-Test:{HEADER_VALUE}"],
             "fastapi_proxy_tls_certificate": str(certificate / "site.crt"),
             "fastapi_proxy_tls_certificate_key": str(certificate / "site.key")}
    pid_before, _ = _environ(host, name)
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    load = Load(url, span_field="pid", balancer=host)
    result = run_playbook("-vvv", "--diff", "-e", json.dumps(extra))
    stats = load.stop()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    DEPLOYED[index] = (result, current_release(host))

    # the app has it, through its environment file, byte for byte
    pid, environ = _environ(host, name)
    assert pid != pid_before, "a changed secret restarts the app"
    assert environ[b"API_TOKEN"] == secret.encode()
    assert environ[b"TLS_KEY"] == (TRICKY["PEM"] + secret).encode()
    for key, value in TRICKY.items():
        assert environ[key.encode()] == str(value).encode("utf-8"), key
    current = host.check_output(f"readlink -f {ROOT}/current")
    env = host.file(f"{current}/app.env")
    assert (env.user, env.group, env.mode) == ("root", "fastapi", 0o640)
    assert secret in env.content_string
    # the package index password: in root's own /etc/pip.conf only
    pip_conf = host.file("/etc/pip.conf")
    assert (pip_conf.user, pip_conf.mode) == ("root", 0o600)
    assert PIP_PASSWORD in pip_conf.content_string
    # nobody else: not the deploy's output, the unit, the journal; no private key printed
    for planted in (secret, PIP_PASSWORD, "BEGIN TEST KEY"):
        assert planted not in out, f"{planted} printed by the deploy"
    assert "PRIVATE KEY" not in out
    assert secret not in host.check_output(f"cat /etc/systemd/system/{serving(host)[0]}.*")
    journal = host.run(f"journalctl --since '{since}' --no-pager -o cat")
    assert journal.rc == 0 and journal.stdout.strip(), "the journal has the deploy"
    assert secret not in journal.stdout and PIP_PASSWORD not in journal.stdout
    # the other users of the host cannot read them; the app cannot read pip's
    assert host.run(f"runuser -u nobody -- cat {current}/app.env").rc != 0
    assert host.run("runuser -u fastapi -- cat /etc/pip.conf").rc != 0
    # and the switch to it failed no request: old workers answered before it, new ones after
    assert stats["failed"] == 0, stats
    assert stats["upstream_failures"] == [] and stats["upstream_lines"] >= stats["ok"], stats
    assert stats["started_at"] < result.started and stats["ended_at"] > result.ended, stats
    before = {p for p, (first, _) in stats["spans"].items() if first < result.started}
    after = {p for p, (_, last) in stats["spans"].items() if last > result.ended}
    assert before and after and not before & after, stats["spans"]
    assert_latency_within(stats, baseline)


def test_clients_verify_the_users_certificate(certificate, address):
    # ssl's default context checks the chain against the CA and the address against the SAN
    status, _, body, tls = https_get(address, "/health", cafile=certificate / "ca.crt")
    assert status == 200 and tls in ("TLSv1.2", "TLSv1.3"), body
    first, _ = DEPLOYED[0]
    assert "SELF-SIGNED" not in first.flat


def test_the_users_key_is_root_only_and_never_printed(certificate, host):
    key = host.file(f"/etc/ssl/private/fastapi-{SITE}.key")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    assert key.content_string.strip() == (certificate / "site.key").read_text().strip()
    for result, _ in DEPLOYED.values():
        assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert host.file(f"/etc/ssl/certs/fastapi-{SITE}.crt").content_string == (certificate / "site.crt").read_text()
    assert f"ssl_certificate /etc/ssl/certs/fastapi-{SITE}.crt;" in host.file(
        f"/etc/nginx/conf.d/fastapi-{SITE}.conf").content_string


def test_an_argument_reaches_uvicorn_unchanged(host):
    unit, port = serving(host)
    headers = host.check_output(f"curl -sS -D - -o /dev/null http://127.0.0.1:{port}/health")
    got = [line.split(":", 1)[1].strip() for line in headers.splitlines() if line.lower().startswith("x-deploy-test:")]
    assert got == [HEADER_VALUE], headers
    # and systemd itself reads the unit as one argument (nothing left over for it to expand)
    assert "X-Deploy-Test:" in host.check_output(f"systemctl show -p ExecStart {unit}")


def test_the_release_holds_the_code_and_nothing_else(host):
    """After the deploys above (from the cluttered directory): no clutter shipped."""
    release = host.check_output(f"readlink -f {ROOT}/current")
    shipped = host.check_output(f"cd {release}/app && find . -mindepth 1 | sort").split()
    assert "./main.py" in shipped and "./RELEASE_NOTE" in shipped, shipped
    for rel in CLUTTER:
        top = "./" + rel.split("/")[0]
        assert top not in shipped or top == "./sub", f"{rel} was shipped: {shipped}"
    assert "./sub/__pycache__" not in shipped
    assert host.run(f"grep -rl LEAKED-CLUTTER {release}/app").rc == 1, "clutter in the release"
    # a link in the code is shipped as a link; what it points at is left alone
    assert host.file(f"{release}/app/hostname-link").is_symlink
    assert (host.file("/etc/hostname").user, host.file("/etc/hostname").mode) == ("root", 0o644)


def test_code_and_virtualenv_are_read_only_for_the_app(host, name):
    release = host.check_output(f"readlink -f {ROOT}/current")
    venv = host.check_output(f"readlink -f {release}/venv")
    # whatever modes the source had (0666, 0777): root's, readable by the app's group only
    loose = host.check_output(f"find {release}/app {venv} ! -type l \\( -perm /022 -o ! -user root \\) | head -5")
    assert loose == "", f"writable by others than root: {loose}"
    note = host.file(f"{release}/app/RELEASE_NOTE")
    assert (note.user, note.group, note.mode) == ("root", "fastapi", 0o640)
    site = host.check_output(f"ls -d {venv}/lib/python3*/site-packages")
    for target in (f"{release}/app/main.py", f"{release}/app/new.py", f"{release}/app/sub/new.py",
                   f"{venv}/bin/python", f"{site}/fastapi/__init__.py", f"{site}/sitecustomize.py", f"{release}/app.env"):
        wrote = host.run(f"runuser -u fastapi -- sh -c 'echo x >> {target}'")
        assert wrote.rc != 0 and "Permission denied" in wrote.stderr, f"the app user could write {target}"
    assert http_get(host, "/health")[0] == 200


def test_pruning_keeps_what_kept_releases_use(host, name):
    """The deploys spelt the app root with a trailing slash and kept 2 releases: pruning
    removed older releases (every release but the two made here), but never a virtualenv a kept
    release links to, and the serving app still starts from it."""
    kept = releases(host)
    assert set(kept) == {release for _, release in DEPLOYED.values()} and len(kept) == 2, (kept, DEPLOYED)
    for release in kept:
        venv = host.check_output(f"readlink -f {ROOT}/releases/{release}/venv")
        assert host.file(f"{venv}/bin/python").exists, f"release {release} lost its virtualenv {venv}"
    unit = serving(host)[0]
    text = host.file(f"/etc/systemd/system/{unit}.service").content_string
    assert f"{ROOT}/releases/" in text and f"{ROOT}//" not in text, "the root is spelt one way"
    # the app's next restart (the bug: it died there) starts from the same virtualenv
    assert host.run(f"systemctl restart {unit}.service").rc == 0
    # once its new workers have imported the app (over 5 s on a loaded machine)
    assert http_get(host, "/health", timeout=90)[0] == 200
