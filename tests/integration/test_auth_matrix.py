"""
Every authentication case through both paths, the lean one and twisted.web's, with the same
answer: the lean path admits only what the gate would let through at once, cleaned the same
way (hubtwist.hub.gate.HubGate.admit_lean, hubtwist.hub.tokengate.TokenGate.admit_lean).
"""

from __future__ import annotations

import http.client
import json

import pytest_twisted
import treq

from hubtwist.supervise import State
from tests.helpers import in_thread, poll
from tests.integration.test_hub_gate import (  # noqa: F401 (fixtures)
    APP, cookie_header, fake_hub, hub_env, hubtwist, log_in,
)

HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


def exchange(port: int, method: str, path: str, headers: dict, ordinary: bool):
    """One request on a new connection; with C{ordinary}, the connection is first moved to
    twisted.web by a request the lean path never takes (OPTIONS)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        if ordinary:
            connection.request("OPTIONS", "/user/alice/_hubtwist/api")
            connection.getresponse().read()
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        # A cookie's name and attributes (its value is signed with the time: it differs)
        cookies = sorted((value.split("=", 1)[0], value.partition(";")[2])
                         for name, value in response.getheaders()
                         if name.lower() == "set-cookie")
        return {
            "status": response.status,
            "location": _without_nonces(response.getheader("location")),
            "version": response.getheader("x-jupyterhub-version"),
            "set-cookie": cookies,
            "seen by the app": _app_view(body),
        }
    finally:
        connection.close()


def _without_nonces(location: str | None) -> str | None:
    """A login redirect's URL without its per-request state and PKCE challenge."""
    if location is None:
        return None
    path, _, query = location.partition("?")
    kept = [arg for arg in query.split("&") if arg.split("=")[0] not in ("state", "code_challenge")]
    return path + "?" + "&".join(kept)


def _app_view(body: bytes):
    try:
        echo = json.loads(body)
    except ValueError:
        return None
    if "header_list" not in echo:
        return None  # an error page's JSON
    return {"path": echo["path"], "headers": sorted(echo["header_list"])}


def hub_cases(cookies: dict[str, str]) -> dict[str, tuple[str, str, dict]]:
    login = cookie_header(cookies)
    no_xsrf = cookie_header({k: v for k, v in cookies.items() if k != "_xsrf"})
    xsrf = {"X-XSRFToken": cookies["_xsrf"]}
    return {
        "nothing, a page": ("GET", "/user/alice/echo", HTML),
        "nothing, an API call": ("GET", "/user/alice/echo", JSON),
        "alice's token": ("GET", "/user/alice/echo?x=1", {"Authorization": "token alice-token"}),
        "alice's token, HEAD": ("HEAD", "/user/alice/echo", {"Authorization": "token alice-token"}),
        "bob's token (no access)": ("GET", "/user/alice/echo", {"Authorization": "token bob-token",
                                                                **JSON}),
        "a bad token": ("GET", "/user/alice/echo", {"Authorization": "token nope", **JSON}),
        "the cookie, a page": ("GET", "/user/alice/echo", {"Cookie": login + "; app=1", **HTML}),
        "the cookie without _xsrf, a page": ("GET", "/user/alice/echo", {"Cookie": no_xsrf, **HTML}),
        "the cookie, a page from another browser": ("GET", "/user/alice/echo", {
            "Cookie": login, "User-Agent": "another browser", **HTML}),
        "the cookie, fetch() without XSRF": ("GET", "/user/alice/echo", {
            "Cookie": login, "Sec-Fetch-Mode": "cors", **JSON}),
        "the cookie, fetch() with XSRF": ("GET", "/user/alice/echo", {
            "Cookie": login, "Sec-Fetch-Mode": "cors", **xsrf, **JSON}),
        "the cookie, an image": ("GET", "/user/alice/echo", {
            "Cookie": login, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "same-origin"}),
        "a tampered cookie": ("GET", "/user/alice/echo", {
            "Cookie": "jupyterhub-user-alice=x" + login.split("=", 1)[1][1:], **HTML}),
        "alice's token, spoofed identity": ("GET", "/user/alice/echo", {
            "Authorization": "token alice-token", "X_Forwarded_User": "admin",
            "Connection": "X-Forwarded-User, X-Hubtwist-User"}),
        "a token in the URL (not allowed)": ("GET", "/user/alice/echo?token=alice-token", HTML),
        "hubtwist's own API": ("GET", "/user/alice/_hubtwist/api/servers",
                               {"Authorization": "token alice-token"}),
        "the version, no login": ("GET", "/user/alice/_hubtwist/api", {}),
    }


