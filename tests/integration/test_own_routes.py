"""
Where hubtwist's own routes live: at the base URL when no app owns it; under `_hubtwist/`
when one does, so the app keeps `/api/...` and `/proxy/...` (JupyterLab at `/`).
"""

from __future__ import annotations

import json

import pytest_twisted
import treq

from tests.helpers import within
from tests.integration.test_hub_gate import hubtwist as gated  # noqa: F401 (fixture)
from tests.integration.test_proxy import APP, hubtwist  # noqa: F401 (fixture)


async def get(url: str, **kwargs):
    response = await within(treq.get(url, allow_redirects=False, **kwargs), 30)
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_an_app_at_the_base_url_keeps_api_and_proxy_paths(hubtwist):
    ht = await hubtwist(default_server="app", servers={"app": {"command": APP}})
    for path in ("/api/echo", "/api/contents/echo", "/api/kernels/echo?x=1", "/proxy/1234/echo",
                 "/metrics/echo"):
        code, body = await get(ht.url + path)
        assert code == 200 and json.loads(body)["path"] == path, (path, body)
    code, body = await get(f"{ht.url}/api")
    assert code == 200 and body == b"hello from httpapp"
    # The lean path takes them too (they are plain app routes now).
    assert ht.router.route_for(b"/api/contents") is not None
    # hubtwist's own routes under the reserved segment.
    code, body = await get(f"{ht.url}/_hubtwist/api")
    assert code == 200 and json.loads(body)["name"] == "hubtwist"
    code, body = await get(f"{ht.url}/_hubtwist/api/servers")
    assert code == 200 and json.loads(body)["servers"][0]["name"] == "app"
    code, _ = await get(f"{ht.url}/_hubtwist")
    assert code == 301
    code, body = await get(f"{ht.url}/_hubtwist/")
    assert code == 200 and b"<h1>Apps</h1>" in body


@pytest_twisted.ensureDeferred
async def test_proxy_ports_at_the_base_url_only_when_asked_for(hubtwist):
    ht = await hubtwist(default_server="app", proxy_ports=True, servers={"app": {"command": APP}})
    code, body = await get(f"{ht.url}/proxy/{ht.ports[0].getHost().port}/")
    assert code == 403 and b"loop" in body  # hubtwist's /proxy/, refusing its own port


@pytest_twisted.ensureDeferred
async def test_several_apps_keep_the_own_routes_at_the_base_url(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    code, body = await get(f"{ht.url}/api/servers")
    assert code == 200 and json.loads(body)["servers"][0]["name"] == "app"
    code, body = await get(f"{ht.url}/")
    assert code == 200 and b"<h1>Apps</h1>" in body
    code, _ = await get(f"{ht.url}/_hubtwist/api")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_the_token_gate_opens_only_hubtwists_own_version_not_the_apps_api(gated):
    ht = await gated(token="s3cret", default_server="app", servers={"app": {"command": APP}})
    code, body = await get(f"{ht.url}/_hubtwist/api", headers={"Accept": "application/json"})
    assert code == 200 and json.loads(body)["name"] == "hubtwist"
    # The app's /api is the app's: it needs the token like every other path.
    code, _ = await get(f"{ht.url}/api", headers={"Accept": "application/json"})
    assert code == 401
    code, body = await get(f"{ht.url}/api/echo", headers={"Authorization": "token s3cret"})
    assert code == 200 and json.loads(body)["path"] == "/api/echo"
