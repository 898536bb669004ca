"""
The standalone token gate: without a Hub, every request must carry hubtwist's token, like a
Jupyter server's. A browser brings it once as C{?token=...} (the URL printed at startup) and
then holds a cookie; API clients send C{Authorization: token ...}; WebSocket handshakes may
use either.

Cookie-authenticated unsafe requests (POST, PUT, ...) and WebSocket handshakes must come
from this origin: browsers send cookies to every port of a host, so a page served by another
local app could otherwise make them (and get a shell from a terminal app).

The token and the cookie are hubtwist's, not the app's: they are removed from what the app
receives (the C{Authorization} header carrying the token, C{?token=}, the cookie).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import time
from typing import Callable

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from hubtwist.hub import requestinfo as info
from hubtwist.hub.cookies import without_cookies
from hubtwist.hub.oauth import Signer
from hubtwist.proxy.errors import send_error
from hubtwist.proxy.forward import is_upgrade

_COOKIE_VALUE = "authenticated"


class TokenGate(Resource):
    """Wraps C{inner} (the router): only requests with the token get through."""

    isLeaf = True

    def __init__(self, inner: Resource, token: str, *, base_url: str,
                 clock: Callable[[], float] = time.time, signer: Signer | None = None,
                 open_paths: frozenset[bytes] = frozenset()) -> None:
        """
        @param open_paths: paths served without the token: hubtwist's own version API, a
            health check (never an app's path).
        """
        super().__init__()
        self._inner = inner
        self._open_paths = open_paths
        self._token = token.encode()
        self._prefix = base_url.encode()
        self._base_url = base_url
        self._clock = clock
        self._signer = signer or Signer()
        # Named after the token, so two hubtwists on one host (cookies ignore ports) with
        # different tokens do not overwrite each other's cookie.
        self._cookie = "hubtwist-" + hashlib.sha256(self._token).hexdigest()[:12]

    def render(self, request):
        path = request.path
        if not path.startswith(self._prefix) or path in self._open_paths:
            return self._inner.render(request)
        rest = path[len(self._prefix):]
        if self._matches(info.authorization_token(request)):
            return self._forward(request)
        url_token = info.query_arg(request, "token") if b"token=" in request.uri else None
        if url_token is not None and self._matches(url_token):
            if info.is_navigation(request):
                request.addCookie(self._cookie, self._signer.sign(self._cookie, _COOKIE_VALUE, self._clock()),
                                  path=self._base_url, httpOnly=True, sameSite="lax",
                                  secure=info.is_https(request) or None)
                return self._redirect(request, info.uri_without_arg(request, "token"))
            return self._forward(request)
        if self._has_cookie(request):
            upgrade = is_upgrade(request)
            if info.cross_origin(request.method, info.header(request, b"host"),
                                 info.header(request, b"origin"),
                                 info.header(request, b"sec-fetch-site"), upgrade=upgrade):
                what = "WebSocket connection was opened by a page" if upgrade else "request came"
                send_error(request, 403, "Cross-origin request refused",
                           f"This {what} from another site or port, so hubtwist's login "
                           "cookie does not count for it. Send the token in an Authorization "
                           "header (or as ?token= on a WebSocket handshake) instead.")
                return NOT_DONE_YET
            return self._forward(request)
        return self._ask_for_token(request, rest, wrong=url_token is not None)

    def _forward(self, request):
        """
        Pass an admitted request on without hubtwist's credentials: the cookie, an
        C{Authorization} header with the token, C{?token=} with it. Other values of these
        (an app's own Bearer token, say) are the app's and stay.
        """
        self._clean(request)
        return self._inner.render(request)

    def _clean(self, request) -> None:
        self._hide_cookie(request)
        if self._matches(info.authorization_token(request)):
            request.requestHeaders.removeHeader(b"authorization")
        if b"token=" in request.uri:
            info.drop_query_arg(request, "token", self._matches)

    def admit_lean(self, request) -> bool:
        """
        For the lean path (L{hubtwist.proxy.lean}; C{request} a C{LeanRequest}, a GET or
        HEAD): what L{render} lets through at once — the token in the C{Authorization}
        header, or the login cookie (a GET or HEAD, never cross-origin by L{render}'s
        rule) — passes, cleaned as in L{render}. C{?token=} (a redirect, or a token to
        strip from the URL) and everything else take the ordinary path.
        """
        path = request.path
        if (not path.startswith(self._prefix) or path in self._open_paths
                or b"token=" in request.uri):
            return False
        if not (self._matches(info.authorization_token(request)) or self._has_cookie(request)):
            return False
        self._clean(request)
        return True

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    def _has_cookie(self, request) -> bool:
        now = self._clock()
        return any(name == self._cookie and self._signer.verify(name, value, now) == _COOKIE_VALUE
                   for name, value in info.cookies(request))

    def _hide_cookie(self, request) -> None:
        headers = request.requestHeaders.getRawHeaders(b"cookie")
        if not headers:
            return
        kept = without_cookies(headers, self._is_own_cookie)
        if kept is None:
            request.requestHeaders.removeHeader(b"cookie")
        else:
            request.requestHeaders.setRawHeaders(b"cookie", [kept])

    def _is_own_cookie(self, name: str, value: str) -> bool:
        return name == self._cookie

    def _ask_for_token(self, request, rest: bytes, wrong: bool):
        request.setHeader(b"www-authenticate", b'Token realm="hubtwist"')
        problem = "The token in the URL is not this hubtwist's token." if wrong else \
            "This hubtwist needs its token."
        if info.looks_like_api(request, rest):
            send_error(request, 401, "Token required",
                       f"{problem} Send it in an `Authorization: token ...` header.")
            return NOT_DONE_YET
        request.setResponseCode(401)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        action = html.escape(request.path.decode("latin-1"))
        return _TOKEN_PAGE.format(problem=html.escape(problem), action=action).encode()

    @staticmethod
    def _redirect(request, location: bytes):
        request.setResponseCode(302)
        request.setHeader(b"location", location)
        request.setHeader(b"cache-control", b"no-store")
        return b""


_TOKEN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>401 Token required</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
input{{font:inherit;width:24rem}}</style></head>
<body><h1>Token required</h1><p>{problem} Open the URL hubtwist printed when it started
(it ends in <code>?token=…</code>), or paste the token:</p>
<form method="get" action="{action}"><input name="token" type="password" autocomplete="off" autofocus>
<button>Open</button></form><p><small>hubtwist</small></p></body></html>
"""
