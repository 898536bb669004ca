"""Pieces of the Hub API client that need no Hub: internal-SSL TLS options, retry delays,
TLS failures in words."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import pytest
from OpenSSL import SSL
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived

from hubtwist.config import ConfigError
from hubtwist.hub.client import InternalTLSPolicy, retry_delay, tls_problem


def _certificate(name: str, key, issuer_name=None, issuer_key=None, ca=False) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_name or subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_internal_ssl_policy_loads_the_hubs_ca_and_this_servers_certificate(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("hub-ca", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("alice-server", key, ca.subject, ca_key)
    (tmp_path / "ca.pem").write_bytes(_pem(ca) + _pem(ca))  # a bundle of several certificates
    (tmp_path / "cert.pem").write_bytes(_pem(cert))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    policy = InternalTLSPolicy(str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem"),
                               str(tmp_path / "key.pem"))
    assert policy.creatorForNetloc(b"127.0.0.1", 8081) is not None
    assert policy.creatorForNetloc(b"hub.internal", 8081) is not None


def test_retry_delays():
    assert [retry_delay(n, 1, 15) for n in range(1, 7)] == [1, 2, 4, 8, 15, 15]


def _tls_error(reason: str) -> SSL.Error:
    return SSL.Error([("SSL routines", "", reason)])


def test_tls_problems_in_words():
    # What twisted.web's client raises when the handshake fails: the OpenSSL error among
    # the reasons (RequestTransmissionFailed when a body was being sent).
    untrusted = RequestTransmissionFailed([Failure(_tls_error("certificate verify failed"))])
    assert tls_problem(untrusted, internal_ca=True, client_cert=True) == (
        "its certificate is not signed by the CA in JUPYTERHUB_SSL_CLIENT_CA, or not for that "
        "host (certificate verify failed)")
    assert "not trusted by this system's CAs" in tls_problem(untrusted, False, False)
    refused = ResponseNeverReceived([Failure(_tls_error("tlsv1 alert unknown ca"))])
    assert tls_problem(refused, True, True) == (
        "it refused the TLS connection, with the certificate in JUPYTERHUB_SSL_CERTFILE "
        "(tlsv1 alert unknown ca)")
    required = ResponseNeverReceived([Failure(_tls_error("tlsv13 alert certificate required"))])
    for internal_ca in (True, False):  # a Hub that wants a certificate this server lacks
        assert "with no client certificate (JUPYTERHUB_SSL_CLIENT_CA, _CERTFILE and _KEYFILE " \
            "are not all set)" in tls_problem(required, internal_ca, False)
    assert tls_problem(ResponseNeverReceived([Failure(_tls_error("wrong version number"))]),
                       True, True) == "TLS failed (wrong version number)"
    # Anything else is not about TLS (and is retried).
    assert tls_problem(ResponseNeverReceived([Failure(ConnectionRefusedError())]), True,
                       True) is None
    assert tls_problem(ConnectionRefusedError(), True, True) is None


def test_internal_ssl_files_that_cannot_be_used_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="JUPYTERHUB_SSL_CLIENT_CA names .*missing.pem, which "
                                          "cannot be read"):
        InternalTLSPolicy(str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="holds no usable CA certificate"):
        InternalTLSPolicy(str(tmp_path / "junk.pem"))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("hub-ca", ca_key, ca=True)
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "other.key").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(ConfigError, match="JUPYTERHUB_SSL_KEYFILE names .*missing.key"):
        InternalTLSPolicy(str(tmp_path / "ca.pem"), str(tmp_path / "ca.pem"),
                          str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="are not a PEM key and the certificate that goes "
                                          "with it"):  # a key that is not the certificate's
        InternalTLSPolicy(str(tmp_path / "ca.pem"), str(tmp_path / "ca.pem"),
                          str(tmp_path / "other.key"))
