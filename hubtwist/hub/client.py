"""
The Hub API client (treq): the Hub's version, who a token belongs to, the OAuth code
exchange, and activity reports. Every call has a time limit; connection failures and 5xx
answers are retried with exponential backoff; internal SSL uses the certificates the Hub
hands over in C{JUPYTERHUB_SSL_*}.

Tokens go in C{Authorization} headers only and are never logged.
"""

from __future__ import annotations

import json
import re
from time import monotonic
from pathlib import Path
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet import defer, error as net_error
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import (
    Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, RequestTransmissionFailed,
    ResponseFailed, ResponseNeverReceived,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from hubtwist.config.errors import ConfigError
from hubtwist.hub.settings import HubSettings

log = Logger(namespace="hubtwist.hub")

# Failures worth another try: nothing reached the Hub, or the answer never came.
_TRANSIENT = (net_error.ConnectError, net_error.DNSLookupError, net_error.ConnectionLost,
              net_error.TimeoutError, defer.TimeoutError, defer.CancelledError, ResponseFailed,
              ResponseNeverReceived, RequestTransmissionFailed)


class HubUnavailable(Exception):
    """The Hub could not be reached or kept failing; the message says which call and why."""


class HubRefused(Exception):
    """The Hub answered a call with a client error (4xx); C{code} and its message kept."""

    def __init__(self, what: str, code: int, message: str) -> None:
        self.code = code
        super().__init__(f"the Hub refused {what} with status {code}: {message}")


def retry_delay(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait before retry number C{attempt} (1, 2, ...): doubling, capped."""
    return min(maximum, initial * 2 ** (attempt - 1))


def _pem_blocks(text: str, kind: str) -> list[str]:
    return re.findall(rf"-----BEGIN {kind}-----.+?-----END {kind}-----", text, re.S)


def _read_pem(variable: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError("", f"{variable} names {path}, which cannot be read ({reason})",
                          source="environment") from None


@implementer(IPolicyForHTTPS)
class InternalTLSPolicy:
    """TLS to the Hub with JupyterHub's internal SSL: its CA as the only trust root, and the
    certificate and key the Hub issued to this server as the client certificate.

    A file that cannot be read or holds no usable PEM is a L{ConfigError} naming its
    C{JUPYTERHUB_SSL_*} variable."""

    def __init__(self, ca_file: str, cert_file: str = "", key_file: str = "") -> None:
        from OpenSSL import SSL, crypto
        from twisted.internet import ssl

        cas = _pem_blocks(_read_pem("JUPYTERHUB_SSL_CLIENT_CA", ca_file), "CERTIFICATE")
        try:
            if not cas:
                raise ValueError("no PEM certificate")
            self._trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(c) for c in cas])
        except (ValueError, crypto.Error, SSL.Error) as error:
            raise ConfigError("", f"JUPYTERHUB_SSL_CLIENT_CA names {ca_file}, which holds no "
                              f"usable CA certificate ({_openssl_reason(error)})",
                              source="environment") from None
        self._client = None
        if cert_file and key_file:
            key = _read_pem("JUPYTERHUB_SSL_KEYFILE", key_file)
            cert = _read_pem("JUPYTERHUB_SSL_CERTFILE", cert_file)
            try:
                self._client = ssl.PrivateCertificate.loadPEM(key + "\n" + cert)
            except (ValueError, crypto.Error, SSL.Error, net_error.VerifyError) as error:
                raise ConfigError(
                    "", f"JUPYTERHUB_SSL_KEYFILE ({key_file}) and JUPYTERHUB_SSL_CERTFILE "
                    f"({cert_file}) are not a PEM key and the certificate that goes with it "
                    f"({_openssl_reason(error)})", source="environment") from None

    def creatorForNetloc(self, hostname: bytes, port: int):
        from twisted.internet import ssl

        return ssl.optionsForClientTLS(hostname.decode("idna"), trustRoot=self._trust,
                                       clientCertificate=self._client)


def _openssl_reason(error: Exception) -> str:
    """The last reason OpenSSL gave (its errors are lists of (library, function, reason))."""
    details = error.args[0] if error.args else None
    if isinstance(details, list) and details and isinstance(details[-1], tuple):
        return str(details[-1][-1])
    return str(error) or type(error).__name__


def tls_problem(error: Exception, internal_ca: bool, client_cert: bool) -> str | None:
    """
    What went wrong with TLS to the Hub, in words, when C{error} (a failed request) was a
    TLS failure (an C{OpenSSL.SSL.Error} among its reasons), else C{None}. C{internal_ca}:
    the Hub is checked against C{JUPYTERHUB_SSL_CLIENT_CA}; C{client_cert}: this server
    presents C{JUPYTERHUB_SSL_CERTFILE}. A certificate that is not trusted, or not accepted,
    stays so: such a call is not retried. Pure.
    """
    from OpenSSL import SSL

    failures = [getattr(reason, "value", reason) for reason in getattr(error, "reasons", ())]
    failures.append(error)
    tls = next((failure for failure in failures if isinstance(failure, SSL.Error)), None)
    if tls is None:
        return None
    reason = _openssl_reason(tls)
    if "certificate verify failed" in reason:
        trusted = ("signed by the CA in JUPYTERHUB_SSL_CLIENT_CA" if internal_ca
                   else "trusted by this system's CAs")
        return f"its certificate is not {trusted}, or not for that host ({reason})"
    if "alert" in reason and ("certificate" in reason or "unknown ca" in reason):
        certificate = ("the certificate in JUPYTERHUB_SSL_CERTFILE" if client_cert
                       else "no client certificate (JUPYTERHUB_SSL_CLIENT_CA, _CERTFILE and "
                       "_KEYFILE are not all set)")
        return f"it refused the TLS connection, with {certificate} ({reason})"
    return f"TLS failed ({reason})"


# The metrics' name of each call (C{hubtwist_hub_api_*{call=...}}).
CALL_NAMES = {"the version request": "version", "a token check": "user",
              "the login code exchange": "oauth_token", "an activity report": "activity",
              "the port report": "batchspawner"}


class HubClient:
    """
    Calls to one Hub's REST API as this server (its API token), or as a user's token.

    C{observe}, when set, is told about every attempt: C{observe(call, seconds, failed)}
    (C{call} from L{CALL_NAMES}; C{failed}: no answer, or a 5xx).
    """

    observe = None

    def __init__(self, reactor, settings: HubSettings, *, attempts: int = 4,
                 backoff: float = 0.5, backoff_max: float = 8.0) -> None:
        self._reactor = reactor
        self._settings = settings
        self.attempts = attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 8
        if settings.ssl_client_ca:
            policy = InternalTLSPolicy(settings.ssl_client_ca, settings.ssl_certfile,
                                       settings.ssl_keyfile)
        else:
            policy = BrowserLikePolicyForHTTPS()
        agent = Agent(reactor, contextFactory=policy, pool=self._pool,
                      connectTimeout=settings.request_timeout)
        self._http = HTTPClient(agent)

    @property
    def api_url(self) -> str:
        return self._settings.api_url

    def close(self):
        """Close pooled connections (at shutdown); returns a Deferred."""
        return self._pool.closeCachedConnections()

    # -- the calls -------------------------------------------------------------------------

    async def version(self, attempts: int | None = None) -> str:
        """The Hub's version (C{GET /hub/api}), which hubtwist echoes in X-JupyterHub-Version."""
        code, headers, body = await self._call("GET", self.api_url + "/", "the version request",
                                               attempts=attempts)
        if code >= 400:
            raise HubRefused("the version request", code, _message(body))
        version = headers.getRawHeaders(b"x-jupyterhub-version", [b""])[0].decode("latin-1")
        try:
            version = json.loads(body).get("version") or version
        except (ValueError, AttributeError):
            pass
        if not version:
            raise HubUnavailable(f"{self.api_url}/ did not say which JupyterHub version it is")
        return version

    async def identify(self, token: str) -> dict | None:
        """The model of the user or service C{token} belongs to, or C{None} if it is invalid."""
        code, _, body = await self._call("GET", self.api_url + "/user", "a token check", token=token)
        if code == 200:
            try:
                model = json.loads(body)
            except ValueError:
                raise HubUnavailable("the Hub answered a token check with something that is "
                                     "not JSON") from None
            return model if isinstance(model, dict) and model.get("name") else None
        return None  # 401/403/404: the Hub does not know this token (any more)

    async def token_for_code(self, code: str, *, code_verifier: str, redirect_uri: str) -> str:
        """Finish an OAuth login: exchange C{code} for the user's access token."""
        settings = self._settings
        form = {"client_id": settings.client_id, "client_secret": settings.api_token,
                "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier}
        # A code is single-use: retry only when the request cannot have reached the Hub.
        status, _, body = await self._call("POST", self.api_url + "/oauth2/token",
                                           "the login code exchange", form=form, retry_5xx=False)
        if status != 200:
            raise HubRefused("the login code exchange", status, _message(body))
        try:
            return json.loads(body)["access_token"]
        except (ValueError, KeyError, TypeError):
            raise HubUnavailable("the Hub's answer to the login code exchange has no "
                                 "access_token") from None

    async def post_activity(self, url: str, report: dict, attempts: int | None = None) -> None:
        """POST an activity report (as this server) to C{url}."""
        code, _, body = await self._call("POST", url, "an activity report",
                                         token=self._settings.api_token, body=report,
                                         attempts=attempts)
        if code >= 400:
            raise HubRefused("an activity report", code, _message(body))

    async def report_port(self, port: int) -> None:
        """Tell a batchspawner Hub the port this server listens on (C{POST /batchspawner})."""
        code, _, body = await self._call("POST", self.api_url + "/batchspawner",
                                         "the port report", body={"port": port})
        if code >= 400:
            raise HubRefused("the port report", code, _message(body))

    # -- plumbing --------------------------------------------------------------------------

    async def _call(self, method: str, url: str, what: str, *, token: str | None = None,
                    body: dict | None = None, form: dict | None = None, retry_5xx: bool = True,
                    attempts: int | None = None):
        attempts = attempts or self.attempts
        token = self._settings.api_token if token is None else token
        headers = {"Authorization": f"token {token}", "Accept": "application/json"}
        problem = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await deferLater(self._reactor, retry_delay(attempt - 1, self.backoff,
                                                            self.backoff_max), lambda: None)
            started = monotonic()
            try:
                code, response_headers, content = await defer.Deferred.fromCoroutine(
                    self._once(method, url, headers, body, form)
                ).addTimeout(self._settings.request_timeout, self._reactor)
            except _TRANSIENT as error:
                self._observed(what, started, True)
                settings = self._settings
                tls = tls_problem(error, bool(settings.ssl_client_ca), bool(
                    settings.ssl_client_ca and settings.ssl_certfile and settings.ssl_keyfile))
                if tls is not None:  # the same certificates would fail the same way
                    raise HubUnavailable(f"TLS to the Hub at {urlsplit(url).netloc} failed for "
                                         f"{what}: {tls}") from None
                problem = _why(error, self._settings.request_timeout)
                safe = form is not None and not isinstance(error, net_error.ConnectError)
                if safe:
                    break  # the form may have reached the Hub: do not send it twice
                continue
            self._observed(what, started, code >= 500)
            if code >= 500 and retry_5xx:
                problem = f"it answered with status {code}"
                continue
            return code, response_headers, content
        host = urlsplit(url).netloc
        raise HubUnavailable(f"the Hub at {host} is not answering {what} ({problem})")

    def _observed(self, what: str, started: float, failed: bool) -> None:
        if self.observe is not None:
            self.observe(CALL_NAMES.get(what, "other"), monotonic() - started, failed)

    async def _once(self, method, url, headers, body, form):
        kwargs = {"json": body} if body is not None else {"data": form} if form is not None else {}
        response = await self._http.request(method, url, headers=headers, **kwargs)
        content = await response.content()
        return response.code, response.headers, content


def _why(error: Exception, timeout: float) -> str:
    if isinstance(error, (defer.TimeoutError, defer.CancelledError, net_error.TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(error, net_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (ResponseFailed, ResponseNeverReceived)):
        return "the connection was lost"
    return str(error) or type(error).__name__


def _message(body: bytes) -> str:
    try:
        model = json.loads(body)
        return str(model.get("error_description") or model.get("message") or model.get("error"))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace") or "(no message)"
