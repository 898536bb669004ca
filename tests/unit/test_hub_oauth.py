"""Signed values, login states, PKCE, the authorize URL, next-URL checks (pure)."""

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from hubtwist.hub.oauth import (
    LoginStates, Signer, authorize_url, pkce_challenge, pkce_pair, safe_next_url,
)

NOW = 1_800_000_000.0


def test_a_signed_value_round_trips_and_is_cookie_safe():
    signer = Signer()
    signed = signer.sign("jupyterhub-user-alice", "tok;en=with spaces", NOW)
    assert not set(signed) & set(' ;,"\\')
    assert signer.verify("jupyterhub-user-alice", signed, NOW + 60) == "tok;en=with spaces"


@pytest.mark.parametrize("tamper", [
    lambda s: s[:-1] + ("0" if s[-1] != "0" else "1"),          # signature
    lambda s: "QUJD" + s[s.index("."):],                       # value
    lambda s: s.replace(f".{int(NOW)}.", f".{int(NOW) + 1}."),  # time
    lambda s: s + ".x",
    lambda s: "",
])
def test_tampered_values_are_refused(tamper):
    signer = Signer()
    assert signer.verify("name", tamper(signer.sign("name", "value", NOW)), NOW) is None


def test_a_value_signed_for_one_name_is_refused_for_another():
    signer = Signer()
    state_cookie = signer.sign("client-oauth-state", "abc", NOW)
    assert signer.verify("client", state_cookie, NOW) is None


def test_another_process_key_and_old_values_are_refused():
    signed = Signer().sign("name", "value", NOW)
    assert Signer().verify("name", signed, NOW) is None
    signer = Signer(b"k" * 32)
    signed = signer.sign("name", "value", NOW)
    assert signer.verify("name", signed, NOW + 599, max_age=600) == "value"
    assert signer.verify("name", signed, NOW + 601, max_age=600) is None
    assert signer.verify("name", signed, NOW - 5) is None  # from the future


def test_pkce_s256():
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == expected.decode() == pkce_challenge(verifier)
    # RFC 7636 appendix B
    assert pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_login_states_are_single_use_and_expire():
    states = LoginStates(max_age=600)
    state = states.create("/user/alice/x?y=1", "verifier", "cookie", NOW)
    assert states.get(state, NOW + 10).next_url == "/user/alice/x?y=1"
    assert states.pop(state, NOW + 10).code_verifier == "verifier"
    assert states.pop(state, NOW + 10) is None
    old = states.create("/", "v", "c", NOW)
    assert states.get(old, NOW + 601) is None
    assert len(states) == 0


def test_login_states_are_bounded():
    states = LoginStates(max_entries=3)
    ids = [states.create(f"/{i}", "v", "c", NOW) for i in range(5)]
    assert len(states) == 3
    assert states.get(ids[0], NOW) is None and states.get(ids[4], NOW) is not None


def test_authorize_url_carries_every_parameter():
    url = authorize_url("", "/", client_id="jupyterhub-user-alice",
                        redirect_uri="/user/alice/oauth_callback", state="S", code_challenge="C")
    parts = urlsplit(url)
    assert parts.path == "/hub/api/oauth2/authorize" and not parts.netloc
    assert parse_qs(parts.query) == {
        "client_id": ["jupyterhub-user-alice"], "redirect_uri": ["/user/alice/oauth_callback"],
        "response_type": ["code"], "state": ["S"], "code_challenge": ["C"],
        "code_challenge_method": ["S256"]}
    assert authorize_url("https://hub.example/", "/jh/", client_id="c", redirect_uri="r", state="s",
                         code_challenge="c").startswith("https://hub.example/jh/hub/api/oauth2/authorize?")


@pytest.mark.parametrize("url, expected", [
    ("/user/alice/app/?x=1#top", "/user/alice/app/?x=1#top"),
    ("/", "/"),
    ("//evil.example/", "/fallback/"),
    ("/\\evil.example", "/fallback/"),
    ("https://evil.example/", "/fallback/"),
    ("javascript:alert(1)", "/fallback/"),
    ("evil.example", "/fallback/"),
    ("/ok\r\nSet-Cookie: x=1", "/fallback/"),
    ("", "/fallback/"),
    (None, "/fallback/"),
])
def test_next_url_stays_on_this_origin(url, expected):
    assert safe_next_url(url, "/fallback/") == expected
