"""Pieces of the Hub API client that need no Hub: internal-SSL TLS options, retry delays."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hubtwist.hub.client import InternalTLSPolicy, retry_delay


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
