"""
The recipes of docs/recipes.md against the real apps from PyPI, through a real hubtwist
(standalone, token-protected, on loopback): for each app its page, one of its static assets,
its own WebSocket exchange, and a `kill -9` of its process group followed by a good request
(hubtwist restarts it). The multi-app recipes run exactly conf/recipes/recipes.toml;
JupyterLab at `/` runs the single-app command line of the docs.
"""

from __future__ import annotations

import json
import re

import pytest
from websockets.sync.client import connect
from websockets.typing import Origin, Subprotocol

from tests.e2e.recipes import (RECIPES, Hubtwist, jupyter_exchange, jupyter_kernel_round_trip,
                               require_apps, static_asset)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# The single-app command line of docs/recipes.md (JupyterLab at `/`), after `hubtwist --port N`.
LAB_AT_ROOT = ["--absolute-url", "--", "jupyter-lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               "--port={port}", "--ServerApp.base_url={prefix}", "--IdentityProvider.token=",
               "--ServerApp.disable_check_xsrf=True", "--ServerApp.allow_remote_access=True"]


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """hubtwist running conf/recipes/recipes.toml, every app under /NAME/, started lazily."""
    require_apps()
    instance = Hubtwist(tmp_path_factory.mktemp("recipes"),
                        ["--config", str(RECIPES / "recipes.toml")])
    try:
        instance.wait_listening("/api")
        yield instance
    finally:
        instance.stop()


def _page(hubtwist: Hubtwist, path: str, *expected: str):
    response = hubtwist.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text[:500],
                                         hubtwist.log_tail())
    for text in expected:
        assert text in response.text, (path, text, response.text[:1500])
    return response


def _asset(hubtwist: Hubtwist, page, pattern: str, *, content_type: str):
    url = static_asset(page.text, pattern)
    response = hubtwist.session.get(url if url.startswith("http") else
                                    hubtwist.url + url if url.startswith("/") else
                                    page.url.rsplit("/", 1)[0] + "/" + url, timeout=30)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    assert content_type in response.headers.get("Content-Type", ""), (url, response.headers)
    assert len(response.content) > 0
    return response


def _lab_checks(hubtwist: Hubtwist, prefix: str, status_url: str) -> None:
    """JupyterLab at C{prefix}: its page and a script of it, its REST API, a kernel
    evaluating 1+1 over its channels socket; then kill -9 and a good request."""
    page = _page(hubtwist, prefix + "lab", "jupyter-config-data")
    config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page.text,
                                  re.S)[1])
    assert config["baseUrl"] == prefix, config["baseUrl"]
    _asset(hubtwist, page, r"/static/lab/.*\.js", content_type="javascript")
    contents = hubtwist.get(prefix + "api/contents")
    assert contents.status_code == 200 and contents.json()["type"] == "directory", contents.text
    headers = {**hubtwist.auth, "Origin": hubtwist.url}
    jupyter_kernel_round_trip(hubtwist.session, hubtwist.url + prefix,
                              hubtwist.ws_url + prefix, headers)
    hubtwist.kill_app_and_check_restart(
        status_url, prefix + "api/status", check=lambda r: "started" in r.json())
    _page(hubtwist, prefix + "lab", "jupyter-config-data")


def test_jupyterlab_under_lab(recipes):
    _lab_checks(recipes, "/lab/", "/api/servers/lab")


def test_jupyterlab_at_the_root_in_single_app_mode(tmp_path):
    require_apps()
    hubtwist = Hubtwist(tmp_path, LAB_AT_ROOT)
    try:
        hubtwist.wait_listening("/_hubtwist/api")
        # hubtwist's own routes moved out of the way: /api/... is JupyterLab's
        version = hubtwist.get("/_hubtwist/api", timeout=10).json()
        assert "version" in version, version
        _lab_checks(hubtwist, "/", "/_hubtwist/api/servers/app")
    finally:
        hubtwist.stop()


def _streamlit_stream(hubtwist: Hubtwist) -> bytes:
    """Open Streamlit's /_stcore/stream as its page does and ask for a run of the script
    (a BackMsg with an empty rerun_script, field 11, hand-encoded protobuf); return the
    ForwardMsgs up to the one that carries the script's text."""
    received = b""
    with connect(hubtwist.ws_url + "/streamlit/_stcore/stream",
                 additional_headers=hubtwist.auth, origin=Origin(hubtwist.url),
                 subprotocols=[Subprotocol("streamlit")], open_timeout=30, close_timeout=5,
                 max_size=None) as ws:
        ws.send(bytes([11 << 3 | 2, 0]))
        while b"recipe-streamlit-ok" not in received:
            message = ws.recv(timeout=30)
            assert isinstance(message, bytes), message
            received += message
    return received


