"""The single-host layout: nginx on the app host terminates TLS, the app listens on loopback
only and sees the real client's address and scheme (proxy headers from nginx alone)."""

import base64
import http.client
import json
import os
import socket
import ssl

import pytest

from deploytest import PROXY_VARS, https_get, https_json, serving

NAME = PROXY_VARS["fastapi_proxy_name"]


def test_https_serves_the_app_with_the_real_client_and_scheme(address):
    data, tls = https_json(address)
    assert data["app"] == "hello_api"
    assert data["scheme"] == "https"
    # The app is reached through nginx on loopback: without proxy headers it would see
    # 127.0.0.1. It must see the controller's address on the podman network instead.
    assert data["client"] not in ("127.0.0.1", None)
    assert data["client"] != address
    assert tls in ("TLSv1.2", "TLSv1.3")


def test_client_address_is_the_one_the_proxy_saw_not_a_spoofed_one(address):
    # A client cannot pick its address by sending X-Forwarded-For itself: nginx appends the
    # real one, and uvicorn takes the address the trusted proxy saw.
    _, _, body, _ = https_get(address, "/", headers={"X-Forwarded-For": "6.6.6.6"})
    assert json.loads(body)["client"] != "6.6.6.6"


def test_http_redirects_to_https(address):
    conn = http.client.HTTPConnection(address, 80, timeout=10)
    conn.request("GET", "/health?x=1")
    resp = conn.getresponse()
    assert resp.status == 301
    assert resp.getheader("Location") == f"https://{address}/health?x=1"


def test_hsts_header(address):
    _, headers, _, _ = https_get(address, "/health")
    assert headers.get("Strict-Transport-Security") == f"max-age={PROXY_VARS['fastapi_proxy_hsts_max_age']}"


def test_tls_1_2_offers_forward_secrecy(address):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((address, 443), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        assert tls.version() == "TLSv1.2"
        assert tls.cipher()[0].startswith(("ECDHE-", "DHE-")), tls.cipher()


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_are_refused_by_the_server(address, version):
    """The server itself refuses the protocol (a protocol_version alert), whatever the ciphers:
    the client offers that version alone, with every cipher it has (security level 0), so a
    refusal can come neither from the client nor from the cipher list."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
    with socket.create_connection((address, 443), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as refused:
            ctx.wrap_socket(raw)
    assert "TLSV1_ALERT_PROTOCOL_VERSION" in str(refused.value), refused.value


def test_websocket_upgrade_passes_through(address):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((address, 443), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        tls.sendall((f"GET /ws HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = tls.recv(4096).decode(errors="replace")
        assert head.startswith("HTTP/1.1 101"), head
        # one masked text frame "ping", and its echo back
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"ping"))
        tls.sendall(bytes([0x81, 0x80 | 4]) + mask + payload)
        frame = tls.recv(64)
        assert frame[:2] == bytes([0x81, 4]) and frame[2:6] == b"ping", frame


def test_app_listens_on_loopback_only(host, address):
    port = serving(host)[1]
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=3).close()


def test_self_signed_key_is_root_only_and_never_printed(host):
    key = host.file(f"/etc/ssl/private/fastapi-{NAME}-selfsigned.key")
    assert key.exists
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    cert = host.run(f"openssl x509 -noout -subject -ext subjectAltName -in /etc/ssl/certs/fastapi-{NAME}-selfsigned.crt")
    assert cert.rc == 0, cert.stderr
    assert "IP Address:127.0.0.1" in cert.stdout


def test_uvicorn_trusts_only_the_proxy(host, svars):
    execstart = host.check_output(f"systemctl show -p ExecStart {serving(host)[0]}")
    trusted = execstart.split("--forwarded-allow-ips ", 1)[1].split()[0].split(",")
    # loopback and the proxy's own addresses (here the proxy is this host), never "*"
    own = set(host.check_output("hostname -I").split()) | {"127.0.0.1", "::1"}
    assert "127.0.0.1" in trusted
    assert set(trusted) <= own, (trusted, own)


def test_nginx_config_is_valid_and_runs_unprivileged_workers(host):
    assert host.run("nginx -t").rc == 0
    users = set(host.check_output(
        "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = nginx ] && stat -c %U $p; done; true").split())
    assert users == {"root", "www-data"}, users
