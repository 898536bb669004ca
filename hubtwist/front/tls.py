"""
TLS for C{hubtwist chp}, with configurable-http-proxy's meaning of its options:

  - L{server_context}: the public listener (C{--ssl-*}) and the REST API's
    (C{--api-ssl-*}): key, certificate (a chain file is fine), a CA that client
    certificates are checked against, whether to ask clients for a certificate
    (C{--*-ssl-request-cert}) and whether to refuse those without a valid one
    (C{--*-ssl-reject-unauthorized}, Node's C{rejectUnauthorized}, which only means
    something with C{--*-ssl-request-cert}); C{--ssl-ciphers} (CHP's default list
    otherwise), C{--ssl-protocol} (Node's C{secureProtocol} names without C{_method}),
    C{--ssl-dhparam}, and the key passphrase from the environment.
  - L{ClientTls}: how the proxy connects to C{https://} targets (C{--client-ssl-*},
    C{--insecure}): the certificate it presents, the CAs it trusts (the system's when no
    C{--client-ssl-ca} is given, as Node's https agent does), the target's host name or IP
    address checked against its certificate unless C{--insecure}.
  - L{TlsAddress}: a target's address that connects with TLS. The upstream pool and the
    WebSocket bridge only call an address's C{endpoint()}, so an https target goes
    through them unchanged, keyed apart from a plain one at the same port; splice(2) and
    the WebSocket pump only take plain sockets (L{hubtwist.proxy.splicing.spliceable},
    L{hubtwist.proxy.rawsocket.pumpable}), so bytes to and from a TLS target always go
    through OpenSSL.

Every file is read when the command starts: a missing or unreadable one is a
L{TlsSetupError} with a sentence (the command exits 2), never a failure on the first
connection.
"""

from __future__ import annotations

import attrs
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from hubtwist.supervise import BackendAddress

__all__ = ["ClientTls", "TlsAddress", "TlsSetupError", "parse_protocol", "server_context"]

# CHP's default cipher list (its bin/configurable-http-proxy), "!RC4" included: the
# OpenSSL this runs on has no RC4 anyway.
DEFAULT_CIPHERS = (
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA256:"
    "DHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:DHE-RSA-AES256-SHA384:"
    "ECDHE-RSA-AES256-SHA256:DHE-RSA-AES256-SHA256:HIGH:!aNULL:!eNULL:!EXPORT:!DES:!RC4:"
    "!MD5:!PSK:!SRP:!CAMELLIA"
)

# Node's secureProtocol names (what --ssl-protocol gives, without "_method"): the
# versions each allows, (lowest, highest); None is "whatever OpenSSL allows".
_PROTOCOLS = {
    "tls": (None, None), "sslv23": (None, None),
    "tlsv1": (SSL.TLS1_VERSION, SSL.TLS1_VERSION),
    "tlsv1_1": (SSL.TLS1_1_VERSION, SSL.TLS1_1_VERSION),
    "tlsv1_2": (SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION),
    "tlsv1_3": (SSL.TLS1_3_VERSION, SSL.TLS1_3_VERSION),
}


class TlsSetupError(ValueError):
    """A TLS option that cannot be used: the message is one sentence for the user."""


def parse_protocol(name: str) -> tuple[int | None, int | None]:
    """The (lowest, highest) TLS versions for C{--ssl-protocol NAME} (C{TLSv1_2},
    C{TLS}, ...; a trailing C{_method}, Node's full name, is accepted too).

    @raise TlsSetupError: SSLv2/SSLv3 or an unknown name."""
    key = name.strip().lower()
    if key.endswith("_method"):
        key = key[: -len("_method")]
    key = key.removesuffix("_server").removesuffix("_client")
    if key in _PROTOCOLS:
        return _PROTOCOLS[key]
    if key in ("sslv2", "sslv3"):
        raise TlsSetupError(f"--ssl-protocol {name}: SSLv2 and SSLv3 are not supported "
                            "(use TLSv1_2, TLSv1_3 or TLS)")
    raise TlsSetupError(f"--ssl-protocol {name}: use TLS, TLSv1, TLSv1_1, TLSv1_2 or TLSv1_3")


