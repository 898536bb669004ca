"""
hubtwist.hub.listening's endpoint side: descriptions split as Twisted splits them, and
L{server_endpoint}'s C{ssl:...:clientCA=FILE} (TLS requiring client certificates, for
JupyterHub's internal SSL), built without listening (certificates from tests/certs.py).
"""

from __future__ import annotations

import pytest
from OpenSSL import SSL
from twisted.internet.endpoints import SSL4ServerEndpoint, _parse

from hubtwist.hub.listening import _fields, server_endpoint
from tests.certs import Authority

# Twisted's CertificateOptions hands pyOpenSSL objects to OpenSSL (deprecated there).
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


class _NoReactor:
    """Building an endpoint only stores the reactor; listening is the integration tests'."""


@pytest.mark.parametrize("description", [
    "tcp:8888:interface=127.0.0.1",
    "tcp6:port=8888:interface=\\:\\:1",
    "ssl:443:privateKey=/a\\:b.pem:certKey=/c\\=d.pem:clientCA=/e.pem",
    "unix:/run/ht.sock:mode=600",
    "systemd:domain=INET:index=0",
    "tcp:8888:interface=a=b",
    "ssl:443:/k.pem:/c.pem",
    "tcp:8888:interface=\\\\x",
])
def test_descriptions_are_split_as_twisted_splits_them(description):
    kind, args, kwargs = _fields(description)
    twisted_args, twisted_kwargs = _parse(description)
    assert [kind, *args] == [twisted_args[0].lower(), *twisted_args[1:]]
    assert kwargs == twisted_kwargs


@pytest.fixture
def files(tmp_path):
    ca = Authority(tmp_path, "internal")
    key, cert = ca.issue("alice-server", client=True, server=True)
    return {"key": key, "cert": cert, "ca": str(ca.ca), "dir": tmp_path}


def _verify_mode(endpoint) -> int:
    return endpoint._sslContextFactory.getContext().get_verify_mode()


def test_client_ca_makes_a_tls_endpoint_that_requires_a_client_certificate(files):
    endpoint = server_endpoint(
        _NoReactor(), f"ssl:0:interface=127.0.0.1:privateKey={files['key']}"
                      f":certKey={files['cert']}:clientCA={files['ca']}")
    assert isinstance(endpoint, SSL4ServerEndpoint)
    assert endpoint._interface == "127.0.0.1" and endpoint._port == 0
    required = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    assert _verify_mode(endpoint) & required == required


def test_without_client_ca_twisteds_ssl_endpoint_asks_no_certificate(files):
    endpoint = server_endpoint(
        _NoReactor(), f"ssl:0:privateKey={files['key']}:certKey={files['cert']}")
    assert _verify_mode(endpoint) == SSL.VERIFY_NONE


@pytest.mark.parametrize("extra, message", [
    (":clientCA={dir}/missing.pem", "No such file"),
    (":clientCA={key}", "holds no PEM certificate"),
    (":clientCA={ca}:mode=600", "takes no mode"),
])
def test_a_client_ca_endpoint_that_cannot_be_built_says_why(files, extra, message):
    description = (f"ssl:0:privateKey={files['key']}:certKey={files['cert']}"
                   + extra.format(**files))
    with pytest.raises((ValueError, OSError), match=message):
        server_endpoint(_NoReactor(), description)
