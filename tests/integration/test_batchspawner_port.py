"""
hubtwist under batchspawner without its wrapper, as a job runs it: JUPYTERHUB_SERVICE_URL
with port 0, so hubtwist listens on a free port and POSTs it to a fake Hub's batchspawner
API (a real subprocess, real sockets); a Hub without that API makes it exit with one sentence.
With JupyterHub's internal SSL (JUPYTERHUB_SSL_*) the fake Hub's API is HTTPS and demands a
client certificate from the CA, and hubtwist serves HTTPS on the port it reports, demanding in
turn a client certificate signed by the CA in JUPYTERHUB_SSL_CLIENT_CA, as jupyter_server does
(certificates made in the test: tests/certs.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.binary.locate import BINARY
from tests.certs import Authority
from tests.helpers import HTTPAPP, try_get, wait_for

HUBTWIST = [sys.executable, "-m", "hubtwist"]
TOKEN = "server-token"
ALICE_TOKEN = "alice-token"


class _FakeHubHandler(BaseHTTPRequestHandler):
    """The Hub's version, and POST /hub/api/batchspawner when C{server.batchspawner}."""

    def log_message(self, *args) -> None:
        pass

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code == 200:
            self.send_header("X-JupyterHub-Version", "6.1.1")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/hub/api/":
            self._answer(200, {"version": "6.1.1"})
        elif (self.path == "/hub/api/user"
              and self.headers.get("Authorization") == f"token {ALICE_TOKEN}"):
            self._answer(200, {"kind": "user", "name": "alice",
                               "scopes": ["access:servers!server=alice/"]})
        else:
            self._answer(404, {"status": 404, "message": "Not Found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/hub/api/batchspawner" and self.server.batchspawner:
            if self.headers.get("Authorization") != f"token {TOKEN}":
                return self._answer(403, {"status": 403, "message": "Forbidden"})
            self.server.reports.append(json.loads(body))
            return self._answer(200, {"message": "BatchSpawner data configured"})
        if self.path.endswith("/activity"):
            return self._answer(200, {})
        self._answer(404, {"status": 404, "message": "Not Found"})


@pytest.fixture
def fake_hub(request):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHubHandler)
    server.batchspawner = getattr(request, "param", True)
    server.reports = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.api_url = f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


class _TLSFakeHub(ThreadingHTTPServer):
    """The fake Hub over TLS, as JupyterHub's internal SSL serves its API: a certificate for
    127.0.0.1, and a client certificate from C{client_ca} required. The handshake happens in
    the request's thread (a stuck client cannot block the others); its outcome is kept:
    C{peers} (the client certificates' common names), C{refused} (failed handshakes)."""

    daemon_threads = True

    def __init__(self, key: str, cert: str, client_ca: str) -> None:
        super().__init__(("127.0.0.1", 0), _TLSFakeHubHandler)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(client_ca)
        self.batchspawner = True
        self.reports, self.peers, self.refused = [], [], []

    def get_request(self):
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), address


class _TLSFakeHubHandler(_FakeHubHandler):
    timeout = 10

    def handle(self) -> None:
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError) as error:
            self.server.refused.append(error)
            return
        subject = dict(pair[0] for pair in self.connection.getpeercert()["subject"])
        self.server.peers.append(subject["commonName"])
        super().handle()


