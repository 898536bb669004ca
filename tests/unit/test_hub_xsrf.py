"""JupyterHub's XSRF rules (pure)."""

import pytest

from hubtwist.hub.oauth import Signer
from hubtwist.hub.xsrf import anonymous_id, make_token, needs_check, token_is_valid, xsrf_id

NOW = 1_800_000_000.0


@pytest.mark.parametrize("method, mode, site, expected", [
    (b"GET", "navigate", "none", False),
    (b"GET", None, None, False),          # clients without Sec-Fetch-Mode (curl, old browsers)
    (b"HEAD", "navigate", "same-origin", False),
    (b"GET", "websocket", "same-origin", False),
    (b"GET", "no-cors", "same-origin", False),  # <img> on the same origin
    (b"GET", "no-cors", "cross-site", True),
    (b"GET", "cors", "same-origin", True),      # fetch(): it can read the answer
    (b"POST", "navigate", "same-origin", True),  # a form post
    (b"POST", None, None, True),
    (b"DELETE", "cors", "same-origin", True),
])
def test_which_cookie_requests_need_a_token(method, mode, site, expected):
    assert needs_check(method, mode, site) is expected


def test_the_token_binds_session_and_login():
    signer = Signer()
    identity = xsrf_id("session-1", "login-token", anonymous_id("127.0.0.1", "agent"))
    token = make_token(signer, identity, NOW)
    assert token_is_valid(signer, token, identity, NOW + 60)
    assert not token_is_valid(signer, token, xsrf_id("session-2", "login-token", "anon"), NOW)
    assert not token_is_valid(signer, token, xsrf_id("session-1", "other-login", "anon"), NOW)
    assert not token_is_valid(Signer(), token, identity, NOW)
    assert not token_is_valid(signer, None, identity, NOW)


def test_without_a_session_cookie_the_anonymous_id_stands_in():
    anonymous = anonymous_id("10.0.0.1", "Firefox")
    assert xsrf_id("", "tok", anonymous).startswith(anonymous + ":")
    assert anonymous != anonymous_id("10.0.0.2", "Firefox") != anonymous_id("10.0.0.1", "Chrome")
