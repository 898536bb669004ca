"""
The Hub auth gate: one resource that wraps the router, so every request — page, API call,
WebSocket handshake — is authenticated and scope-checked before anything else sees it.

Per request (JupyterHub's C{HubOAuth} rules, see docs/jupyterhub.md):

  - C{X-JupyterHub-Version} goes on every response. (What a client sends as the user-info
    headers hubtwist sets for apps never reaches an app: L{hubtwist.proxy.forward}.)
  - C{<prefix>api} answers without authentication (the Hub's readiness probe).
  - C{<prefix>oauth_callback} finishes a login, C{<prefix>logout} ends it (L{HubLogin}).
  - Otherwise a token is looked for: C{?token=} (WebSocket handshakes, or when allowed), an
    C{Authorization} header, then the login cookie (which needs a valid XSRF token on
    unsafe requests). The Hub says whose token it is (cached), and one of the access scopes
    must be held.
  - Without credentials a browser is sent to the Hub's C{oauth2/authorize}; API-looking
    requests (including WebSocket handshakes) get 403 and never reach an app.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from hubtwist.hub import requestinfo as info
from hubtwist.hub.client import HubClient, HubUnavailable
from hubtwist.hub.identity import UNKNOWN, Identity, IdentityCache, cache_key
from hubtwist.hub.login import HubLogin, redirect
from hubtwist.hub.oauth import Signer
from hubtwist.hub.scopes import granted
from hubtwist.hub.settings import HubSettings
from hubtwist.hub.xsrf import needs_check
from hubtwist.proxy.errors import send_error
from hubtwist.proxy.forward import is_upgrade

log = Logger(namespace="hubtwist.hub")

_STALE_WARNING_EVERY = 60.0
_MAX_GRANTS = 4096
_MAX_LEAN_DECISIONS = 1024  # each holds a Cookie header and its cleaned copy
_LEAN_DECISION_FOR = 10.0  # seconds at most a lean admission is reused (see admit_lean)
# The request headers a lean admission reads (the credentials, the XSRF rules, the XSRF
# identity, is_upgrade): a remembered admission is reused only for the same values.
_DECIDING_HEADERS = (b"authorization", b"cookie", b"user-agent", b"sec-fetch-mode",
                     b"sec-fetch-site", b"x-xsrftoken", b"x-csrftoken", b"upgrade")


class _LeanDecision:
    """
    An admission of the lean path, remembered: who, by which cached identity, until when,
    and what the cleaning (L{HubGate._clean}) made of the deciding headers.

    @ivar cache_key: the identity cache's key of the credentials.
    @ivar identity: the identity the cache handed out; reuse needs the very same object.
    @ivar until: the clock time after which the admission is decided afresh.
    @ivar edits: C{(lower-case name, values or None)} for each of L{_DECIDING_HEADERS}
        the cleaning changed (None: removed). The cleaning reads and changes only those
        headers, so the same values clean to the same result: a reuse applies these.
    @ivar identity_headers: the C{forward_user_info} headers the cleaning set.
    @ivar user: who is calling, for the access log.
    """

    __slots__ = ("cache_key", "identity", "until", "edits", "identity_headers", "user")

    def __init__(self, cache_key_: str, identity, until: float, edits: tuple,
                 identity_headers, user) -> None:
        self.cache_key = cache_key_
        self.identity = identity
        self.until = until
        self.edits = edits
        self.identity_headers = identity_headers
        self.user = user

    def apply(self, request) -> None:
        """Clean C{request} (whose deciding values are this admission's) as it was."""
        for name, values in self.edits:
            if values is None:
                request.removeHeader(name)
            else:
                request.setRawHeaders(name, values)
        request.identity_headers = self.identity_headers
        request.hubtwist_user = self.user


def _deciding_values(request) -> tuple | None:
    """
    What a lean admission of C{request} (a L{hubtwist.proxy.lean.LeanRequest}) depends on
    besides the path and the clock: its method, client address and the
    L{_DECIDING_HEADERS}; None when its query could hold credentials or an XSRF token
    (C{token=}, C{_xsrf=}, or anything percent-encoded that might decode to them): such
    requests are always decided afresh.
    """
    query = request.uri.partition(b"?")[2]
    if query and (b"%" in query or b"token" in query or b"xsrf" in query):
        return None
    return (request.method, info.client_ip(request),
            request.header_values(_DECIDING_HEADERS))


@attrs.frozen
class Credentials:
    """A token found on a request, and where: C{url}, C{header} or C{cookie}."""

    token: str = attrs.field(repr=False)
    source: str
    session_id: str = ""


class HubGate(Resource):
    """Wraps C{inner} (the router) with JupyterHub authentication; see the module docstring."""

    isLeaf = True

    def __init__(self, inner: Resource, settings: HubSettings, client: HubClient, *,
                 base_url: str, clock: Callable[[], float] = time.time,
                 forward_user_info: bool = False, signer: Signer | None = None,
                 open_paths: frozenset[bytes] = frozenset()) -> None:
        """
        @param open_paths: paths served without authentication: hubtwist's own version
            API, which the Hub's readiness probe asks (never an app's path).
        """
        super().__init__()
        self._inner = inner
        self._open_paths = open_paths
        self._settings = settings
        self._client = client
        self._clock = clock
        self._forward_user_info = forward_user_info
        self._prefix = base_url.encode()
        self._cache = IdentityCache(clock, max_age=settings.cache_max_age)
        self._login = HubLogin(settings, client, self._cache, base_url=base_url, clock=clock,
                               signer=signer)
        self._inflight: dict[str, list[Deferred]] = {}
        self._stale_warned = -_STALE_WARNING_EVERY
        self._grants: dict[Identity, bool] = {}
        self._lean_decisions: dict[tuple, _LeanDecision] = {}
        self.hub_version: bytes | None = None

    # -- dispatch --------------------------------------------------------------------------

    def render(self, request):
        if self.hub_version:
            request.setHeader(b"x-jupyterhub-version", self.hub_version)
        path = request.path
        if not path.startswith(self._prefix) or path in self._open_paths:
            # a redirect to the prefix, a 404, or hubtwist's version for the Hub's probe
            return self._inner.render(request)
        rest = path[len(self._prefix):]
        if rest == b"oauth_callback":
            Deferred.fromCoroutine(self._login.callback(request)).addErrback(self._crashed, request)
            return NOT_DONE_YET
        if rest == b"logout":
            return self._login.logout(request)
        credentials, refusal = self._credentials(request)
        if credentials is None:
            return self._unauthenticated(request, rest, refusal)
        key = cache_key(credentials.token, credentials.session_id)
        known = self._cache.fresh(key)
        if known is not UNKNOWN:
            return self._decide(request, rest, credentials, known)
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        waiting = self._lookup(key, credentials.token)
        waiting.addCallback(lambda identity: None if gone else info.finish_render(
            request, self._decide(request, rest, credentials, identity)))
        waiting.addErrback(self._hub_failed, request, gone)
        return NOT_DONE_YET

    # -- credentials -----------------------------------------------------------------------

    def _credentials(self, request) -> tuple[Credentials | None, str]:
        """The request's token and where it came from, or C{None} and why a cookie was refused."""
        session_id = self._login.session_id(request)
        upgrade = is_upgrade(request)
        if self._settings.allow_token_in_url or upgrade:
            token = info.query_arg(request, "token")
            if token:
                return Credentials(token, "url", session_id), ""
        token = info.authorization_token(request)
        if token:
            return Credentials(token, "header", session_id), ""
        if upgrade and not self._settings.allow_websocket_cookie_auth:
            return None, "WebSocket connections need a token here: cookie login is turned off."
        token = self._login.login_token(request)
        if token is None:
            return None, ""
        if upgrade and info.cross_origin(request.method, info.header(request, b"host"),
                                         info.header(request, b"origin"),
                                         info.header(request, b"sec-fetch-site"), upgrade=True):
            # XSRF rules exempt handshakes, and any page may open a WebSocket anywhere with
            # the user's cookies: only this origin's pages may use the login cookie for one.
            return None, ("This WebSocket connection was opened by a page from another site "
                          "or port, so the login cookie does not count for it. Send a "
                          "JupyterHub token (`?token=` or an Authorization header) instead.")
        if (self._settings.xsrf_protection
                and needs_check(request.method, info.header(request, b"sec-fetch-mode"),
                                info.header(request, b"sec-fetch-site"))
                and not self._login.xsrf_is_valid(request, token, session_id)):
            return None, ("The login cookie is only accepted on this request with a matching "
                          "XSRF token: the `_xsrf` cookie's value as `_xsrf` argument or "
                          "X-XSRFToken header.")
        return Credentials(token, "cookie", session_id), ""

    # -- identity --------------------------------------------------------------------------

    def _lookup(self, key: str, token: str) -> Deferred:
        """Who C{token} is; concurrent requests with the same token share one Hub call."""
        waiter = Deferred()
        waiters = self._inflight.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._inflight[key] = [waiter]
        Deferred.fromCoroutine(self._ask_hub(key, token)).addBoth(self._lookup_done, key)
        return waiter

    def _lookup_done(self, result, key: str) -> None:
        for waiter in self._inflight.pop(key, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _ask_hub(self, key: str, token: str) -> Identity | None:
        try:
            model = await self._client.identify(token)
        except HubUnavailable:
            stale = self._cache.stale(key)
            if stale is None:
                raise
            now = self._clock()
            if now - self._stale_warned >= _STALE_WARNING_EVERY:
                self._stale_warned = now
                log.warn("The Hub is not reachable; accepting identities it confirmed before "
                         "(such as {who}) until it is back", who=stale.describe())
            return stale
        identity = Identity.from_model(model) if model else None
        self._cache.remember(key, identity)
        return identity

    def _hub_failed(self, failure: Failure, request, gone: list) -> None:
        if gone:
            return
        if failure.check(HubUnavailable):
            log.warn("Cannot check a request's credentials: {why}", why=failure.getErrorMessage())
            send_error(request, 503, "JupyterHub unreachable",
                       f"hubtwist cannot check who you are because {failure.getErrorMessage()}. "
                       "Try again in a moment.", retry_after=5)
        else:
            self._crashed(failure, request)

    def _crashed(self, failure: Failure, request) -> None:
        log.failure("The auth gate failed on {path}", failure,
                    path=request.path.decode("latin-1"))
        send_error(request, 500, "Internal error",
                   "hubtwist failed while checking who you are; the details are in its log.")

    # -- decisions -------------------------------------------------------------------------

    def _decide(self, request, rest: bytes, credentials: Credentials, identity: Identity | None):
        if identity is None:
            if credentials.source == "cookie":
                self._login.clear_login_cookie(request)
                return self._unauthenticated(request, rest, "")
            return self._refuse(request, 403, "Invalid token",
                                "JupyterHub does not accept the token this request carries. "
                                "It may have expired or been revoked; get a new one from the Hub.")
        if not self._granted(identity):
            log.info("Refused {who}: none of the access scopes {scopes}",
                     who=identity.describe(), scopes=" ".join(self._settings.access_scopes))
            return self._refuse(
                request, 403, "Forbidden",
                f"You are logged in to JupyterHub as {identity.describe()}, who may not use "
                f"{self._settings.kind}: that needs one of the scopes "
                f"{', '.join(self._settings.access_scopes)}. Ask its owner to share it with you, "
                f"or log out at {self._login.hub_url('hub/logout')} and log in as someone else.")
        if credentials.source == "url" and self._settings.allow_token_in_url \
                and info.is_navigation(request):
            # As JupyterHub's services: a ?token= link starts a cookie session, and the
            # token leaves the address bar (and later Referer headers).
            self._login.set_login_cookie(request, credentials.token, credentials.session_id)
            return redirect(request, info.uri_without_arg(request, "token"))
        self._pass(request, credentials, identity)
        return self._inner.render(request)

    def _pass(self, request, credentials: Credentials, identity: Identity) -> None:
        """An admitted request goes on without hubtwist's credentials, with who is calling;
        a page view by cookie gets a valid C{_xsrf} cookie if the browser lacks one."""
        if credentials.source == "cookie" and info.is_navigation(request):
            self._login.refresh_xsrf_cookie(request, credentials.token, credentials.session_id)
        self._clean(request, credentials, identity)

    def _clean(self, request, credentials: Credentials, identity: Identity) -> None:
        """Without hubtwist's credentials and cookies, with who is calling."""
        hide_credentials(request, credentials)
        self._login.hide_own_cookies(request)
        if self._forward_user_info:
            add_user_headers(request, identity)
        request.hubtwist_user = identity.name  # for the access log

    def admit_lean(self, request) -> bool:
        """
        For the lean path (L{hubtwist.proxy.lean}; C{request} a C{LeanRequest}, a GET or
        HEAD): True when L{render} would let the request through at once, with the same
        checks in the same code (L{_credentials}, the identity cache, the scopes) and the
        request cleaned as L{render} cleans it (L{_pass}), C{X-JupyterHub-Version} on the
        answer (and a fresh C{_xsrf} cookie on a page view that lacks a valid one, as
        L{render} sets it). Whatever L{render} would have to wait for or answer itself —
        credentials the cache does not know (fresh), a refusal, a token in the URL, the
        OAuth callback, logout — is left to it (False).
        """
        path = request.path
        if not path.startswith(self._prefix) or path in self._open_paths:
            return False
        if path[len(self._prefix):] in (b"oauth_callback", b"logout"):
            return False
        # A browser repeats the same credentials on every request: an admission is
        # remembered for the exact values it read (_deciding_values) and reused while the
        # identity cache still hands out the same identity and until the first signature
        # it relied on expires — what deciding afresh would say, for less work.
        now = self._clock()
        deciding = _deciding_values(request)
        if deciding is not None:
            known = self._lean_decisions.get(deciding)
            if known is not None:
                if now < known.until and self._cache.fresh(known.cache_key) is known.identity:
                    if self.hub_version:
                        request.setHeader(b"x-jupyterhub-version", self.hub_version)
                    known.apply(request)
                    return True
                del self._lean_decisions[deciding]
        credentials, _refusal = self._credentials(request)
        if credentials is None or credentials.source == "url":
            return False
        key = cache_key(credentials.token, credentials.session_id)
        identity = self._cache.fresh(key)
        if identity is UNKNOWN or identity is None or not self._granted(identity):
            return False
        if self.hub_version:
            request.setHeader(b"x-jupyterhub-version", self.hub_version)
        cookies = info.cookies(request)  # as sent: the cleaning hides hubtwist's own
        self._pass(request, credentials, identity)
        expires = self._login.signatures_expire(request, cookies)
        if deciding is not None and not any(name == b"Set-Cookie"
                                            for name, _ in request.response_headers):
            if len(self._lean_decisions) >= _MAX_LEAN_DECISIONS:
                self._lean_decisions.clear()
            cleaned = request.header_values(_DECIDING_HEADERS)
            edits = tuple((name, None if after is None else list(after))
                          for name, before, after in zip(_DECIDING_HEADERS, deciding[2], cleaned)
                          if after != before)
            self._lean_decisions[deciding] = _LeanDecision(
                key, identity, min(now + _LEAN_DECISION_FOR, expires), edits,
                request.identity_headers, request.hubtwist_user)
        return True

    def _granted(self, identity: Identity) -> bool:
        """One of the access scopes is held; decided once per cached identity (the cache
        hands out the same object until the Hub is asked again)."""
        known = self._grants.get(identity)
        if known is None:
            known = granted(identity.scopes, self._settings.access_scopes)
            if len(self._grants) >= _MAX_GRANTS:
                self._grants.clear()
            self._grants[identity] = known
        return known

    def _unauthenticated(self, request, rest: bytes, refusal: str):
        if info.looks_like_api(request, rest):
            detail = refusal or ("Log in through JupyterHub first, or send a JupyterHub token in "
                                 "an `Authorization: token ...` header.")
            return self._refuse(request, 403, "Authentication required", detail)
        return self._login.start(request)

    @staticmethod
    def _refuse(request, status: int, title: str, detail: str):
        send_error(request, status, title, detail)
        return NOT_DONE_YET


def hide_credentials(request, credentials: Credentials) -> None:
    """
    The token that authenticated the request is the user's Hub token: it does not go on to
    the app, neither as C{Authorization} header nor as C{?token=}. Other values there (an
    app's own Bearer token, say) are the app's and stay.
    """
    if credentials.source == "header":
        request.requestHeaders.removeHeader(b"authorization")
    elif credentials.source == "url":
        token = credentials.token.encode()
        info.drop_query_arg(request, "token",
                            lambda value: hmac.compare_digest(value.encode(), token))


def add_user_headers(request, identity: Identity) -> None:
    """
    C{forward_user_info}: who is calling, for the app. Kept on the request apart from the
    client's headers (C{request.identity_headers}): the forwarder adds them after it has
    cleaned the client's, so nothing the client sends (a C{Connection} header naming them,
    an C{X_Forwarded_User} spelling) can remove or imitate them.
    """
    request.identity_headers = user_headers(identity)


_USER_HEADERS: dict[Identity, tuple[tuple[bytes, bytes], ...]] = {}


def user_headers(identity: Identity) -> tuple[tuple[bytes, bytes], ...]:
    """
    The C{forward_user_info} headers for C{identity}, (name, value) pairs. Made once per
    identity (the identity cache hands out the same object for every request of its
    lifetime; an identity is a frozen value), not per request: JSON encoding is not free.
    """
    known = _USER_HEADERS.get(identity)
    if known is None:
        # jhsingle-native-proxy's --forward-user-info header, for apps written against it.
        legacy = {"kind": identity.kind, "name": identity.name, "admin": identity.admin,
                  "groups": list(identity.groups)}
        known = (
            (b"X-Forwarded-User", identity.name.encode("utf-8")),
            (b"X-Hubtwist-User", identity.as_header().encode("utf-8")),
            (b"X-CDSDashboards-JH-User", json.dumps(legacy).encode("utf-8")),
        )
        if len(_USER_HEADERS) >= _MAX_GRANTS:
            _USER_HEADERS.clear()
        _USER_HEADERS[identity] = known
    return known
