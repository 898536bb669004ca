"""
A port of the behaviours configurable-http-proxy's own test suite checks (its api_spec,
proxy_spec and cli_spec), run against `hubtwist chp` as a real subprocess: CHP's specs
read the proxy's internals, these ask the REST API instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from tests.front.conftest import wait_until
from tests.helpers import APPS

PYTHON_CHP = [sys.executable, "-m", "hubtwist", "chp"]


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- the REST API --------------------------------------------------------------------------


def test_routes_table_includes_the_default_route(chp, echo):
    target = echo()
    proxy = chp("--default-target", target.url)
    table = proxy.api("GET").json()
    assert list(table) == ["/"]
    assert table["/"]["target"] == target.url
    assert _stamp(table["/"]["last_activity"]) <= time.time() + 1


def test_post_get_delete_a_route_with_extra_keys(chp):
    proxy = chp()
    response = proxy.api("POST", "/user/alice/", json={"target": "http://127.0.0.1:9",
                                                       "jupyterhub": True, "user": "alice"})
    assert (response.status_code, response.text) == (201, "")
    one = proxy.api("GET", "/user/alice")
    assert one.status_code == 200
    assert one.json()["jupyterhub"] is True and one.json()["user"] == "alice"
    assert set(proxy.api("GET").json()) == {"/user/alice"}
    assert proxy.api("DELETE", "/user/alice").status_code == 204
    assert proxy.api("DELETE", "/user/alice").status_code == 404  # CHP's code, not its docs
    assert proxy.api("GET", "/user/alice").status_code == 404


def test_post_replaces_the_route_and_its_keys(chp):
    proxy = chp()
    proxy.add("/a", "http://127.0.0.1:9", old=1)
    proxy.add("/a", "http://127.0.0.1:10", new=2)
    route = proxy.route("/a")
    assert route["target"] == "http://127.0.0.1:10" and "old" not in route and route["new"] == 2


def test_uri_escapes_and_the_root_route(chp):
    proxy = chp()
    proxy.add("/foo%40bar/b%20r", "http://127.0.0.1:9")
    proxy.add("", "http://127.0.0.1:10")
    assert set(proxy.api("GET").json()) == {"/foo@bar/b r", "/"}


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400), (b'{"target": 5}', 400), (b"{}", 400), (b"[1]", 400),
])
def test_post_bad_bodies(chp, body, status):
    proxy = chp()
    assert proxy.api("POST", "/x", data=body).status_code == status


def test_token_methods_and_paths(chp):
    proxy = chp()
    assert proxy.api("GET", headers={"Authorization": "token nope"}).status_code == 403
    assert requests.get(proxy.api_url + "/api/routes", timeout=5).status_code == 403
    assert proxy.api("PUT", "/x").status_code == 405
    assert requests.get(proxy.api_url + "/api/other", timeout=5).status_code == 404
    assert proxy.api("GET", headers={"Authorization": "Bearer token  secret"}).status_code == 200


def test_api_without_a_token_is_open(chp):
    proxy = chp(token="")
    assert requests.get(proxy.api_url + "/api/routes", timeout=5).status_code == 200
    assert any("not authenticated" in line for line in proxy.lines)


def test_inactive_since(chp, echo):
    target = echo()
    proxy = chp()
    proxy.add("/old", target.url)
    proxy.add("/new", target.url)
    middle = datetime.now(timezone.utc)
    time.sleep(0.05)
    assert requests.get(proxy.url + "/new/x", timeout=5).status_code == 200
    for name in ("inactive_since", "inactiveSince"):
        since = (middle.isoformat().replace("+00:00", "Z"))
        table = proxy.api("GET", params={name: since}).json()
        assert set(table) == {"/old"}
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert set(proxy.api("GET", params={"inactive_since": future}).json()) == {"/old", "/new"}
    assert proxy.api("GET", params={"inactive_since": "endoftheworld"}).status_code == 400


# -- proxying --------------------------------------------------------------------------


def test_basic_http_request_stamps_last_activity(chp, echo):
    target = echo()
    proxy = chp("--default-target", target.url)
    before = _stamp(proxy.route("/")["last_activity"])
    time.sleep(0.05)
    body = requests.get(proxy.url + "/", timeout=5).json()
    assert body["url"] == "/" and body["name"] == "default"
    assert _stamp(proxy.route("/")["last_activity"]) > before


def test_prefix_matching_is_by_segment_and_longest_wins(chp, echo):
    alice, alicebob, deeper, root = echo("alice"), echo("alicebob"), echo("deeper"), echo("root")
    proxy = chp("--default-target", root.url)
    proxy.add("/user/alice", alice.url)
    proxy.add("/user/alicebob/", alicebob.url)
    proxy.add("/user/alice/api/kernels", deeper.url)

    def name(path):
        return requests.get(proxy.url + path, timeout=5).json()["name"]

    assert name("/user/alice") == "alice"
    assert name("/user/alice/lab?x=1") == "alice"
    assert name("/user/alicebob/tree") == "alicebob"
    assert name("/user/alic") == "root"
    assert name("/user/alice/api/kernels/k1") == "deeper"
    assert name("/user/alice/api/kernelsx") == "alice"


def test_no_route_is_a_404_page(chp, echo):
    proxy = chp()
    response = requests.get(proxy.url + "/nothing/here", timeout=5)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "404:" in response.text


@pytest.mark.parametrize("flags, sent", [
    ((), "/foo/bar/rest/of/it"),
    (("--no-prepend-path",), "/bar/rest/of/it"),
    (("--no-include-prefix",), "/foo/rest/of/it"),
    (("--no-include-prefix", "--no-prepend-path"), "/rest/of/it"),
])
def test_prepend_path_and_include_prefix(chp, echo, flags, sent):
    target = echo()
    proxy = chp(*flags)
    proxy.add("/bar", target.url + "/foo")
    assert requests.get(proxy.url + "/bar/rest/of/it", timeout=5).json()["url"] == sent


def test_prefix_with_query_and_uri_encoding(chp, echo):
    target = echo()
    proxy = chp()
    proxy.add("/bar", target.url + "/foo")
    assert requests.get(proxy.url + "/bar?query=foo", timeout=5).json()["url"] == "/foo/bar?query=foo"
    proxy.add("/b%40r/b%20r", target.url + "/foo")
    got = requests.get(proxy.url + "/b%40r/b%20r/rest/of/it", timeout=5).json()["url"]
    assert got == "/foo/b%40r/b%20r/rest/of/it"
    got = requests.get(proxy.url + "/b@r/b%20r/rest/of/it", timeout=5).json()["url"]
    assert got == "/foo/b@r/b%20r/rest/of/it"


def test_host_routing(chp, echo):
    target = echo("hosted")
    proxy = chp("--host-routing")
    proxy.add("/test.localhost.example", target.url)
    assert proxy.route("/test.localhost.example")["host"] == "test.localhost.example"
    body = requests.get(proxy.url + "/some/path", timeout=5,
                        headers={"Host": f"test.localhost.example:{proxy.port}"}).json()
    assert body["url"] == "/some/path" and body["name"] == "hosted"
    assert requests.get(proxy.url + "/some/path", timeout=5).status_code == 404


def test_no_activity_on_errors(chp, echo):
    proxy = chp()
    dead = f"http://127.0.0.1:{_closed_port()}"
    proxy.add("/missing", dead)
    stamp = proxy.route("/missing")["last_activity"]
    time.sleep(0.05)
    response = requests.get(proxy.url + "/missing/x", timeout=10)
    assert response.status_code == 503 and "503:" in response.text
    target = echo()
    proxy.add("/redirects", target.url)
    redirected = proxy.route("/redirects")["last_activity"]
    time.sleep(0.05)
    assert requests.get(proxy.url + "/redirects/status/302", timeout=5,
                        allow_redirects=False).status_code == 302
    assert proxy.route("/missing")["last_activity"] == stamp
    assert proxy.route("/redirects")["last_activity"] == redirected


def test_custom_error_target(chp, echo):
    pages = echo("errors", content_type="text/plain")
    proxy = chp("--error-target", pages.url + "/hub/error")
    response = requests.get(proxy.url + "/foo/bar", timeout=5)
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/plain"
    assert response.json()["url"] == "/hub/error/404?url=%2Ffoo%2Fbar"
    proxy.add("/down", f"http://127.0.0.1:{_closed_port()}")
    response = requests.get(proxy.url + "/down/x?y=1", timeout=10)
    assert response.status_code == 503
    assert response.json()["url"] == "/hub/error/503?url=%2Fdown%2Fx%3Fy%3D1"


def test_backend_error_is_500_for_an_undecodable_path(chp, echo):
    pages = echo("errors", content_type="text/plain")
    proxy = chp("--error-target", pages.url)
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    connection.request("GET", "/%")  # requests would send /%25
    response = connection.getresponse()
    assert response.status == 500
    assert json.loads(response.read())["url"] == "/500?url=%2F%25"
    connection.close()


def test_custom_error_path(chp, tmp_path):
    (tmp_path / "404.html").write_text("<p>404'D</p>")
    (tmp_path / "error.html").write_text("<p>UNKNOWN</p>")
    proxy = chp("--error-path", str(tmp_path))
    response = requests.get(proxy.url + "/nope", timeout=5)
    assert (response.status_code, response.headers["content-type"]) == (404, "text/html")
    assert "404'D" in response.text
    proxy.add("/down", f"http://127.0.0.1:{_closed_port()}")
    response = requests.get(proxy.url + "/down", timeout=10)
    assert response.status_code == 503 and "UNKNOWN" in response.text


def test_redirects_untouched_by_default_and_rewritten_on_request(chp, echo):
    away = "http://foo.example:12345/whatever"
    plain = echo(redirect_to=away)
    proxy = chp()
    proxy.add("/external/urlpath/", plain.url + "/internal/urlpath/")
    response = requests.get(proxy.url + "/external/urlpath/go-away", timeout=5,
                            allow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (301, away)

    own = echo()
    own.httpd.redirect_to = f"https://127.0.0.1:{own.port}/whatever"
    rewriting = chp("--auto-rewrite", "--protocol-rewrite", "https")
    rewriting.add("/external/urlpath/", own.url + "/go-away/")
    response = requests.get(rewriting.url + "/external/urlpath/", timeout=5,
                            allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"] == f"https://127.0.0.1:{rewriting.port}/whatever"


def test_health_check(chp):
    proxy = chp()
    response = requests.get(proxy.url + "/_chp_healthz", timeout=5)
    assert response.json() == {"status": "OK"}


def test_forwarded_headers_host_and_custom_headers(chp, echo):
    target = echo()
    proxy = chp("--custom-header", "k1:v1", "--custom-header", " k2 : v2 ")
    proxy.add("/", target.url)
    headers = requests.get(proxy.url + "/x", timeout=5,
                           headers={"X-Forwarded-For": "10.0.0.1"}).json()["headers"]
    assert headers["host"] == f"127.0.0.1:{proxy.port}"
    assert headers["x-forwarded-for"] == "10.0.0.1,127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-port"] == str(proxy.port)
    assert headers["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
    assert (headers["k1"], headers["k2"]) == ("v1", "v2")

    bare = chp("--no-x-forward", "--change-origin", "--default-target", target.url)
    headers = requests.get(bare.url + "/x", timeout=5).json()["headers"]
    assert not any(name.startswith("x-forwarded") for name in headers)
    assert headers["host"] == f"127.0.0.1:{target.port}"


def test_post_body_goes_through_and_counts_as_activity(chp, echo):
    target = echo()
    proxy = chp("--default-target", target.url)
    body = requests.post(proxy.url + "/upload", data=b"x" * 100_000, timeout=10).json()
    assert body["method"] == "POST" and len(body["body"]) == 100_000


def test_unix_socket_target(chp, tmp_path):
    socket_path = str(tmp_path / "app.sock")
    app = subprocess.Popen([sys.executable, str(APPS / "wsapp.py"), "--unix-socket", socket_path])
    try:
        wait_until(lambda: os.path.exists(socket_path), 20, "the unix socket app")
        proxy = chp()
        from urllib.parse import quote
        proxy.add("/sock", "http+unix://" + quote(socket_path, safe=""))
        response = requests.get(proxy.url + "/sock/", timeout=10)
        assert (response.status_code, response.text.strip()) == (200, "ok")
    finally:
        app.terminate()
        app.wait(10)


def test_websocket_through_the_proxy_counts_messages_as_activity(chp):
    from websockets.sync.client import connect

    port = _closed_port()
    app = subprocess.Popen([sys.executable, str(APPS / "wsapp.py"), "--port", str(port)])
    try:
        wait_until(lambda: _listening(port), 20, "the WebSocket app")
        proxy = chp("--no-include-prefix")  # the app serves /echo and /info
        proxy.add("/user/alice", f"http://127.0.0.1:{port}")
        stamp = proxy.route("/user/alice")["last_activity"]
        time.sleep(0.05)
        with connect(f"ws://127.0.0.1:{proxy.port}/user/alice/echo", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            with connect(f"ws://127.0.0.1:{proxy.port}/user/alice/info",
                         open_timeout=10) as info:
                seen = json.loads(info.recv(timeout=10))
        assert seen["path"].startswith("/info")
        wait_until(lambda: proxy.route("/user/alice")["last_activity"] != stamp, 5,
                   "the route's activity")
        # A handshake to a target that is down is no activity, and gets the bare status.
        proxy.add("/down", f"http://127.0.0.1:{_closed_port()}")
        down = proxy.route("/down")["last_activity"]
        with pytest.raises(Exception):
            connect(f"ws://127.0.0.1:{proxy.port}/down/echo", open_timeout=10)
        assert proxy.route("/down")["last_activity"] == down
    finally:
        app.terminate()
        app.wait(10)


# -- the command line ------------------------------------------------------------------


def test_pid_file_and_sigterm(chp, tmp_path):
    pid_file = tmp_path / "proxy.pid"
    proxy = chp("--pid-file", str(pid_file))
    assert pid_file.read_text() == str(proxy.process.pid)
    assert proxy.stop() == 2  # as CHP exits on SIGTERM
    assert not pid_file.exists()


@pytest.mark.parametrize("args, words", [
    (["--custom-header", "nocolon"], "colon was expected"),
    (["--ssl-allow-rc4"], "--ssl-allow-rc4 is not supported"),
    (["--error-target", "http://h:1", "--error-path", "/tmp"], "cannot be given together"),
    (["--default-target", "ftp://h:1"], "only http://, https:// and http+unix://"),
    (["--port", "notaport"], "invalid int value"),
    (["--log-level", "chatty"], "--log-level"),
])
def test_cli_mistakes_exit_2_with_a_sentence(args, words):
    done = subprocess.run([*PYTHON_CHP, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def _closed_port() -> int:
    from tests.front.conftest import free_port

    return free_port()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