def _read(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        raise TlsSetupError(f"{flag} {path}: cannot read it ({error.strerror})") from None


def _certificates(flag: str, path: str) -> list:
    """Every PEM certificate in the file (a CA bundle may hold several)."""
    data = _read(flag, path)
    marker = b"-----END CERTIFICATE-----"
    found = []
    for block in data.split(marker)[:-1]:
        try:
            found.append(crypto.load_certificate(crypto.FILETYPE_PEM, block + marker))
        except crypto.Error:
            raise TlsSetupError(f"{flag} {path}: not a PEM certificate file") from None
    if not found:
        raise TlsSetupError(f"{flag} {path}: holds no PEM certificate")
    return found


def _apply_versions(context: SSL.Context, protocol: str) -> None:
    lowest, highest = parse_protocol(protocol) if protocol else (None, None)
    try:
        if lowest is not None:
            context.set_min_proto_version(lowest)
        if highest is not None:
            context.set_max_proto_version(highest)
    except SSL.Error:
        raise TlsSetupError(f"--ssl-protocol {protocol}: this OpenSSL cannot use it") from None


def _accept_any(_connection, _certificate, _errno, _depth, _ok) -> bool:
    # --ssl-request-cert without --ssl-reject-unauthorized: Node asks for a certificate
    # and lets the client in whatever it sends (its `authorized` is false then).
    return True


def _keep_verdict(_connection, _certificate, _errno, _depth, ok) -> bool:
    return bool(ok)


@implementer(IOpenSSLServerConnectionCreator)
class _ServerContext:
    """The server side's connection creator (what L{TLSMemoryBIOFactory} takes), over a
    context built once."""

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def serverConnectionForTLS(self, _protocol) -> SSL.Connection:
        return SSL.Connection(self.context, None)


def server_context(prefix: str, key: str, cert: str, *, ca: str = "", request_cert: bool = False,
                   reject_unauthorized: bool = False, ciphers: str = "", protocol: str = "",
                   dhparam: str = "", passphrase: str = "") -> _ServerContext:
    """
    The TLS server side of a listener, from C{--PREFIX-key} and friends (C{prefix} is
    C{ssl} or C{api-ssl}, for the messages). See the module docstring.

    @raise TlsSetupError: a file that cannot be read or used, a bad cipher list or
        protocol.
    """
    if not (key and cert):
        missing = f"--{prefix}-cert" if key else f"--{prefix}-key"
        raise TlsSetupError(f"{missing} is needed as well: TLS needs a key and a certificate")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_options(SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_CIPHER_SERVER_PREFERENCE
                        | SSL.OP_NO_COMPRESSION)
    # Always a callback: without one OpenSSL would prompt on the terminal for an encrypted
    # key's passphrase; with an empty one it fails, and the sentence below says why.
    context.set_passwd_cb(lambda *_args: passphrase.encode("utf-8"))
    _read(f"--{prefix}-cert", cert)
    _read(f"--{prefix}-key", key)
    try:
        context.use_certificate_chain_file(cert)
    except SSL.Error:
        raise TlsSetupError(f"--{prefix}-cert {cert}: not a PEM certificate (chain)") from None
    try:
        context.use_privatekey_file(key)
        context.check_privatekey()
    except SSL.Error:
        raise TlsSetupError(f"--{prefix}-key {key}: not a PEM private key for --{prefix}-cert "
                            "(or a wrong passphrase)") from None
    try:
        context.set_cipher_list((ciphers or DEFAULT_CIPHERS).encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise TlsSetupError(f"--ssl-ciphers {ciphers!r}: OpenSSL knows none of them") from None
    _apply_versions(context, protocol)
    if dhparam:
        _read("--ssl-dhparam", dhparam)
        try:
            context.load_tmp_dh(dhparam)
        except SSL.Error:
            raise TlsSetupError(f"--ssl-dhparam {dhparam}: not PEM DH parameters") from None
    if ca:
        authorities = _certificates(f"--{prefix}-ca", ca)
        store = context.get_cert_store()
        for authority in authorities:
            store.add_cert(authority)
        # Named in the certificate request, so a client with several picks the right one.
        context.set_client_ca_list([authority.get_subject() for authority in authorities])
    if request_cert:
        if reject_unauthorized:
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _keep_verdict)
        else:
            context.set_verify(SSL.VERIFY_PEER, _accept_any)
    # Sessions resumed across a restart or two listeners are not worth an id context's
    # pitfalls (OpenSSL refuses resumption of verified sessions without one).
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return _ServerContext(context)


@attrs.frozen(eq=False)
class ClientTls:
    """
    How C{hubtwist chp} connects to C{https://} targets (C{--client-ssl-key/-cert/-ca},
    C{--insecure}). Built once; L{creator} gives the per-host connection creator.
    """

    key: str = ""
    cert: str = ""
    ca: str = ""
    insecure: bool = False
    _trust: object = attrs.field(default=None, init=False)
    _identity: object = attrs.field(default=None, init=False)
    _creators: dict = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if bool(self.key) != bool(self.cert):
            missing = "--client-ssl-cert" if self.key else "--client-ssl-key"
            raise TlsSetupError(f"{missing} is needed as well: a client certificate needs "
                                "its key")
        if self.key:
            key = _read("--client-ssl-key", self.key)
            cert = _read("--client-ssl-cert", self.cert)
            try:
                identity = ssl.PrivateCertificate.loadPEM(key + b"\n" + cert)
            except Exception:  # pyOpenSSL's errors vary by what is wrong with the files
                raise TlsSetupError(f"--client-ssl-key {self.key} and --client-ssl-cert "
                                    f"{self.cert}: not a matching PEM key and "
                                    "certificate") from None
            object.__setattr__(self, "_identity", identity)
        if self.ca:
            trust = ssl.trustRootFromCertificates(
                [ssl.Certificate(x509) for x509 in _certificates("--client-ssl-ca", self.ca)])
        else:
            trust = ssl.platformTrust()
        object.__setattr__(self, "_trust", trust)

    def creator(self, hostname: str):
        """The TLS connection creator for a target at C{hostname} (a name or an IP
        address): the target's certificate is checked against it, unless C{insecure}.
        One per host name, reused for every connection (building one reads no file but
        costs a context)."""
        made = self._creators.get(hostname)
        if made is None:
            made = self._creators[hostname] = self._make(hostname)
        return made

    def _make(self, hostname: str):
        if self.insecure:
            options = {"verify": False}
            if self._identity is not None:
                options.update(privateKey=self._identity.privateKey.original,
                               certificate=self._identity.original)
            return ssl.CertificateOptions(**options)
        return ssl.optionsForClientTLS(hostname, trustRoot=self._trust,
                                       clientCertificate=self._identity)


@attrs.frozen
class TlsAddress:
    """
    An C{https://} target's address: L{BackendAddress} C{plain}, reached with TLS as
    C{tls} says, the certificate checked against C{hostname}. It is what the upstream
    pool keys its connections by (never shared with a plain connection to the same
    port) and what the WebSocket bridge connects to.
    """

    plain: BackendAddress
    hostname: str
    tls: ClientTls

    # What code written for a BackendAddress reads of one (error pages, header mapping).
    kind = property(lambda self: self.plain.kind)
    port = property(lambda self: self.plain.port)
    host = property(lambda self: self.plain.host)
    path = property(lambda self: self.plain.path)

    def endpoint(self, reactor, timeout: float = 10):
        """A client endpoint that connects to the target and starts TLS."""
        return wrapClientTLS(self.tls.creator(self.hostname),
                             self.plain.endpoint(reactor, timeout=timeout))

    def describe(self) -> str:
        return "https://" + self.plain.describe()
