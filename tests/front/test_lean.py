"""
C{hubtwist chp} on the lean path (hubtwist/front/lean.py): which requests it takes
(pure logic, no reactor), and the real subprocess serving GET/HEAD there with CHP's
answers (the path sent, X-Forwarded-*, last_activity only on success, 503 and the error
target when the target fails), handing everything else to the ordinary path on the same
keep-alive connection.
"""

from __future__ import annotations

import socket
import time
from datetime import datetime

import requests

from hubtwist.front.lean import ChpLeanRouter
from hubtwist.front.proxy import Front, FrontOptions
from hubtwist.front.routes import RouteTable
from hubtwist.proxy.lean import LeanRequest


def _front(**options) -> Front:
    table = RouteTable(host_routing=options.pop("host_routing", False))
    return Front(None, table, FrontOptions(**options), pool=None, bridge=None, clock=time.time)


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lean_count(proxy) -> int:
    assert proxy.stop() == 2
    line = next(line for line in proxy.lines if "served on the lean path" in line)
    return int(line.split("Stopping; ", 1)[1].split()[0])


# -- which requests the lean path takes (no reactor) -------------------------------------------

def test_route_for_gives_the_routes_target_and_prefix():
    front = _front()
    front.table.add("/user/alice", {"target": "http://127.0.0.1:9001"}, 0)
    front.table.add("/", {"target": "unix+http://%2Ftmp%2Fhub.sock"}, 0)
    router = ChpLeanRouter(front)
    route = router.route_for(b"/user/alice/lab")
    assert route.keeper.address.port == 9001
    assert route.prefix == b"/user/alice/"
    assert route.mappath is None  # CHP's join leaves such a path as it is
    assert router.route_for(b"/user/alice") is route  # made once per route
    assert router.route_for(b"/user/b%40b/x").keeper.address.path == "/tmp/hub.sock"
    front.table.add("/user/alice", {"target": "http://127.0.0.1:9002"}, 0)
    assert router.route_for(b"/user/alice/lab").keeper.address.port == 9002  # replaced


def test_route_for_leaves_everything_unusual_to_the_ordinary_path():
    front = _front()
    front.table.add("/hub", {"target": "http://127.0.0.1:9001"}, 0)
    front.table.add("/tls", {"target": "https://127.0.0.1:9001"}, 0)
    router = ChpLeanRouter(front)
    assert router.route_for(b"/hub/x") is not None
    for path in (b"/nothing", b"/tls/x", b"/hub/%", b"/hub/%ff", b"/hub//x", b"/_chp_healthz"):
        assert router.route_for(path) is None, path


def test_host_routing_takes_the_host_from_admit():
    front = _front(host_routing=True)
    front.table.add("/example.org", {"target": "http://127.0.0.1:9001"}, 0)
    router = ChpLeanRouter(front)
    assert router.route_for(b"/example.org/x") is None  # no Host seen: the ordinary path
    view = LeanRequest(b"GET", b"/x", [(b"Host", [b"example.org:8000"])], b"127.0.0.1")
    assert router.admit(view) is True
    assert router.route_for(b"/x").keeper.address.port == 9001
    assert router.route_for(b"/x") is None  # one Host per request
    router.admit(LeanRequest(b"GET", b"/x", [(b"Host", [b"other.org"])], b"127.0.0.1"))
    assert router.route_for(b"/x") is None


def test_the_path_sent_follows_chps_flags():
    for options, sent in [({}, "/foo/bar/x"), ({"prepend_path": False}, "/bar/x"),
                          ({"include_prefix": False}, "/foo/x"),
                          ({"include_prefix": False, "prepend_path": False}, "/x")]:
        front = _front(**options)
        front.table.add("/bar", {"target": "http://127.0.0.1:9001/foo"}, 0)
        route = ChpLeanRouter(front).route_for(b"/bar/x")
        assert route.mappath("/bar/x") == sent, options


# -- the real command ------------------------------------------------------------------------

