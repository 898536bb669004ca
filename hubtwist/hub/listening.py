"""
Where to listen, as pure functions on Twisted endpoint descriptions: the description for the
URL the Hub assigns (C{JUPYTERHUB_SERVICE_URL}), and which descriptions reach beyond this
machine (an open, token-less hubtwist may only listen on loopback or a unix socket). And
L{server_endpoint}, the endpoint a description names: Twisted's parser, plus C{ssl:} with
C{clientCA=FILE} (TLS that requires a client certificate signed by a CA in FILE), which
JupyterHub's internal SSL needs and Twisted's parser does not offer.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from hubtwist.config.errors import ConfigError

# The keyword of an ssl: description that requires client certificates (L{server_endpoint}).
CLIENT_CA = "clientCA"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def listen_for_service_url(url: str, ssl_keyfile: str = "", ssl_certfile: str = "",
                           ssl_client_ca: str = "") -> str:
    """
    The endpoint description for C{http://HOST:PORT/...} (or https, with the internal-SSL
    key and certificate the Hub provides). With C{ssl_client_ca} too (the Hub's
    C{JUPYTERHUB_SSL_CLIENT_CA}), clients must present a certificate signed by a CA in it,
    as jupyter_server requires then (its C{ssl_options} C{ca_certs} and C{CERT_REQUIRED}):
    the Hub and the proxy have one; anyone else on the host who can reach the port does not.
    """
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and parts.port is not None
    except ValueError:  # a bad IPv6 literal or port
        usable = False
    if not usable:
        raise ConfigError("", "JUPYTERHUB_SERVICE_URL is not an http(s) URL with a port",
                          source="environment", given=url, has_given=True)
    host = parts.hostname or ""
    interface = f":interface={_escape(host)}" if host else ""
    if parts.scheme == "http":
        return f"tcp:{parts.port}{interface}"
    if not (ssl_keyfile and ssl_certfile):
        raise ConfigError("", "JUPYTERHUB_SERVICE_URL is https, but JUPYTERHUB_SSL_KEYFILE and "
                          "JUPYTERHUB_SSL_CERTFILE are not both set", source="environment")
    client_ca = f":{CLIENT_CA}={_escape(ssl_client_ca)}" if ssl_client_ca else ""
    return (f"ssl:{parts.port}{interface}:privateKey={_escape(ssl_keyfile)}"
            f":certKey={_escape(ssl_certfile)}{client_ca}")


def _fields(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    The type (lower case), positional and keyword arguments of an endpoint description,
    split as Twisted's own parser does: C{:} separates arguments, the first C{=} in one
    makes it a keyword (later ones belong to the value), a backslash makes the next
    character literal.
    """
    items, pieces, piece = [], [], ""
    separators = ":="
    characters = iter(description)
    for character in characters:
        if character == "\\":
            piece += next(characters, "")
        elif character in separators:
            pieces.append(piece)
            piece = ""
            if character == ":":
                items.append(pieces)
                pieces, separators = [], ":="
            else:
                separators = ":"
        else:
            piece += character
    items.append([*pieces, piece])
    kind, *rest = items
    args = [item[0] for item in rest if len(item) == 1]
    kwargs = {item[0]: item[1] for item in rest if len(item) == 2}
    return "=".join(kind).lower(), args, kwargs


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_private(description: str) -> bool:
    """
    True for a unix socket or a TCP/SSL port bound to a loopback interface. Anything else,
    including the all-interfaces default and endpoint types this cannot judge, is public.
    """
    kind, _, kwargs = _fields(description)
    if kind == "unix":
        return True
    if kind in ("tcp", "tcp6", "ssl"):
        return _is_loopback(kwargs.get("interface", ""))
    return False


