"""
hubtwist.hub.gate.HubGate.admit_lean remembers an admission for the exact values it read
and reuses it: never past the identity cache's verdict, never past the first signature it
relied on, never for other credentials. Time is a task.Clock; no reactor, no Hub (the
identity cache is filled as a Hub answer would fill it).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.web.resource import Resource

from hubtwist.config.loader import load_dict
from hubtwist.hub.gate import HubGate, user_headers
from hubtwist.hub.identity import Identity, cache_key
from hubtwist.hub.oauth import SIGNED_MAX_AGE, Signer
from hubtwist.hub.settings import hub_settings
from hubtwist.hub.xsrf import XSRF_COOKIE, make_token, xsrf_id
from hubtwist.proxy.lean import LeanRequest

ENV = {
    "JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api", "JUPYTERHUB_API_TOKEN": "server-token",
    "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice", "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:servers!user=alice"]',
}
ALICE = Identity("alice", scopes=frozenset({"access:servers!user=alice"}))
SESSION = "session-1"


def make_gate(clock: Clock, forward_user_info: bool = False) -> tuple[HubGate, Signer]:
    settings = hub_settings(ENV, load_dict({}, "test"))
    signer = Signer()
    gate = HubGate(Resource(), settings, client=None, base_url="/user/alice/",
                   clock=clock.seconds, signer=signer, forward_user_info=forward_user_info)
    return gate, signer


def alice_known() -> tuple[Clock, HubGate, Signer]:
    """A gate whose identity cache knows alice's token (as after the Hub's answer)."""
    clock = Clock()
    clock.advance(1_000_000)
    gate, signer = make_gate(clock)
    gate._cache.remember(cache_key("alice-token", SESSION), ALICE)
    return clock, gate, signer


def browser_request(gate: HubGate, signer: Signer, clock: Clock, token: str, signed_at: float,
                    **headers: str) -> LeanRequest:
    """A page view with alice's login cookie (signed at C{signed_at}) and a valid _xsrf."""
    login = signer.sign(gate._login.cookie_name, token, signed_at)
    xsrf = make_token(signer, xsrf_id(SESSION, token, ""), signed_at)
    cookie = (f"{gate._login.cookie_name}={login}; {XSRF_COOKIE}={xsrf}; "
              f"jupyterhub-session-id={SESSION}")
    pairs = [(b"Host", [b"127.0.0.1"]), (b"Cookie", [cookie.encode()]),
             (b"User-Agent", [b"browser"])]
    pairs += [(name.encode(), [value.encode()]) for name, value in headers.items()]
    return LeanRequest(b"GET", b"/user/alice/page", pairs, b"127.0.0.1")


def test_a_remembered_admission_is_reused_and_cleans_the_same_way():
    clock, gate, signer = alice_known()
    first = browser_request(gate, signer, clock, "alice-token", clock.seconds())
    assert gate.admit_lean(first)
    assert len(gate._lean_decisions) == 1
    second = browser_request(gate, signer, clock, "alice-token", clock.seconds())
    assert gate.admit_lean(second)
    assert second.getAllRawHeaders() == first.getAllRawHeaders()  # the cookies hidden alike
    assert second.hubtwist_user == "alice"
    assert second.response_headers == first.response_headers


def test_it_is_not_reused_once_the_identity_cache_expired():
    clock, gate, signer = alice_known()
    signed_at = clock.seconds()
    assert gate.admit_lean(browser_request(gate, signer, clock, "alice-token", signed_at))
    clock.advance(gate._cache.max_age + 1)
    # the ordinary path must ask the Hub again: the lean path declines
    assert not gate.admit_lean(browser_request(gate, signer, clock, "alice-token", signed_at))


def test_it_is_not_reused_past_the_login_cookies_signature():
    clock = Clock()
    clock.advance(1_000_000)
    gate, signer = make_gate(clock)
    signed_at = clock.seconds() - SIGNED_MAX_AGE + 2  # two seconds of validity left
    gate._cache.remember(cache_key("alice-token", SESSION), ALICE)
    assert gate.admit_lean(browser_request(gate, signer, clock, "alice-token", signed_at))
    clock.advance(3)
    gate._cache.remember(cache_key("alice-token", SESSION), ALICE)  # the Hub still says yes
    assert not gate.admit_lean(browser_request(gate, signer, clock, "alice-token", signed_at))