@pytest_twisted.ensureDeferred
async def test_hub_mode_answers_the_same_on_both_paths(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), default_server="app", forward_user_info=True,
                        servers={"app": {"command": APP, "autostart": True}})
    await poll(lambda: ht.keepers["app"].state is State.RUNNING, 20)
    cookies = await log_in(ht, fake_hub)
    # Prime the identity cache for both tokens, as a logged-in browser's first request does.
    for token in ("alice-token", "bob-token", "nope"):
        await (await treq.get(f"{ht.url}/user/alice/echo", headers={
            "Authorization": f"token {token}"})).content()
    port = ht.ports[0].getHost().port
    lean_answered = []
    answers = {}
    for case, (method, path, headers) in hub_cases(cookies).items():
        before = ht.lean.served
        lean = await in_thread(exchange, port, method, path, headers, False)
        lean_answered.append(case) if ht.lean.served > before else None
        ordinary = await in_thread(exchange, port, method, path, headers, True)
        assert lean == ordinary, case
        # again: a lean admission is now answered from the gate's memory of it
        assert await in_thread(exchange, port, method, path, headers, False) == lean, case
        answers[case] = lean
    # A page view without a valid _xsrf cookie gets one, on either path.
    for case in ("the cookie without _xsrf, a page", "the cookie, a page from another browser"):
        assert [name for name, _ in answers[case]["set-cookie"]] == ["_xsrf"], case
    assert answers["the cookie, a page"]["set-cookie"] == []
    assert set(lean_answered) == {
        "alice's token", "alice's token, HEAD", "the cookie, a page",
        "the cookie without _xsrf, a page", "the cookie, a page from another browser",
        "the cookie, fetch() with XSRF", "the cookie, an image",
        "alice's token, spoofed identity"}, lean_answered


@pytest_twisted.ensureDeferred
async def test_the_token_gate_answers_the_same_on_both_paths(hubtwist):
    ht = await hubtwist(token="s3cret", servers={"app": {"command": APP, "autostart": True}})
    await poll(lambda: ht.keepers["app"].state is State.RUNNING, 20)
    port = ht.ports[0].getHost().port
    link = await treq.get(f"{ht.url}/app/echo?token=s3cret", allow_redirects=False)
    login = cookie_header({k: v for k, v in
                           (c.split(";")[0].split("=", 1) for c in
                            link.headers.getRawHeaders("set-cookie"))})
    cases = {
        "nothing": ("GET", "/app/echo", JSON),
        "the token": ("GET", "/app/echo", {"Authorization": "token s3cret"}),
        "a wrong token": ("GET", "/app/echo", {"Authorization": "token nope", **JSON}),
        "the cookie": ("GET", "/app/echo", {"Cookie": login + "; app=1"}),
        "the cookie, cross-site page": ("GET", "/app/echo", {
            "Cookie": login, "Sec-Fetch-Site": "cross-site", **HTML}),
        "the token in the URL": ("GET", "/app/echo?token=s3cret&x=1", JSON),
        "an app's own bearer, with the cookie": ("GET", "/app/echo", {
            "Cookie": login, "Authorization": "Bearer the-apps-own"}),
    }
    for case, (method, path, headers) in cases.items():
        before = ht.lean.served
        lean = await in_thread(exchange, port, method, path, headers, False)
        took = ht.lean.served > before
        ordinary = await in_thread(exchange, port, method, path, headers, True)
        assert lean == ordinary, case
        assert took == (case in {"the token", "the cookie", "the cookie, cross-site page",
                                 "an app's own bearer, with the cookie"}), case