def test_gets_and_heads_take_the_lean_path_with_chps_headers(chp, echo):
    target = echo("alice")
    proxy = chp()
    proxy.add("/user/alice", target.url + "/base")
    with requests.Session() as session:
        body = session.get(proxy.url + "/user/alice/lab?x=1", timeout=5,
                           headers={"X-Forwarded-For": "10.0.0.1"}).json()
        assert body["url"] == "/base/user/alice/lab?x=1"
        assert body["method"] == "GET"
        headers = body["headers"]
        assert headers["host"] == f"127.0.0.1:{proxy.port}"
        assert headers["x-forwarded-for"] == "10.0.0.1,127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-port"] == str(proxy.port)
        assert headers["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
        head = session.head(proxy.url + "/user/alice/", timeout=5)
        assert head.status_code == 200 and head.content == b""
        # A POST on the same connection goes to twisted.web, the next GET comes back.
        posted = session.post(proxy.url + "/user/alice/p", data=b"abc", timeout=5).json()
        assert posted["body"] == "abc"
        again = session.get(proxy.url + "/user/alice/again", timeout=5).json()
        assert again["url"] == "/base/user/alice/again"
    assert _lean_count(proxy) == 3  # GET, HEAD, and the GET after the POST


def test_host_routing_on_the_lean_path(chp, echo):
    target = echo("hosted")
    proxy = chp("--host-routing")
    proxy.add("/test.example", target.url)
    with requests.Session() as session:
        for _ in range(2):
            body = session.get(proxy.url + "/some/path", timeout=5,
                               headers={"Host": f"test.example:{proxy.port}"}).json()
            assert body["url"] == "/some/path" and body["name"] == "hosted"
        assert session.get(proxy.url + "/some/path", timeout=5).status_code == 404
    assert _lean_count(proxy) == 2


def test_lean_activity_only_for_success(chp, echo):
    target = echo()
    proxy = chp()
    proxy.add("/ok", target.url)
    proxy.add("/down", f"http://127.0.0.1:{_closed_port()}")
    ok, down = proxy.route("/ok")["last_activity"], proxy.route("/down")["last_activity"]
    time.sleep(0.05)
    assert requests.get(proxy.url + "/ok/status/404", timeout=5).status_code == 404
    redirect = requests.get(proxy.url + "/ok/status/302", timeout=5, allow_redirects=False)
    assert redirect.status_code == 302
    assert proxy.route("/ok")["last_activity"] == ok
    response = requests.get(proxy.url + "/down/x", timeout=10)
    assert response.status_code == 503 and "503:" in response.text
    head = requests.head(proxy.url + "/down/x", timeout=10)
    assert head.status_code == 503 and head.content == b""
    assert proxy.route("/down")["last_activity"] == down
    assert requests.get(proxy.url + "/ok/fine", timeout=5).status_code == 200
    assert _stamp(proxy.route("/ok")["last_activity"]) > _stamp(ok)
    assert _lean_count(proxy) == 5


def test_a_target_that_fails_on_the_lean_path_gets_the_error_target(chp, echo):
    pages = echo("errors", content_type="text/plain")
    proxy = chp("--error-target", pages.url + "/hub/error")
    proxy.add("/down", f"http://127.0.0.1:{_closed_port()}")
    response = requests.get(proxy.url + "/down/x?y=1", timeout=10)
    assert response.status_code == 503
    assert response.headers["content-type"] == "text/plain"
    assert response.json()["url"] == "/hub/error/503?url=%2Fdown%2Fx%3Fy%3D1"
    assert _lean_count(proxy) == 1


def test_redirects_on_the_lean_path(chp, echo):
    target = echo(redirect_to="")
    target.httpd.redirect_to = f"{target.url}/elsewhere"
    plain = chp()
    plain.add("/r", target.url)
    response = requests.get(plain.url + "/r/go-away", timeout=5, allow_redirects=False)
    assert response.headers["location"] == f"{target.url}/elsewhere"  # untouched, as CHP
    rewriting = chp("--auto-rewrite", "--protocol-rewrite", "https")
    rewriting.add("/r", target.url)
    response = requests.get(rewriting.url + "/r/go-away", timeout=5, allow_redirects=False)
    assert response.headers["location"] == f"https://127.0.0.1:{rewriting.port}/elsewhere"
    assert _lean_count(plain) == 1 and _lean_count(rewriting) == 1
