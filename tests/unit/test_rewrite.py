"""The proxy's pure rewriting rules."""

import pytest

from hubtwist.proxy.http1 import strip_hop_by_hop
from hubtwist.proxy.rewrite import (
    backend_path, forwarded_headers, rewrite_cookie_path, rewrite_location,
)

BACKEND = frozenset({"127.0.0.1:9000", "localhost:9000"})


def test_hop_by_hop_headers_and_those_connection_names_are_dropped():
    headers = [(b"Connection", [b"keep-alive, X-Secret"]), (b"X-Secret", [b"1"]),
               (b"Keep-Alive", [b"5"]), (b"Transfer-Encoding", [b"chunked"]), (b"TE", [b"trailers"]),
               (b"Upgrade", [b"h2c"]), (b"Content-Length", [b"3"]), (b"Accept", [b"*/*"]),
               (b"Cookie", [b"a=1"])]
    assert strip_hop_by_hop(headers) == [(b"Accept", [b"*/*"]), (b"Cookie", [b"a=1"])]


@pytest.mark.parametrize("path, absolute, mappath, expected", [
    (b"/user/a/app/x?q=1", False, None, b"/x?q=1"),
    (b"/user/a/app/", False, None, b"/"),
    (b"/user/a/app/x?q=1", True, None, b"/user/a/app/x?q=1"),
    (b"/user/a/app/", False, {"/": "/lab"}, b"/lab"),
    (b"/user/a/app/x?y", False, {"/": "/lab"}, b"/x?y"),
    (b"/user/a/app/x?y", False, lambda p: "/mapped" + p, b"/mapped/x?y"),
])
def test_backend_path(path, absolute, mappath, expected):
    assert backend_path(path, b"/user/a/app/", absolute, mappath) == expected


def test_forwarded_headers_extend_existing_ones():
    headers = forwarded_headers(
        {b"x-forwarded-for": [b"10.0.0.1"], b"x-forwarded-proto": [b"https"]},
        b"127.0.0.1", b"http", b"hub.example:8000", b"8000", b"/user/a/app/")
    assert headers[b"x-forwarded-for"] == [b"10.0.0.1, 127.0.0.1"]
    assert headers[b"x-forwarded-proto"] == [b"https, http"]
    assert headers[b"x-forwarded-host"] == [b"hub.example:8000"]
    assert headers[b"x-forwarded-port"] == [b"8000"]
    assert headers[b"x-forwarded-prefix"] == [b"/user/a/app"]


@pytest.mark.parametrize("location, absolute, expected", [
    ("http://127.0.0.1:9000/login?next=/x", False, "https://hub.example/user/a/app/login?next=/x"),
    ("http://localhost:9000/", False, "https://hub.example/user/a/app/"),
    ("http://127.0.0.1:9000/user/a/app/x", True, "https://hub.example/user/a/app/x"),
    ("/login", False, "/user/a/app/login"),
    ("/user/a/app/login", True, "/user/a/app/login"),
    ("login", False, "login"),
    ("https://evil.example/", False, "https://evil.example/"),
    ("//evil.example/x", False, "//evil.example/x"),
    ("http://127.0.0.1:9999/", False, "http://127.0.0.1:9999/"),
])
def test_location_rewriting(location, absolute, expected):
    assert rewrite_location(location, prefix="/user/a/app/", absolute_url=absolute,
                            public_origin="https://hub.example", backend_netlocs=BACKEND) == expected


def test_cookie_paths_move_under_the_prefix():
    assert rewrite_cookie_path(b"a=1; Path=/; HttpOnly", b"/user/a/app/") == b"a=1; Path=/user/a/app/; HttpOnly"
    assert rewrite_cookie_path(b"b=2; path=/sub", b"/p/") == b"b=2; Path=/p/sub"
    assert rewrite_cookie_path(b"c=3", b"/p/") == b"c=3"


def test_rewriters_get_the_arguments_they_ask_for():
    from hubtwist.proxy.rewritable import ResponseHeaders, RewritableResponse, apply_rewriters
    from tests.apps.rewriters import shout, teapot_for_404

    response = RewritableResponse(404, "Not Found", ResponseHeaders([("Content-Type", "text/plain")]), b"nope")
    result = apply_rewriters([teapot_for_404, shout], response, {"path": "/status/404", "port": 1})
    assert (result.code, result.reason, result.body) == (418, "I'm a teapot", b"WAS 404")
    assert result.headers["x-rewritten"] == "yes" and result.headers["content-type"] == "text/plain"


def test_a_rewriter_asking_for_an_unknown_argument_is_named():
    from hubtwist.proxy.rewritable import ResponseHeaders, RewritableResponse, apply_rewriters

    def wants_session(response, session):
        pass

    with pytest.raises(TypeError, match="asks for 'session'; available: path, response, orig_response"):
        apply_rewriters([wants_session], RewritableResponse(200, "OK", ResponseHeaders(), b""), {"path": "/"})


def test_header_hygiene_helpers():
    from hubtwist.proxy.http1 import (
        has_line_breaks, is_header_name, only_crlf_line_ends, without_line_breaks,
    )

    assert is_header_name(b"X-Good_1") and not is_header_name(b"Bad Name")
    assert not is_header_name(b"") and not is_header_name(b"X:")
    assert only_crlf_line_ends(b"GET / HTTP/1.1\r\nHost: a") and only_crlf_line_ends(b"")
    for bad in (b"a\nb", b"a\rb", b"a\r\n\nb", b"a\x00b"):
        assert not only_crlf_line_ends(bad), bad
    assert has_line_breaks(b"a\nSet-Cookie: x") and not has_line_breaks(b"plain value")
    assert without_line_breaks(b"a\r\nb\x00c") == b"a  b c"


def test_a_client_cannot_send_jhsingles_user_query_argument_to_the_app():
    # jhsingle-native-proxy's --query-user-info told apps who is calling in this argument;
    # an app migrated from it may trust it, so a client's own never reaches the app.
    for target in (b"/p/x?a=1&CDSDASHBOARDS_JH_USER=%7B%22name%22%3A%22admin%22%7D&b=2",
                   b"/p/x?a=1&CDSDASHBOARDS%5FJH%5FUSER=admin&b=2",
                   b"/p/x?a=1&CDSDASHBOARDS_JH_USER&b=2"):
        assert backend_path(target, b"/p/", False) == b"/x?a=1&b=2"
    assert backend_path(b"/p/x?a=%20&b", b"/p/", False) == b"/x?a=%20&b"  # untouched