def test_streamlit(recipes):
    page = _page(recipes, "/streamlit/", "<noscript>")
    _asset(recipes, page, r"static/js/.*\.js", content_type="javascript")
    health = recipes.get("/streamlit/_stcore/health")
    assert (health.status_code, health.text) == (200, "ok")
    assert b"recipe-streamlit-ok" in _streamlit_stream(recipes)
    recipes.kill_app_and_check_restart("/api/servers/streamlit", "/streamlit/_stcore/health",
                                       check=lambda r: r.text == "ok")
    assert b"recipe-streamlit-ok" in _streamlit_stream(recipes)


def _bokeh_session(hubtwist: Hubtwist, app_path: str, text: str) -> None:
    """Bokeh's document WebSocket as its page opens it: the session token from the page as
    second subprotocol, the browser's Origin (checked against --allow-websocket-origin =
    {origin_host}), the server's ACK, then PULL-DOC-REQ answered with the document."""
    page = _page(hubtwist, app_path)
    token = re.search(r'"token":\s*"([^"]+)"', page.text)
    assert token, page.text[:2000]
    with connect(f"{hubtwist.ws_url}{app_path}/ws", additional_headers=hubtwist.auth,
                 origin=Origin(hubtwist.url),
                 subprotocols=[Subprotocol("bokeh"), Subprotocol(token[1])],
                 open_timeout=30, close_timeout=5, max_size=None) as ws:
        header = json.loads(ws.recv(timeout=30))
        assert header["msgtype"] == "ACK", header
        ws.recv(timeout=10), ws.recv(timeout=10)  # its metadata and content
        for part in ({"msgid": "recipe-1", "msgtype": "PULL-DOC-REQ"}, {}, {}):
            ws.send(json.dumps(part))
        header = json.loads(ws.recv(timeout=30))
        assert header["msgtype"] == "PULL-DOC-REPLY" and header["reqid"] == "recipe-1", header
        ws.recv(timeout=10)
        assert text in ws.recv(timeout=10)


@pytest.mark.parametrize("name, script, text", [
    ("bokeh", "bokeh_app", "recipe-bokeh-ok"),
    ("panel", "panel_app", "recipe-panel-ok"),
])
def test_bokeh_and_panel(recipes, name, script, text):
    app_path = f"/{name}/{script}"
    page = _page(recipes, app_path)
    _asset(recipes, page, r"static/js/bokeh\.min\.js", content_type="javascript")
    _bokeh_session(recipes, app_path, text)
    recipes.kill_app_and_check_restart(f"/api/servers/{name}", app_path)
    # a new process; {origin_host} still names the public host, so the socket still opens
    _bokeh_session(recipes, app_path, text)


def test_voila(recipes):
    page = _page(recipes, "/voila/", "recipe-voila 42")
    _asset(recipes, page, r"^/voila/voila/static/", content_type="")
    kernel = re.search(r'"kernelId":\s*"([0-9a-f-]+)"', page.text)
    assert kernel, page.text[:2000]
    replies = jupyter_exchange(f"{recipes.ws_url}/voila/api/kernels/{kernel[1]}/channels",
                               {**recipes.auth}, "kernel_info_request", {})
    info = [r for r in replies if r["msg_type"] == "kernel_info_reply"]
    assert info and info[0]["content"]["status"] == "ok", replies
    recipes.kill_app_and_check_restart("/api/servers/voila", "/voila/",
                                       check=lambda r: "recipe-voila 42" in r.text)


def test_fastapi_on_a_unix_socket(recipes):
    page = _page(recipes, "/fastapi/", "recipe-fastapi-ok")
    status = recipes.get("/api/servers/fastapi", timeout=10).json()
    assert status["address"].startswith("unix:"), status
    css = _asset(recipes, page, r"/fastapi/static/recipe\.css$", content_type="text/css")
    assert "recipe-static-ok" in css.text
    with connect(recipes.ws_url + "/fastapi/ws", additional_headers=recipes.auth,
                 origin=Origin(recipes.url), open_timeout=30, close_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"
    recipes.kill_app_and_check_restart("/api/servers/fastapi", "/fastapi/",
                                       check=lambda r: "recipe-fastapi-ok" in r.text)


def test_flask(recipes):
    page = _page(recipes, "/flask/", "recipe-flask-ok")
    css = _asset(recipes, page, r"^/flask/static/recipe\.css$", content_type="text/css")
    assert "recipe-static-ok" in css.text
    recipes.kill_app_and_check_restart("/api/servers/flask", "/flask/",
                                       check=lambda r: "recipe-flask-ok" in r.text)
