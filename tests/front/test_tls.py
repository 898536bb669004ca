"""
TLS in `hubtwist chp`, with configurable-http-proxy's options, against the real command on
127.0.0.1 with certificates made in the test (tests/certs.py): the public listener
over HTTPS, the HTTP-to-HTTPS redirect port, the REST API over TLS with client
certificates (what JupyterHub's internal_ssl sets up), https:// targets checked with
--client-ssl-ca (or not, with --insecure), and WebSockets to wss targets.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from hubtwist.front.redirect import https_location
from hubtwist.front.routes import TargetError, parse_target
from hubtwist.front.tls import ClientTls, TlsAddress, TlsSetupError, parse_protocol
from hubtwist.proxy.splicing import SPLICE_MIN
from tests.certs import Authority
from tests.front.conftest import TOKEN, Chp

PYTHON_CHP = [sys.executable, "-m", "hubtwist", "chp"]
BIG = SPLICE_MIN + 12345  # a body the lean path would splice from a plain target


# -- pure logic ----------------------------------------------------------------------------


def test_https_location_is_chps_redirect():
    assert https_location(b"example.org:8000", b"/a?b=1", 8443) == b"https://example.org:8443/a?b=1"
    assert https_location(b"example.org", b"/", 443) == b"https://example.org/"
    assert https_location(b"[::1]:80", b"/x", 8443) == b"https://[::1]:8443/x"
    assert https_location(None, b"/", 8443) is None
    assert https_location(b"", b"/", 8443) is None


def test_protocol_names_are_nodes():
    assert parse_protocol("TLSv1_2") == parse_protocol("TLSv1_2_method") != (None, None)
    assert parse_protocol("TLS") == parse_protocol("SSLv23") == (None, None)
    for bad in ("SSLv3", "TLSv9"):
        with pytest.raises(TlsSetupError):
            parse_protocol(bad)


def test_https_targets_need_a_maker_and_get_a_tls_address(tmp_path):
    with pytest.raises(TargetError):
        parse_target("https://h:1")
    client = ClientTls()
    target = parse_target("https://127.0.0.1/p", lambda address, host: TlsAddress(address, host,
                                                                                  client))
    assert target.secure and target.host == b"127.0.0.1:443" and target.path == b"/p"
    assert isinstance(target.address, TlsAddress)
    assert target.address.plain.port == 443 and target.address.hostname == "127.0.0.1"
    assert target.address.describe() == "https://127.0.0.1:443"
    address = target.address  # read as a BackendAddress is, by shared proxy code
    assert (address.kind, address.host, address.port, address.path) == ("tcp", "127.0.0.1",
                                                                        443, "")
    # The pool keys connections by address: never the plain one's.
    assert target.address != parse_target("http://127.0.0.1:443/p").address
    with pytest.raises(TlsSetupError, match="--client-ssl-cert is needed"):
        ClientTls(key=str(tmp_path / "k.pem"))
    with pytest.raises(TlsSetupError, match="cannot read"):
        ClientTls(ca=str(tmp_path / "none.pem"))


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    """Three CAs: the public one (the proxy's listeners, the API's clients), the targets'
    (their certificates, and the proxy's client certificate toward them) and a stranger."""

    class Pki:
        public = Authority(tmp_path, "public")
        targets = Authority(tmp_path, "targets")
        stranger = Authority(tmp_path, "stranger")

    pki = Pki()
    pki.server = pki.public.issue("proxy")
    pki.api_client = pki.public.issue("hub", client=True)
    pki.stranger_client = pki.stranger.issue("intruder", client=True)
    pki.target = pki.targets.issue("target")
    pki.proxy_client = pki.targets.issue("proxy-client", client=True)
    pki.stranger_target = pki.stranger.issue("fake-target")
    return pki


class TlsChp(Chp):
    """`hubtwist chp` whose public side and/or API speak TLS: the URLs say https and the
    readiness check and API calls trust C{ca} (and show C{cert})."""

    def __init__(self, args, *, ca: str, public_tls: bool, api_tls: bool, cert=None,
                 env=None) -> None:
        self.ca, self.cert = ca, cert
        self.schemes = ("https" if public_tls else "http", "https" if api_tls else "http")
        super().__init__(args, env=env)

    def _ready(self) -> bool:
        self.url = self.url.replace("http:", self.schemes[0] + ":", 1)
        self.api_url = self.api_url.replace("http:", self.schemes[1] + ":", 1)
        if self.process.poll() is not None:
            raise AssertionError(f"hubtwist chp exited {self.process.returncode}: "
                                 + "".join(self.lines))
        try:
            requests.get(self.url + "/_chp_healthz", timeout=2, verify=self.ca)
            self.api("GET")
        except requests.RequestException:
            return False
        return True

    def api(self, method: str, path: str = "", **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {TOKEN}", **kwargs.pop("headers", {})}
        return requests.request(method, self.api_url + "/api/routes" + path, headers=headers,
                                timeout=10, verify=self.ca, cert=self.cert, **kwargs)


@pytest.fixture
def tls_chp():
    started: list[TlsChp] = []

    def start(*args: str, ca: str, public_tls=False, api_tls=False, cert=None,
              env=None) -> TlsChp:
        proxy = TlsChp(list(args), ca=ca, public_tls=public_tls, api_tls=api_tls, cert=cert,
                       env=env)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


class _HttpsEcho(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.endswith("/big"):
            body = b"x" * BIG
            content_type = "application/octet-stream"
        else:
            peer = self.connection.getpeercert()
            subject = dict(item[0] for item in peer["subject"]) if peer else {}
            body = json.dumps({"url": self.path, "client": subject.get("commonName", ""),
                               "headers": {k.lower(): v for k, v in self.headers.items()}}
                              ).encode()
            content_type = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _server_context(key_cert, client_ca: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(key_cert[1], key_cert[0])
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL  # the echo says whom it saw
    return context


class HttpsEcho:
    """An https echo target: it answers with the URL, the headers and the common name of
    the client certificate it was shown; C{/big} is a body large enough to be spliced."""

    def __init__(self, key_cert, client_ca: str | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HttpsEcho)
        self.httpd.daemon_threads = True
        self.httpd.socket = _server_context(key_cert, client_ca).wrap_socket(
            self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def https_echo():
    servers: list[HttpsEcho] = []

    def make(*args, **kwargs) -> HttpsEcho:
        server = HttpsEcho(*args, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _ssl_flags(prefix: str, key_cert) -> list[str]:
    return [f"--{prefix}-key", key_cert[0], f"--{prefix}-cert", key_cert[1]]


# -- the public listener and the redirect port -----------------------------------------------


def test_https_public_side_to_an_http_target(tls_chp, echo, pki):
    target = echo()
    proxy = tls_chp(*_ssl_flags("ssl", pki.server), "--default-target", target.url,
                    ca=str(pki.public.ca), public_tls=True)
    assert any("Proxying https://" in line for line in proxy.lines)
    response = requests.get(proxy.url + "/user/alice/x?y=1", timeout=10, verify=pki.public.ca)
    assert response.status_code == 200
    sent = response.json()
    assert sent["url"] == "/user/alice/x?y=1"
    assert sent["headers"]["x-forwarded-proto"] == "https"
    assert sent["headers"]["x-forwarded-port"] == str(proxy.port)
    posted = requests.post(proxy.url + "/up", data=b"payload", timeout=10, verify=pki.public.ca)
    assert posted.json()["body"] == "payload"
    # Nothing in plain text on the TLS port.
    with pytest.raises(requests.RequestException):
        requests.get(proxy.url.replace("https:", "http:") + "/", timeout=5)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_protocol_ciphers_dhparam_and_an_encrypted_key(tls_chp, echo, pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(open(pki.server[0], "rb").read(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"open sesame")))
    dhparam = tmp_path / "dh.pem"
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                    "group:ffdhe2048", "-out", str(dhparam)], check=True, capture_output=True,
                   timeout=30)
    cipher = "ECDHE-ECDSA-AES256-GCM-SHA384"
    proxy = tls_chp("--ssl-key", str(locked), "--ssl-cert", pki.server[1], "--ssl-protocol",
                    "TLSv1_2", "--ssl-ciphers", cipher, "--ssl-dhparam", str(dhparam),
                    "--default-target", echo().url, ca=str(pki.public.ca), public_tls=True,
                    env={"CONFIGPROXY_SSL_KEY_PASSPHRASE": "open sesame"})
    context = ssl.create_default_context(cafile=str(pki.public.ca))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.2" and tls.cipher()[0] == cipher
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
            context.wrap_socket(raw, server_hostname="127.0.0.1")
    # Without the passphrase the key cannot be used: exit 2 with a sentence.
    done = subprocess.run([*PYTHON_CHP, "--ssl-key", str(locked), "--ssl-cert", pki.server[1]],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "passphrase" in done.stderr, done.stderr


def test_redirect_port_answers_301_to_the_https_port(tls_chp, pki):
    from tests.front.conftest import free_port

    redirect = free_port()
    proxy = tls_chp(*_ssl_flags("ssl", pki.server), "--redirect-port", str(redirect),
                    ca=str(pki.public.ca), public_tls=True)
    assert any(f"Added HTTP to HTTPS redirection from {redirect} to {proxy.port}" in line
               for line in proxy.lines)
    response = requests.get(f"http://127.0.0.1:{redirect}/hub/login?next=%2Fx", timeout=10,
                            allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["Location"] == f"https://127.0.0.1:{proxy.port}/hub/login?next=%2Fx"
    # Followed, it reaches the proxy over TLS.
    assert requests.get(f"http://127.0.0.1:{redirect}/_chp_healthz", timeout=10,
                        verify=pki.public.ca).json() == {"status": "OK"}


def test_redirect_to_another_port(tls_chp, pki):
    from tests.front.conftest import free_port

    redirect = free_port()
    tls_chp(*_ssl_flags("ssl", pki.server), "--redirect-port", str(redirect),
            "--redirect-to", "443", ca=str(pki.public.ca), public_tls=True)
    response = requests.post(f"http://127.0.0.1:{redirect}/a", timeout=10, allow_redirects=False,
                             headers={"Host": "hub.example.org:80"})
    assert (response.status_code, response.headers["Location"]) == (
        301, "https://hub.example.org/a")


# -- the REST API over TLS -----------------------------------------------------------------


def test_api_over_tls_requires_a_client_certificate_from_its_ca(tls_chp, echo, pki):
    api_flags = [*_ssl_flags("api-ssl", pki.server), "--api-ssl-ca", str(pki.public.ca),
                 "--api-ssl-request-cert", "--api-ssl-reject-unauthorized"]
    proxy = tls_chp(*api_flags, ca=str(pki.public.ca), api_tls=True, cert=pki.api_client[::-1])
    assert any("Proxy API at https://" in line for line in proxy.lines)
    target = echo()
    proxy.add("/user/alice", target.url)
    assert proxy.api("GET").json()["/user/alice"]["target"] == target.url
    url = proxy.api_url + "/api/routes"
    headers = {"Authorization": f"token {TOKEN}"}
    with pytest.raises(requests.RequestException):  # no certificate: refused in the handshake
        requests.get(url, headers=headers, timeout=10, verify=pki.public.ca).status_code
    with pytest.raises(requests.RequestException):  # a certificate from another CA
        requests.get(url, headers=headers, timeout=10, verify=pki.public.ca,
                     cert=pki.stranger_client[::-1]).status_code
    # The public side is still plain HTTP, and proxies the route.
    assert requests.get(proxy.url + "/user/alice/x", timeout=10).json()["url"] == "/user/alice/x"


def test_api_request_cert_without_reject_lets_anyone_in(tls_chp, pki):
    proxy = tls_chp(*_ssl_flags("api-ssl", pki.server), "--api-ssl-ca", str(pki.public.ca),
                    "--api-ssl-request-cert", ca=str(pki.public.ca), api_tls=True)
    # Node's requestCert without rejectUnauthorized: asked, not required, not checked.
    for cert in (None, pki.stranger_client[::-1]):
        response = requests.get(proxy.api_url + "/api/routes", timeout=10, verify=pki.public.ca,
                                cert=cert, headers={"Authorization": f"token {TOKEN}"})
        assert response.status_code == 200


# -- https targets ---------------------------------------------------------------------------


def test_https_target_checked_with_client_ssl_ca(tls_chp, https_echo, pki):
    target = https_echo(pki.target, client_ca=str(pki.targets.ca))
    client = [*_ssl_flags("client-ssl", pki.proxy_client), "--client-ssl-ca",
              str(pki.targets.ca), "--client-ssl-request-cert", "--client-ssl-reject-unauthorized"]
    proxy = tls_chp(*client, ca=str(pki.public.ca))
    proxy.add("/user/alice", target.url)
    for _ in range(3):  # kept-alive connections are reused
        response = requests.get(proxy.url + "/user/alice/lab?x=1", timeout=10)
        assert response.status_code == 200, response.text[:300]
        seen = response.json()
        assert seen["url"] == "/user/alice/lab?x=1"
        assert seen["client"] == "proxy-client"  # the proxy showed --client-ssl-cert
        assert seen["headers"]["x-forwarded-proto"] == "http"
    # A body large enough to be spliced from a plain target comes through OpenSSL whole
    # (the lean path's GET, then one on the ordinary path: a request with a body).
    big = requests.get(proxy.url + "/user/alice/big", timeout=30)
    assert big.status_code == 200 and len(big.content) == BIG and set(big.content) == {ord("x")}
    big = requests.get(proxy.url + "/user/alice/big", timeout=30, headers={"Content-Length": "0"})
    assert big.status_code == 200 and len(big.content) == BIG
    activity = proxy.route("/user/alice")["last_activity"]
    assert activity


def test_https_target_with_an_untrusted_certificate_is_503_unless_insecure(
        tls_chp, https_echo, pki):
    impostor = https_echo(pki.stranger_target)
    proxy = tls_chp("--client-ssl-ca", str(pki.targets.ca), ca=str(pki.public.ca))
    proxy.add("/user/alice", impostor.url)
    stamp = proxy.route("/user/alice")["last_activity"]
    response = requests.get(proxy.url + "/user/alice/x", timeout=10)
    assert response.status_code == 503
    assert proxy.route("/user/alice")["last_activity"] == stamp  # errors are no activity
    # The host name is checked too: the targets' certificate is for 127.0.0.1/localhost.
    renamed = https_echo(pki.target)
    proxy.add("/user/bob", renamed.url.replace("127.0.0.1", "127.0.0.2"))
    assert requests.get(proxy.url + "/user/bob/x", timeout=10).status_code == 503
    proxy.add("/user/carol", renamed.url.replace("127.0.0.1", "localhost"))
    assert requests.get(proxy.url + "/user/carol/x", timeout=10).status_code == 200
    # --insecure: no check, the request goes through.
    lax = tls_chp("--insecure", "--client-ssl-ca", str(pki.targets.ca), ca=str(pki.public.ca))
    lax.add("/user/alice", impostor.url)
    response = requests.get(lax.url + "/user/alice/x", timeout=10)
    assert response.status_code == 200 and response.json()["url"] == "/user/alice/x"


def test_https_error_target(tls_chp, https_echo, pki):
    errors = https_echo(pki.target)
    proxy = tls_chp("--client-ssl-ca", str(pki.targets.ca), "--error-target",
                    errors.url + "/hub/error", ca=str(pki.public.ca))
    response = requests.get(proxy.url + "/nowhere", timeout=10)
    assert response.status_code == 404
    assert response.json()["url"] == "/hub/error/404?url=%2Fnowhere"


# -- WebSockets to wss targets ---------------------------------------------------------------


@pytest.fixture
def wss_echo(pki):
    from websockets.sync.server import serve

    def echo(connection) -> None:
        for message in connection:
            connection.send(f"{connection.request.path} {message}")

    server = serve(echo, "127.0.0.1", 0, ssl=_server_context(pki.target, None))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.socket.getsockname()[1]}"
    server.shutdown()
    thread.join(5)


def test_websocket_to_a_wss_target_through_https(tls_chp, wss_echo, pki):
    from websockets.sync.client import connect

    proxy = tls_chp(*_ssl_flags("ssl", pki.server), "--client-ssl-ca", str(pki.targets.ca),
                    ca=str(pki.public.ca), public_tls=True)
    proxy.add("/user/alice", wss_echo)
    stamp = proxy.route("/user/alice")["last_activity"]
    client = ssl.create_default_context(cafile=str(pki.public.ca))
    url = f"wss://127.0.0.1:{proxy.port}/user/alice/api/kernels/1/channels"
    with connect(url, ssl=client, open_timeout=10, close_timeout=5) as ws:
        for index in range(3):
            ws.send(f"hello {index}")
            assert ws.recv(timeout=10) == f"/user/alice/api/kernels/1/channels hello {index}"
        big = "y" * 300_000
        ws.send(big)
        assert ws.recv(timeout=10).endswith(big)
    assert proxy.route("/user/alice")["last_activity"] != stamp


def test_websocket_to_a_wss_target_with_an_untrusted_certificate_fails(tls_chp, wss_echo, pki):
    from websockets.sync.client import connect

    from websockets.exceptions import InvalidStatus

    proxy = tls_chp("--client-ssl-ca", str(pki.stranger.ca), ca=str(pki.public.ca))
    proxy.add("/user/alice", wss_echo)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{proxy.port}/user/alice/ws", open_timeout=10)
    assert refused.value.response.status_code == 502
    lax = tls_chp("--insecure", ca=str(pki.public.ca))
    lax.add("/user/alice", wss_echo)
    with connect(f"ws://127.0.0.1:{lax.port}/user/alice/ws", open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "/user/alice/ws hi"


# -- command-line mistakes -------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--ssl-key", "KEY"], "--ssl-cert is needed as well"),
    (["--ssl-key", "/nonexistent.key", "--ssl-cert", "CERT"], "cannot read it"),
    (["--ssl-key", "KEY", "--ssl-cert", "CERT", "--ssl-protocol", "SSLv3"], "SSLv3"),
    (["--ssl-key", "KEY", "--ssl-cert", "CERT", "--ssl-ciphers", "NOPE"], "--ssl-ciphers"),
    (["--ssl-key", "KEY", "--ssl-cert", "CA"], "--ssl-key"),
    (["--ssl-allow-rc4"], "--ssl-allow-rc4 is not supported"),
    (["--redirect-port", "8080"], "--redirect-port needs --ssl-key and --ssl-cert"),
    (["--api-ssl-cert", "CERT"], "--api-ssl-key is needed as well"),
    (["--client-ssl-ca", "KEY"], "--client-ssl-ca"),
    (["--default-target", "ftp://h:1"], "only http://, https:// and http+unix://"),
])
def test_tls_mistakes_exit_2_with_a_sentence(args, words, pki):
    files = {"KEY": pki.server[0], "CERT": pki.server[1], "CA": str(pki.stranger.ca)}
    argv = [files.get(arg, arg) for arg in args]
    done = subprocess.run([*PYTHON_CHP, *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
