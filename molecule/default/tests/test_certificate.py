"""A certificate of the user's own (fastapi_proxy_tls_certificate and _key, files on the
controller) replaces the self-signed one: clients that trust the user's CA verify the
connection by the host's name and address, the key lands 0600 root and is never printed, and
the summary no longer says SELF-SIGNED. The converged state (self-signed) comes back when
the module ends."""

import subprocess

import pytest

from deploytest import PROXY_VARS, https_get, run_playbook

pytestmark = pytest.mark.usefixtures("restore")
NAME = PROXY_VARS["fastapi_proxy_name"]


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
def deployed(certificate):
    result = run_playbook("--diff", "-e", f"fastapi_proxy_tls_certificate={certificate / 'site.crt'}",
                          "-e", f"fastapi_proxy_tls_certificate_key={certificate / 'site.key'}")
    assert result.returncode == 0, result.stdout[-4000:]
    return result


def test_clients_verify_the_users_certificate(deployed, certificate, address):
    # ssl's default context checks the chain against the CA and the address against the SAN
    status, _, body, tls = https_get(address, "/health", cafile=certificate / "ca.crt")
    assert status == 200 and tls in ("TLSv1.2", "TLSv1.3"), body
    assert "SELF-SIGNED" not in deployed.flat


def test_the_users_key_is_root_only_and_never_printed(deployed, certificate, host):
    key = host.file(f"/etc/ssl/private/fastapi-{NAME}.key")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    assert key.content_string.strip() == (certificate / "site.key").read_text().strip()
    assert "PRIVATE KEY" not in deployed.stdout + deployed.stderr
    assert host.file(f"/etc/ssl/certs/fastapi-{NAME}.crt").content_string == (certificate / "site.crt").read_text()
    assert f"ssl_certificate /etc/ssl/certs/fastapi-{NAME}.crt;" in host.file(
        f"/etc/nginx/conf.d/fastapi-{NAME}.conf").content_string
