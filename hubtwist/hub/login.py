"""
The browser side of Hub mode: the OAuth login with the Hub (redirect to C{oauth2/authorize},
C{<prefix>oauth_callback}, C{<prefix>logout}) and the cookies it keeps — the login cookie,
the short-lived state cookies and the C{_xsrf} cookie.

Cookies are written with C{request.addCookie}, not as headers: the proxy copies the app's
C{Set-Cookie} headers over the response's, but cookies added this way are sent besides them.
"""

from __future__ import annotations

import secrets
import string
from typing import Callable

from twisted.logger import Logger

from hubtwist.hub import requestinfo as info
from hubtwist.hub.client import HubClient, HubRefused, HubUnavailable
from hubtwist.hub.cookies import without_cookies
from hubtwist.hub.identity import Identity, IdentityCache, cache_key
from hubtwist.hub.oauth import LoginStates, Signer, authorize_url, pkce_pair, safe_next_url
from hubtwist.hub.settings import HubSettings
from hubtwist.hub.xsrf import XSRF_COOKIE, anonymous_id, make_token, token_is_valid, xsrf_id
from hubtwist.proxy.errors import send_error

log = Logger(namespace="hubtwist.hub")

SESSION_COOKIE = "jupyterhub-session-id"
_KEPT_FOR = 60.0  # seconds a Cookie header's cleaned form is reused
STATE_COOKIE_MAX_AGE = 600


def redirect(request, location: bytes) -> bytes:
    """Answer C{request} with a 302 to C{location}; returns the body to render."""
    request.setResponseCode(302)
    request.setHeader(b"location", location)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"Redirecting to " + location + b"\n"