def check_open_listens(descriptions, allow_public: bool) -> None:
    """Refuse an unauthenticated hubtwist on a public address unless explicitly allowed."""
    public = [description for description in descriptions if not is_private(description)]
    if public and not allow_public:
        raise ConfigError(
            "", f"--no-auth would let anyone who can reach {', '.join(public)} use the apps "
            "without a token. Listen on 127.0.0.1 or a unix socket, drop --no-auth, or add "
            "--allow-unauthenticated-public if that is really intended",
            source="command line")


# Twisted's ssl: arguments, in the order it takes them positionally (after the type).
_SSL_ARGUMENTS = ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
                  "extraCertChain", "dhParameters")


def server_endpoint(reactor, description: str):
    """
    The listening endpoint C{description} names: Twisted's C{serverFromString}, except for
    an C{ssl:} description with C{clientCA=FILE}. That one is TLS as Twisted's C{ssl:}
    (same arguments, key, certificate and defaults) that also requires, at the handshake, a
    client certificate signed by one of the CAs in FILE. It is built here rather than by an
    endpoint plugin, so no plugin is looked up in twisted/plugins once root is dropped
    (L{hubtwist.privileges.preload}); it is not a plain socket, so the lean path keeps off.

    @raise ValueError: an argument C{ssl:} does not take, or a file without the PEM it
        should hold (L{hubtwist.app.serve} reports it as a listen error).
    @raise OSError: a file that cannot be read.
    """
    from twisted.internet.endpoints import serverFromString

    kind, args, kwargs = _fields(description)
    if kind != "ssl" or CLIENT_CA not in kwargs:
        return serverFromString(reactor, description)
    from twisted.internet import ssl
    from twisted.internet.endpoints import SSL4ServerEndpoint
    from twisted.python.filepath import FilePath

    if len(args) > len(_SSL_ARGUMENTS):
        raise ValueError("too many arguments for an ssl: endpoint")
    options = {**dict(zip(_SSL_ARGUMENTS, args)), **kwargs}
    client_ca = options.pop(CLIENT_CA)
    unknown = sorted(set(options) - set(_SSL_ARGUMENTS))
    if unknown:
        raise ValueError(f"an ssl: endpoint takes no {', '.join(unknown)}")
    if "port" not in options:
        raise ValueError("an ssl: endpoint needs a port")
    key_file = options.get("privateKey", "server.pem")
    cert_file = options.get("certKey", key_file)
    identity = ssl.PrivateCertificate.loadPEM(
        FilePath(cert_file).getContent() + b"\n" + FilePath(key_file).getContent())
    extra = {}
    if "extraCertChain" in options:
        extra["extraCertChain"] = [certificate.original for certificate in
                                   _pem_certificates(options["extraCertChain"], "extraCertChain")]
    if "dhParameters" in options:
        extra["dhParameters"] = ssl.DiffieHellmanParameters.fromFile(
            FilePath(options["dhParameters"]))
    if "sslmethod" in options:
        extra["method"] = getattr(ssl.SSL, options["sslmethod"])
    # A trust root makes CertificateOptions verify the peer and require its certificate
    # (OpenSSL's VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT): a client without one, or with
    # one from another CA, fails the handshake before any byte of HTTP is read.
    tls = ssl.CertificateOptions(
        privateKey=identity.privateKey.original, certificate=identity.original,
        trustRoot=ssl.trustRootFromCertificates(_pem_certificates(client_ca, CLIENT_CA)),
        **extra)
    return SSL4ServerEndpoint(reactor, int(options["port"]), tls,
                              backlog=int(options.get("backlog", 50)),
                              interface=options.get("interface", ""))


def _pem_certificates(path: str, what: str) -> list:
    """Every PEM certificate in the file C{path} (a CA bundle holds several)."""
    from twisted.internet import ssl
    from twisted.python.filepath import FilePath

    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                        FilePath(path).getContent(), re.S)
    if not blocks:
        raise ValueError(f"{what} {path} holds no PEM certificate")
    return [ssl.Certificate.loadPEM(block) for block in blocks]
