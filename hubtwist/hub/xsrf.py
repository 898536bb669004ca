"""
XSRF protection as JupyterHub applies it to cookie-authenticated requests
(C{jupyterhub/_xsrf_utils.py}), as pure functions.

The token is a signed C{"<session id>:<sha256 of the login token>"}, kept in the C{_xsrf}
cookie (path = prefix, readable by the page's scripts) and sent back as the C{_xsrf}
argument or an C{X-XSRFToken} / C{X-CSRFToken} header. Only cookie-authenticated requests
that are not plain page views need it; without a valid one the cookie is ignored, so the
request is anonymous.
"""

from __future__ import annotations

import base64
import hashlib

from hubtwist.hub.oauth import Signer

XSRF_COOKIE = "_xsrf"
_READ_ONLY = frozenset({b"GET", b"HEAD", b"OPTIONS"})


def anonymous_id(client_ip: str, user_agent: str) -> str:
    """JupyterHub's id for a client without a session: a hash of its IP and User-Agent."""
    hasher = hashlib.sha256(client_ip.encode("ascii", "replace"))
    hasher.update(user_agent.encode("utf8", "replace"))
    hasher.update(b"\xff")
    return base64.urlsafe_b64encode(hasher.digest()).decode("ascii")


def xsrf_id(session_id: str, login_token: str | None, anonymous: str) -> str:
    """What the token signs: the Hub session and the login token, so it changes at login."""
    if login_token:
        return f"{session_id or anonymous}:{hashlib.sha256(login_token.encode()).hexdigest()}"
    return f"{session_id}:{anonymous}"


def make_token(signer: Signer, identity: str, now: float) -> str:
    """A fresh XSRF token for C{identity} (an L{xsrf_id})."""
    return signer.sign(XSRF_COOKIE, identity, now)


def token_is_valid(signer: Signer, token: str | None, identity: str, now: float) -> bool:
    """True when C{token} was signed by this hubtwist for exactly C{identity}."""
    return token is not None and signer.verify(XSRF_COOKIE, token, now) == identity


def needs_check(method: bytes, fetch_mode: str | None, fetch_site: str | None) -> bool:
    """
    Does a cookie-authenticated request need a valid XSRF token? Not for page views (GET,
    HEAD, OPTIONS as navigation or from clients that send no C{Sec-Fetch-Mode}), WebSocket
    handshakes, or same-origin C{no-cors} reads such as images — JupyterHub's exemptions.
    """
    mode = fetch_mode or "unspecified"
    read_only = method.upper() in _READ_ONLY
    if mode == "websocket":
        return False
    if mode in ("navigate", "unspecified") and read_only:
        return False
    if mode == "no-cors" and fetch_site == "same-origin" and read_only:
        return False
    return True
