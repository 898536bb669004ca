"""
The pure parts of the OAuth login with the Hub: signed values, the login state kept in
memory, PKCE, the authorize URL and the check of the URL a login returns to.

No reactor, no request: every function takes values (the time included) and returns values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from urllib.parse import urlencode, urlsplit

import attrs

STATE_MAX_AGE = 600.0  # seconds a login may take, as JupyterHub's oauth_state_max_age
MAX_PENDING_LOGINS = 5000  # unauthenticated requests create states: bound the memory they take
SIGNED_MAX_AGE = 31 * 24 * 3600.0  # as Tornado's secure cookies
_MAX_GENUINE = 4096  # signatures remembered as genuine (cleared when full)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """
    HMAC-SHA256 signatures of short text values (cookie values, XSRF tokens), bound to a
    name and a time. The key is random per process unless given: cookies die with hubtwist,
    which is fine because a new login takes one redirect.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        # (name, signed) -> (value, signing time) of signatures found genuine: a browser
        # sends the same cookies with every request, and an HMAC check per cookie per
        # request was a third of the Hub gate's cost on the lean path. Only genuine ones
        # are kept, so a forgery is checked (and refused) every time.
        self._genuine: dict[tuple[str, str], tuple[str, int]] = {}

    def _mac(self, name: str, payload: str) -> str:
        return hmac.new(self._key, f"{name}|{payload}".encode(), hashlib.sha256).hexdigest()

    def sign(self, name: str, value: str, now: float) -> str:
        """C{value} signed for C{name} at C{now}, in characters safe in a cookie or URL."""
        payload = f"{_b64(value.encode())}.{int(now)}"
        return f"{payload}.{self._mac(name, payload)}"

    def verify(self, name: str, signed: str | None, now: float,
               max_age: float = SIGNED_MAX_AGE) -> str | None:
        """
        The value C{signed} holds, or C{None} when it is forged, for another name, or old.
        Any text gives one of these (a cookie may hold any bytes): never an exception.
        """
        known = self._genuine.get((name, signed)) if signed else None
        if known is not None:
            value, stamp = known
            return value if 0 <= now - stamp <= max_age else None
        if not signed or signed.count(".") != 2 or not signed.isascii():
            return None  # sign() writes ASCII only; compare_digest refuses non-ASCII text
        payload, _, mac = signed.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(name, payload)):
            return None
        encoded, _, stamp = payload.partition(".")
        try:
            signed_at = int(stamp)
            value = _unb64(encoded).decode()
        except (ValueError, OverflowError, UnicodeDecodeError):
            return None
        if len(self._genuine) >= _MAX_GENUINE:
            self._genuine.clear()
        self._genuine[(name, signed)] = (value, signed_at)
        return value if 0 <= now - signed_at <= max_age else None

    def expires(self, name: str, signed: str, max_age: float = SIGNED_MAX_AGE) -> float | None:
        """When C{signed} stops being valid for L{verify}, if it was found genuine before
        (None: not known to be genuine)."""
        known = self._genuine.get((name, signed))
        return None if known is None else known[1] + max_age


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE C{(code_verifier, code_challenge)} for the S256 method (RFC 7636)."""
    verifier = secrets.token_urlsafe(32)
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    """The S256 challenge of C{verifier}."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


@attrs.frozen
class LoginState:
    """What hubtwist remembers about one login in progress, by its random state id."""

    next_url: str
    code_verifier: str
    cookie_name: str
    created: float


class LoginStates:
    """
    Logins in progress, in memory (JupyterHub's services do the same since 5.x): the state
    sent to the Hub is only a random id, so nothing about the login can be read or forged
    from it. Entries expire after L{STATE_MAX_AGE}; the oldest go first when there are too
    many, so a flood of unauthenticated requests cannot grow memory without bound.
    """

    def __init__(self, max_age: float = STATE_MAX_AGE, max_entries: int = MAX_PENDING_LOGINS) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._states: OrderedDict[str, LoginState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def create(self, next_url: str, code_verifier: str, cookie_name: str, now: float) -> str:
        """Remember a new login; returns its state id."""
        self._expire(now)
        while len(self._states) >= self.max_entries:
            self._states.popitem(last=False)
        state_id = secrets.token_urlsafe(16)
        self._states[state_id] = LoginState(next_url, code_verifier, cookie_name, now)
        return state_id

    def get(self, state_id: str, now: float) -> LoginState | None:
        """The login C{state_id} names, if it is known and not expired."""
        self._expire(now)
        return self._states.get(state_id)

    def pop(self, state_id: str, now: float) -> LoginState | None:
        """Like L{get}, and forget it: a state is used once."""
        self._expire(now)
        return self._states.pop(state_id, None)

    def _expire(self, now: float) -> None:
        while self._states:
            oldest = next(iter(self._states.values()))
            if now - oldest.created <= self.max_age:
                break
            self._states.popitem(last=False)


def authorize_url(hub_host: str, hub_base_url: str, *, client_id: str, redirect_uri: str,
                  state: str, code_challenge: str) -> str:
    """The Hub's C{oauth2/authorize} URL a browser is sent to, with every parameter."""
    query = urlencode([
        ("client_id", client_id), ("redirect_uri", redirect_uri), ("response_type", "code"),
        ("state", state), ("code_challenge", code_challenge), ("code_challenge_method", "S256"),
    ])
    return f"{hub_host.rstrip('/')}{hub_base_url}hub/api/oauth2/authorize?{query}"


def safe_next_url(url: str | None, fallback: str) -> str:
    """
    C{url} when it is a path on this origin, else C{fallback}. Refused: absolute and
    scheme-relative URLs (C{//evil}), backslashes (browsers read C{/\\evil} as C{//evil}),
    control characters, and anything not starting with C{/}.
    """
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return fallback
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        return fallback
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return fallback
    return url
