"""The gates' origin check, what counts as a page view, query rewriting (pure)."""

import pytest
from twisted.web.test.requesthelper import DummyRequest

from hubtwist.hub import requestinfo as info
from hubtwist.hub.requestinfo import cross_origin


@pytest.mark.parametrize("method, host, origin, site, expected", [
    (b"GET", "127.0.0.1:8888", "http://evil:9000", "cross-site", False),  # reads are not checked
    (b"POST", "127.0.0.1:8888", "http://127.0.0.1:8888", "same-origin", False),
    (b"POST", "127.0.0.1:8888", None, None, False),  # non-browser clients send neither
    (b"POST", "127.0.0.1:8888", "http://127.0.0.1:9000", "same-site", True),  # another local port
    (b"POST", "127.0.0.1:8888", "http://127.0.0.1:9000", None, True),
    (b"PUT", "127.0.0.1:8888", None, "cross-site", True),
    (b"POST", "127.0.0.1:8888", "null", None, True),
    (b"DELETE", "LOCALHOST:8888", "http://localhost:8888", None, False),
])
def test_cross_origin_unsafe_requests(method, host, origin, site, expected):
    assert cross_origin(method, host, origin, site) is expected


@pytest.mark.parametrize("host, origin, site, expected", [
    ("127.0.0.1:8888", "http://127.0.0.1:9000", None, True),  # a page of another local app
    ("127.0.0.1:8888", "http://127.0.0.1:9000", "same-site", True),
    ("127.0.0.1:8888", "http://127.0.0.1:8888", "cross-site", True),
    ("127.0.0.1:8888", "null", None, True),
    ("127.0.0.1:8888", "http://[::1", None, True),  # not an origin: refused, not an error
    ("127.0.0.1:8888", "http://127.0.0.1:8888", "same-origin", False),
    ("127.0.0.1:8888", None, None, False),  # no Origin: not a browser (as jupyter_server)
    ("hub.example.org", "https://hub.example.org", None, False),
])
def test_cross_origin_websocket_handshakes(host, origin, site, expected):
    assert cross_origin(b"GET", host, origin, site, upgrade=True) is expected
    assert cross_origin(b"GET", host, origin, site) is False  # a plain GET is not checked


def _request(method=b"GET", **headers):
    request = DummyRequest([b""])
    request.method = method
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name.replace("_", "-").encode(), [value.encode()])
    return request


def test_a_websocket_handshake_is_never_a_navigation():
    assert info.is_navigation(_request())
    assert info.is_navigation(_request(sec_fetch_mode="navigate"))
    assert not info.is_navigation(_request(sec_fetch_mode="cors"))
    assert not info.is_navigation(_request(b"POST"))
    assert not info.is_navigation(_request(upgrade="websocket", connection="Upgrade"))
    assert not info.is_navigation(_request(upgrade="websocket", sec_fetch_mode="navigate"))


@pytest.mark.parametrize("uri, matches, expected", [
    (b"/x?token=t&a=1", None, b"/x?a=1"),
    (b"/x?a=%2F+b&token=t&c", None, b"/x?a=%2F+b&c"),  # the others byte for byte
    (b"/x?token=t", None, b"/x"),
    (b"/x?tok%65n=t&token=u", None, b"/x"),  # as parse_qsl reads the names
    (b"/x", None, b"/x"),
    (b"/x?token=ours&token=apps", lambda value: value == "ours", b"/x?token=apps"),
])
def test_query_without(uri, matches, expected):
    assert info.query_without(uri, "token", matches) == expected


def test_drop_query_arg_keeps_uri_and_args_consistent():
    request = DummyRequest([b""])
    request.uri = b"/app/x?token=t&a=1&a=2"
    request.args = {b"token": [b"t"], b"a": [b"1", b"2"]}
    info.drop_query_arg(request, "token")
    assert request.uri == b"/app/x?a=1&a=2" and request.args == {b"a": [b"1", b"2"]}