class HubLogin:
    """Logins, logouts and the cookies of one Hub-mode hubtwist (see the module docstring)."""

    def __init__(self, settings: HubSettings, client: HubClient, cache: IdentityCache, *,
                 base_url: str, clock: Callable[[], float], signer: Signer | None = None) -> None:
        self._settings = settings
        self._client = client
        self._cache = cache
        self._clock = clock
        self._signer = signer or Signer()
        self._states = LoginStates()
        self.base_url = base_url
        self.cookie_name = settings.cookie_name
        self._cookie_path = "/" if settings.cookie_host_prefix else base_url
        self._state_cookie = settings.cookie_name + "-oauth-state"
        self._xsrf_ids: dict[tuple, str] = {}
        self._kept_cookies: dict[tuple[bytes, ...], tuple[bytes | None, float]] = {}

    # -- reading a request -----------------------------------------------------------------

    @staticmethod
    def session_id(request) -> str:
        """The Hub's session id (its C{jupyterhub-session-id} cookie, path /), or ''."""
        for name, value in info.cookies(request):
            if name == SESSION_COOKIE:
                return value
        return ""

    def login_token(self, request) -> str | None:
        """The user's token in a valid login cookie of this hubtwist, if any."""
        now = self._clock()
        for name, value in info.cookies(request):
            if name == self.cookie_name:
                token = self._signer.verify(self.cookie_name, value, now)
                if token:
                    return token
        return None

    def xsrf_is_valid(self, request, token: str, session_id: str) -> bool:
        """Does the request carry the XSRF token of this login (argument or header)?"""
        sent = (info.query_arg(request, "_xsrf") or info.header(request, b"x-xsrftoken")
                or info.header(request, b"x-csrftoken"))
        return token_is_valid(self._signer, sent, self._xsrf_id(request, token, session_id),
                              self._clock())

    def _xsrf_id(self, request, token: str | None, session_id: str) -> str:
        # Two hashes: remembered per (session, token, address, User-Agent), which a browser
        # repeats on every request.
        key = (session_id, token, info.client_ip(request), info.header(request, b"user-agent") or "")
        known = self._xsrf_ids.get(key)
        if known is None:
            known = xsrf_id(session_id, token, anonymous_id(key[2], key[3]))
            if len(self._xsrf_ids) >= 4096:
                self._xsrf_ids.clear()
            self._xsrf_ids[key] = known
        return known

    # -- the login -------------------------------------------------------------------------

    def start(self, request) -> bytes:
        """Send the browser to the Hub's authorize URL; the state and PKCE verifier stay here."""
        now = self._clock()
        cookie_name = self._state_cookie
        if any(name == cookie_name for name, _ in info.cookies(request)):
            # Another login is in flight in this browser (two tabs): its cookie stays intact.
            cookie_name += "-" + "".join(secrets.choice(string.ascii_letters) for _ in range(8))
        verifier, challenge = pkce_pair()
        next_url = safe_next_url(request.uri.decode("latin-1"), self.base_url)
        state = self._states.create(next_url, verifier, cookie_name, now)
        self._add_cookie(request, cookie_name, self._signer.sign(cookie_name, state, now),
                         self._cookie_path, max_age=STATE_COOKIE_MAX_AGE)
        settings = self._settings
        location = authorize_url(settings.hub_host, settings.hub_base_url,
                                 client_id=settings.client_id,
                                 redirect_uri=settings.oauth_redirect_uri, state=state,
                                 code_challenge=challenge)
        return redirect(request, location.encode("latin-1"))

    async def callback(self, request) -> None:
        """C{<prefix>oauth_callback}: check the state, get the token, set the cookie, go back."""
        error = info.query_arg(request, "error")
        if error:
            description = info.query_arg(request, "error_description") or error
            self._login_failed(request, 400, f"JupyterHub did not complete the login: {description}.")
            return
        code, state = info.query_arg(request, "code"), info.query_arg(request, "state")
        if not code or not state:
            self._login_failed(request, 400, "The login callback came without a code or state.")
            return
        now = self._clock()
        pending = self._states.get(state, now)
        cookie_name = pending.cookie_name if pending else self._state_cookie
        cookie_state = None
        for name, value in info.cookies(request):
            if name == cookie_name:
                cookie_state = self._signer.verify(name, value, now, STATE_COOKIE_MAX_AGE) or cookie_state
        if cookie_state is None and pending is not None and self.login_token(request):
            # A second tab finishing a login that another tab already completed.
            self._states.pop(state, now)
            self._clear_state_cookies(request)
            info.finish_render(request, redirect(request, pending.next_url.encode("latin-1")))
            return
        if cookie_state != state:
            log.warn("A login callback's state does not match its cookie; refused")
            self._login_failed(request, 403, "The login's state does not match this browser's "
                                             "(oauth state does not match).")
            return
        self._states.pop(state, now)
        self._clear_state_cookies(request)
        if pending is None:
            # The state is ours (signed) but unknown: hubtwist restarted, or 10 minutes passed.
            info.finish_render(request, redirect(request, self.base_url.encode()))
            return
        try:
            token = await self._client.token_for_code(
                code, code_verifier=pending.code_verifier,
                redirect_uri=self._settings.oauth_redirect_uri)
            model = await self._client.identify(token)
        except HubUnavailable as error:
            self._login_failed(request, 503, f"The login could not be completed because {error}.")
            return
        except HubRefused as error:
            log.warn("Login not completed: {why}", why=str(error))
            self._login_failed(request, 400, f"The login could not be completed: {error}.")
            return
        if not model:
            self._login_failed(request, 500, "JupyterHub issued a token that it then did not "
                                             "recognise.")
            return
        identity = Identity.from_model(model)
        session_id = self.session_id(request)
        self._cache.remember(cache_key(token, session_id), identity)
        log.info("Logged in: {who}", who=identity.describe())
        self.set_login_cookie(request, token, session_id)
        info.finish_render(request, redirect(request, pending.next_url.encode("latin-1")))

    def _login_failed(self, request, status: int, problem: str) -> None:
        send_error(request, status, "Login failed", f"{problem} Open {self.base_url} to log in again.",
                   retry_after=5 if status == 503 else None)

    def logout(self, request) -> bytes:
        """C{<prefix>logout}: forget the login here, then log out of the Hub."""
        token = self.login_token(request)
        if token:
            self._cache.forget(cache_key(token, self.session_id(request)))
        self.clear_login_cookie(request)
        self._clear_cookie(request, XSRF_COOKIE, self.base_url)
        return redirect(request, self.hub_url("hub/logout").encode("latin-1"))

    def hub_url(self, path: str) -> str:
        """A page of the Hub, as the browser reaches it."""
        return f"{self._settings.hub_host}{self._settings.hub_base_url}{path}"

    # -- cookies ---------------------------------------------------------------------------

    def set_login_cookie(self, request, token: str, session_id: str) -> None:
        now = self._clock()
        self._add_cookie(request, self.cookie_name, self._signer.sign(self.cookie_name, token, now),
                         self._cookie_path)
        # The XSRF token signs the new login, so it changes now (readable by page scripts).
        xsrf = make_token(self._signer, self._xsrf_id(request, token, session_id), now)
        self._add_cookie(request, XSRF_COOKIE, xsrf, self.base_url, http_only=False)

    def clear_login_cookie(self, request) -> None:
        self._clear_cookie(request, self.cookie_name, self._cookie_path)

    def refresh_xsrf_cookie(self, request, token: str, session_id: str) -> None:
        """On a page view, give the browser a valid C{_xsrf} cookie if it lacks one."""
        if self.has_xsrf_cookie(request, token, session_id):
            return
        identity = self._xsrf_id(request, token, session_id)
        self._add_cookie(request, XSRF_COOKIE, make_token(self._signer, identity, self._clock()),
                         self.base_url, http_only=False)

    def has_xsrf_cookie(self, request, token: str, session_id: str) -> bool:
        """Whether the browser holds a valid C{_xsrf} cookie for this login."""
        identity = self._xsrf_id(request, token, session_id)
        now = self._clock()
        return any(name == XSRF_COOKIE and token_is_valid(self._signer, value, identity, now)
                   for name, value in info.cookies(request))

    def signatures_expire(self, request, cookies: list[tuple[str, str]]) -> float:
        """
        The earliest time one of the signed values the login checked on C{request} (its
        login cookies and C{_xsrf} cookies among C{cookies}, the ones it was sent with; the
        XSRF headers) stops being valid; infinity when none is known to be genuine. A
        decision taken on them may be reused until then
        (L{hubtwist.hub.gate.HubGate.admit_lean}).
        """
        signed = [(name, value) for name, value in cookies
                  if name in (self.cookie_name, XSRF_COOKIE)]
        for header in (b"x-xsrftoken", b"x-csrftoken"):
            sent = info.header(request, header)
            if sent:
                signed.append((XSRF_COOKIE, sent))
        now = self._clock()
        ends = []
        for name, value in signed:
            # verify() (a memo hit) first: it remembers a genuine value again should the
            # signer's memo have been emptied since the login checked it.
            if self._signer.verify(name, value, now) is not None:
                ends.append(self._signer.expires(name, value))
        return min((end for end in ends if end is not None), default=float("inf"))

    def hide_own_cookies(self, request) -> None:
        """
        The apps do not get hubtwist's cookies: the login cookie (it holds the user's Hub
        token), the state cookies, and hubtwist's C{_xsrf} cookie. An app's own C{_xsrf}
        cookie (a Jupyter server behind hubtwist sets one, same name) stays: only values
        hubtwist signed are dropped.
        """
        headers = request.requestHeaders.getRawHeaders(b"cookie")
        if not headers:
            return
        now = self._clock()
        key = tuple(headers)
        known = self._kept_cookies.get(key)
        if known is not None and now - known[1] < _KEPT_FOR:
            kept = known[0]
        else:
            def own(name: str, value: str) -> bool:
                if name == XSRF_COOKIE:
                    return self._signer.verify(XSRF_COOKIE, value, now) is not None
                return name == self.cookie_name or name.startswith(self._state_cookie)

            kept = without_cookies(headers, own)
            if len(self._kept_cookies) >= 1024:
                self._kept_cookies.clear()
            # (the same header gives the same answer while its signatures stay valid)
            self._kept_cookies[key] = (kept, now)
        if kept is None:
            request.requestHeaders.removeHeader(b"cookie")
        else:
            request.requestHeaders.setRawHeaders(b"cookie", [kept])

    def _secure(self, request) -> bool:
        if self._settings.cookie_host_prefix:
            return True
        if self._settings.cookie_secure is not None:
            return self._settings.cookie_secure
        if self._settings.public_url:
            return self._settings.public_url.startswith("https:")
        return info.is_https(request)

    def _add_cookie(self, request, name: str, value: str, path: str, *, max_age: int | None = None,
                    http_only: bool = True) -> None:
        request.addCookie(name, value, path=path, httpOnly=http_only,
                          max_age=None if max_age is None else str(max_age),
                          secure=self._secure(request) or None, sameSite="lax")

    def _clear_cookie(self, request, name: str, path: str) -> None:
        request.addCookie(name, "", path=path, max_age="0", expires="Thu, 01 Jan 1970 00:00:00 GMT",
                          secure=self._secure(request) or None, httpOnly=True)

    def _clear_state_cookies(self, request) -> None:
        for name, _ in info.cookies(request):
            if name.startswith(self._state_cookie):
                self._clear_cookie(request, name, self._cookie_path)