def test_other_credentials_or_headers_are_decided_afresh():
    clock, gate, signer = alice_known()
    now = clock.seconds()
    assert gate.admit_lean(browser_request(gate, signer, clock, "alice-token", now))
    # bob's token is not in the cache: whatever alice's admission was, his is not known
    assert not gate.admit_lean(browser_request(gate, signer, clock, "bob-token", now))
    # a fetch() without the XSRF token: the cookie does not count (decided, not reused)
    assert not gate.admit_lean(browser_request(gate, signer, clock, "alice-token", now,
                                               **{"Sec-Fetch-Mode": "cors"}))
    # a query that could hold a token or an XSRF value is never answered from memory
    remembered = dict(gate._lean_decisions)
    for query in (b"token=alice-token", b"_xsrf=x", b"%74oken=x"):
        request = browser_request(gate, signer, clock, "alice-token", now)
        request.uri = b"/user/alice/page?" + query
        gate.admit_lean(request)
        assert gate._lean_decisions == remembered, query
    request = browser_request(gate, signer, clock, "alice-token", now)
    request.uri = b"/user/alice/page?v=3"  # an ordinary query: alice's admission, reused
    assert gate.admit_lean(request) and gate._lean_decisions == remembered


def test_the_reuse_bound_holds_even_if_the_signers_memo_was_emptied():
    clock = Clock()
    clock.advance(1_000_000)
    gate, signer = make_gate(clock)
    signed_at = clock.seconds() - 100
    request = browser_request(gate, signer, clock, "alice-token", signed_at)
    signer._genuine.clear()  # as at its size limit, between the login's check and now
    cookies = [(name, value) for name, value in
               (part.split("=", 1) for part in
                request.getRawHeaders(b"cookie")[0].decode().split("; "))]
    assert gate._login.signatures_expire(request, cookies) == signed_at + SIGNED_MAX_AGE


def test_a_reuse_cleans_a_header_token_as_deciding_afresh_does():
    """The remembered cleaning (the deciding headers' edits, the user headers) gives the
    request a fresh decision gives: the Hub token gone, the app's own cookie and
    Authorization-less headers kept, who is calling forwarded."""
    clock = Clock()
    clock.advance(1_000_000)
    gate, _signer = make_gate(clock, forward_user_info=True)
    gate._cache.remember(cache_key("alice-token", ""), ALICE)

    def api_call() -> LeanRequest:
        return LeanRequest(b"GET", b"/user/alice/api/x", [
            (b"Host", [b"127.0.0.1"]), (b"Authorization", [b"token alice-token"]),
            (b"Cookie", [b"app-session=42"]), (b"User-Agent", [b"script"])], b"127.0.0.1")

    fresh, reused = api_call(), api_call()
    assert gate.admit_lean(fresh) and len(gate._lean_decisions) == 1
    assert gate.admit_lean(reused) and len(gate._lean_decisions) == 1
    for request in (fresh, reused):
        assert request.getRawHeaders(b"authorization") is None
        assert request.getRawHeaders(b"cookie") == [b"app-session=42"]
        assert dict(request.identity_headers)[b"X-Forwarded-User"] == b"alice"
        assert request.hubtwist_user == "alice"
    assert reused.getAllRawHeaders() == fresh.getAllRawHeaders()
    assert reused.identity_headers == fresh.identity_headers
    assert reused.response_headers == fresh.response_headers


def test_the_user_headers_are_made_per_identity():
    bob = Identity("bob", groups=("staff",), scopes=frozenset({"access:servers!user=alice"}))
    assert user_headers(ALICE) is user_headers(ALICE)  # made once
    assert dict(user_headers(bob))[b"X-Forwarded-User"] == b"bob"
    assert b'"staff"' in dict(user_headers(bob))[b"X-CDSDashboards-JH-User"]
    assert dict(user_headers(ALICE))[b"X-Forwarded-User"] == b"alice"