def _job_environment(api_url: str) -> dict:
    """What JupyterHub 6 gives a batchspawner job (JUPYTERHUB_SERVICE_URL with port 0)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTERHUB_", "JPY_", "HUBTWIST_")) or k == "HUBTWIST_ALLOW_ROOT"}
    env.update({
        "JUPYTERHUB_API_URL": api_url,
        "JUPYTERHUB_API_TOKEN": TOKEN,
        "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice",
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:0/user/alice/",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/alice/oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:servers!server=alice/"]',
    })
    return env


def test_the_port_left_to_the_server_is_reported_and_served(fake_hub):
    process = subprocess.Popen([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"],
                               env=_job_environment(fake_hub.api_url),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: fake_hub.reports or process.poll() is not None, 30, "the port report")
        assert process.poll() is None, process.communicate(timeout=10)[0]
        [report] = fake_hub.reports
        port = report["port"]
        assert isinstance(port, int) and port > 0
        # The Hub reaches the server there: hubtwist's own API answers without credentials.
        answer = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/user/alice/_hubtwist/api"),
                          10, "hubtwist on the reported port")
        assert answer[0] == 200 and b"version" in answer[1]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert f"listens on port {port}" in output
    assert TOKEN not in output


def test_the_wrapper_port_is_not_reported_again(fake_hub):
    # Behind batchspawner-singleuser the URL names the port it reported itself.
    from tests.helpers import free_port

    port = free_port()
    env = {**_job_environment(fake_hub.api_url),
           "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/alice/"}
    process = subprocess.Popen([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: try_get(f"http://127.0.0.1:{port}/user/alice/_hubtwist/api")
                 or process.poll() is not None, 30, "hubtwist on the wrapper's port")
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert fake_hub.reports == []


@pytest.mark.parametrize("fake_hub", [False], indirect=True)
def test_a_hub_without_the_batchspawner_api_ends_the_server_with_one_sentence(fake_hub):
    result = subprocess.run([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"],
                            env=_job_environment(fake_hub.api_url), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "could not tell the Hub the port" in result.stderr
    assert "no batchspawner API" in result.stderr and "Traceback" not in result.stderr


# -- internal SSL --------------------------------------------------------------------------


@pytest.fixture
def internal_ssl(tmp_path):
    """JupyterHub's internal SSL in miniature: one CA; the Hub's certificate; the server's,
    which it listens with and presents to the Hub; and a stranger CA for the failures."""
    ca = Authority(tmp_path, "internal")
    stranger = Authority(tmp_path, "stranger")
    return {"ca": ca, "stranger": stranger, "hub": ca.issue("hub"),
            "hub-client": ca.issue("hub-client", client=True),
            "server": ca.issue("alice-server", client=True, server=True)}


@pytest.fixture
def tls_hub(internal_ssl, request):
    """The fake Hub over TLS; C{request.param} names the CA its own certificate is from."""
    issuer = internal_ssl[getattr(request, "param", "ca")]
    key, cert = internal_ssl["hub"] if issuer is internal_ssl["ca"] else issuer.issue("hub")
    server = _TLSFakeHub(key, cert, str(internal_ssl["ca"].ca))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.api_url = f"https://127.0.0.1:{server.server_address[1]}/hub/api"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _internal_ssl_environment(api_url: str, internal_ssl: dict) -> dict:
    """What JupyterHub with internal_ssl gives a batchspawner job: https URLs (the service
    URL with port 0) and the server's key, certificate and the CA in JUPYTERHUB_SSL_*."""
    key, cert = internal_ssl["server"]
    return {**_job_environment(api_url),
            "JUPYTERHUB_SERVICE_URL": "https://127.0.0.1:0/user/alice/",
            "JUPYTERHUB_SSL_KEYFILE": key, "JUPYTERHUB_SSL_CERTFILE": cert,
            "JUPYTERHUB_SSL_CLIENT_CA": str(internal_ssl["ca"].ca)}


def _https_get(url: str, ca: str, token: str | None = None,
               client: tuple[str, str] | None = None) -> tuple[int, bytes]:
    """GET over TLS, the server checked against C{ca}; C{client}: (key, cert) presented."""
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(client[1], client[0])
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    context=context, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _source_and_binary():
    yield pytest.param(HUBTWIST, id="source")
    yield pytest.param([str(BINARY)], id="binary", marks=pytest.mark.skipif(
        BINARY is None, reason="no hubtwist binary (packaging/build, or HUBTWIST_BINARY)"))


# The binary too: on a compute node it is the whole point (pyOpenSSL from the bundle).
@pytest.mark.parametrize("hubtwist", list(_source_and_binary()))
def test_with_internal_ssl_the_port_is_reported_over_tls_and_served_with_tls(
        hubtwist, tls_hub, internal_ssl):
    ca = str(internal_ssl["ca"].ca)
    process = subprocess.Popen([*hubtwist, "--", *HTTPAPP, "--port", "{port}"],
                               env=_internal_ssl_environment(tls_hub.api_url, internal_ssl),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: tls_hub.reports or process.poll() is not None, 30, "the port report")
        assert process.poll() is None, process.communicate(timeout=10)[0]
        [report] = tls_hub.reports
        port = report["port"]
        assert isinstance(port, int) and port > 0
        # Every call reached the Hub over TLS with the server's client certificate.
        assert tls_hub.peers and set(tls_hub.peers) == {"alice-server"}, tls_hub.refused
        # hubtwist serves TLS there with its certificate (checked against the CA, for
        # 127.0.0.1); its own API answers, and the app behind the Hub login is reached
        # with a user's token (checked with the Hub over TLS too).
        # The Hub calls with its own client certificate, from the same CA.
        base = f"https://127.0.0.1:{port}/user/alice/"
        hub = internal_ssl["hub-client"]
        answer = wait_for(lambda: _try(lambda: _https_get(base + "_hubtwist/api", ca,
                                                          client=hub)), 10,
                          "hubtwist over TLS on the reported port")
        assert answer[0] == 200 and b"version" in answer[1]
        status, body = _https_get(base + "echo", ca, ALICE_TOKEN, client=hub)
        assert status == 200 and json.loads(body)["path"].endswith("/echo"), body
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            _https_get(base + "_hubtwist/api", str(internal_ssl["stranger"].ca))
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert f"Listening on https://127.0.0.1:{port}" in output
    assert f"listens on port {port}" in output
    assert TOKEN not in output and ALICE_TOKEN not in output


def _try(call):
    try:
        return call()
    except OSError:
        return None


def _tls_exchange(port: int, ca: str, client: tuple[str, str] | None = None,
                  tls12: bool = False) -> tuple[str, str]:
    """
    One request to hubtwist's own API over TLS, the server checked against C{ca};
    C{client}: (key, cert) presented, C{tls12}: TLS 1.2 at most. ("answered", the status
    line), or ("refused at the handshake" or "refused", why). In TLS 1.2 the server's
    refusal of the client's certificate fails the handshake itself; in TLS 1.3 the client's
    side of the handshake is over first, and the refusal (an alert) is what the request
    reads.
    """
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(client[1], client[0])
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except (ssl.SSLError, ConnectionResetError) as error:
            return "refused at the handshake", str(error)
        try:
            with tls:
                tls.sendall(b"GET /user/alice/_hubtwist/api HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Connection: close\r\n\r\n")
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as error:
            return "refused", str(error)
    if not answer:
        return "refused", "closed without an answer"
    return "answered", answer.split(b"\r\n", 1)[0].decode()


# The binary too: a job on a compute node runs it with internal SSL (pyOpenSSL's
# verification from the bundle).
@pytest.mark.parametrize("hubtwist", list(_source_and_binary()))
def test_with_internal_ssl_only_clients_with_a_certificate_from_the_client_ca_get_in(
        hubtwist, tls_hub, internal_ssl):
    # jupyter_server requires a client certificate from JUPYTERHUB_SSL_CLIENT_CA then (its
    # ssl_options: ca_certs and CERT_REQUIRED): the Hub and the proxy have one; a process on
    # the host that reaches the port does not, and must not bypass the proxy's checks.
    ca = str(internal_ssl["ca"].ca)
    process = subprocess.Popen([*hubtwist, "--", *HTTPAPP, "--port", "{port}"],
                               env=_internal_ssl_environment(tls_hub.api_url, internal_ssl),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: tls_hub.reports or process.poll() is not None, 30, "the port report")
        assert process.poll() is None, process.communicate(timeout=10)[0]
        port = tls_hub.reports[0]["port"]
        hub = internal_ssl["hub-client"]
        # The hubtwist is up and lets a client with a certificate from the CA in.
        outcome = wait_for(lambda: _try(lambda: _tls_exchange(port, ca, hub)), 10,
                           "hubtwist over TLS on the reported port")
        assert outcome == ("answered", "HTTP/1.1 200 OK"), outcome
        stranger = internal_ssl["stranger"].issue("mallory", client=True)
        outcomes = {(client, tls12): _tls_exchange(port, ca, certificate, tls12)
                    for client, certificate in (("none", None), ("stranger", stranger))
                    for tls12 in (True, False)}
        expected = {"none": ("handshake failure", "certificate required"),
                    "stranger": ("unknown ca", "unknown ca")}
        for (client, tls12), (kind, why) in outcomes.items():
            # TLS 1.2: the handshake fails, the request is never written. TLS 1.3: the
            # server's alert ends the session before any answer (or a reset, when the
            # server closed with the request unread). Either way no HTTP.
            assert kind == ("refused at the handshake" if tls12 else "refused"), (
                client, tls12, why)
            reason = expected[client][0 if tls12 else 1]
            assert reason in why.lower() or (not tls12 and "reset" in why.lower()), (
                client, tls12, why)
        # Through the app too, with a user's token, for the client with the CA's certificate.
        status, body = _https_get(f"https://127.0.0.1:{port}/user/alice/echo", ca,
                                  ALICE_TOKEN, client=hub)
        assert status == 200 and json.loads(body)["path"].endswith("/echo"), body
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output


@pytest.mark.parametrize("tls_hub", ["stranger"], indirect=True)
def test_a_hub_certificate_not_from_the_client_ca_ends_the_server_with_one_sentence(
        tls_hub, internal_ssl):
    result = subprocess.run([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"],
                            env=_internal_ssl_environment(tls_hub.api_url, internal_ssl),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [last] = [line for line in result.stderr.splitlines() if line.startswith("hubtwist: ")]
    assert last.startswith("hubtwist: could not tell the Hub the port"), last
    assert "its certificate is not signed by the CA in JUPYTERHUB_SSL_CLIENT_CA" in last
    assert tls_hub.reports == []


def test_a_hub_refusing_the_servers_certificate_ends_the_server_with_one_sentence(
        tls_hub, internal_ssl):
    # The server's certificate is from another CA than the one the Hub checks clients with.
    env = _internal_ssl_environment(tls_hub.api_url, internal_ssl)
    env["JUPYTERHUB_SSL_KEYFILE"], env["JUPYTERHUB_SSL_CERTFILE"] = internal_ssl[
        "stranger"].issue("alice-server", client=True, server=True)
    result = subprocess.run([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [last] = [line for line in result.stderr.splitlines() if line.startswith("hubtwist: ")]
    assert "refused the TLS connection, with the certificate in JUPYTERHUB_SSL_CERTFILE" in last
    assert tls_hub.reports == [] and tls_hub.peers == [] and tls_hub.refused


def test_an_unreadable_internal_ssl_file_is_a_usage_error(tls_hub, internal_ssl, tmp_path):
    env = {**_internal_ssl_environment(tls_hub.api_url, internal_ssl),
           "JUPYTERHUB_SSL_CLIENT_CA": str(tmp_path / "missing-ca.pem")}
    result = subprocess.run([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "JUPYTERHUB_SSL_CLIENT_CA names" in result.stderr and "missing-ca.pem" in result.stderr
