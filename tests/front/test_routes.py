"""The route table's pure logic (no reactor): CHP's path rules, lookup, targets, times."""

from __future__ import annotations

import timeit

import pytest

from hubtwist.front.proxy import chp_location, decode_path
from hubtwist.front.routes import (
    RouteTable, TargetError, clean_path, forwarded_for_chp, format_time, parse_target,
    parse_time, upstream_target,
)


@pytest.mark.parametrize("path, cleaned", [
    ("", "/"), ("/", "/"), ("foo", "/foo"), ("/foo/", "/foo"), ("/user/alice/", "/user/alice"),
])
def test_clean_path(path, cleaned):
    assert clean_path(path) == cleaned


def test_longest_prefix_on_segments():
    table = RouteTable()
    for path in ("/", "/hub/", "/user/alice", "/user/alice/api", "/user/alicebob"):
        table.add(path, {"target": "http://127.0.0.1:1" + str(len(path))}, 0)
    assert table.match("/user/alice/lab").path == "/user/alice"
    assert table.match("/user/alice").path == "/user/alice"
    assert table.match("/user/alice/api/x").path == "/user/alice/api"
    assert table.match("/user/alicebo").path == "/"
    assert table.match("/hub").path == "/hub"
    table.remove("/")
    assert table.match("/elsewhere") is None
    assert table.remove("/") is False


def test_lookup_cost_does_not_grow_with_the_number_of_routes():
    def table_of(count: int) -> RouteTable:
        table = RouteTable()
        table.add("/", {"target": "http://127.0.0.1:8081"}, 0)
        table.add("/hub", {"target": "http://127.0.0.1:8081"}, 0)
        for index in range(count):
            table.add(f"/user/user{index}", {"target": f"http://127.0.0.1:{10000 + index}"}, 0)
        return table

    small, large = table_of(10), table_of(10_000)
    assert len(large) == 10_002
    path = "/user/user7/lab/tree/notebooks/a.ipynb"
    assert large.match(path).path == small.match(path).path == "/user/user7"

    def cost(table):
        return min(timeit.repeat(lambda: table.match(path), number=2000, repeat=5))

    # the same few dict lookups either way (timing noise on a shared box allowed for)
    assert cost(large) < 3 * cost(small)


def test_replacing_a_route_forgets_its_keys_and_host_routing_adds_host():
    table = RouteTable(host_routing=True)
    table.add("/example.org/user/a", {"target": "http://h:1", "extra": 1}, 0)
    assert table.get("/example.org/user/a").data["host"] == "example.org"
    table.add("/example.org/user/a", {"target": "http://h:2"}, 5)
    assert table.table() == {"/example.org/user/a": {
        "target": "http://h:2", "host": "example.org", "last_activity": format_time(5)}}


def test_targets():
    tcp = parse_target("http://127.0.0.1:8888/foo")
    assert (tcp.address.port, tcp.path, tcp.host) == (8888, b"/foo", b"127.0.0.1:8888")
    assert parse_target("http://localhost").address.port == 80
    unix = parse_target("http+unix://%2Ftmp%2Fa.sock/x")
    assert (unix.address.kind, unix.address.path, unix.path) == ("unix", "/tmp/a.sock", b"/x")
    for bad in ("https://h:1", "ftp://h", "http://", "http://h:99999"):
        with pytest.raises(TargetError):
            parse_target(bad)


def test_a_bad_target_is_kept_and_reported():
    table = RouteTable()
    route = table.add("/x", {"target": "https://secure:443"}, 0)
    assert route.target is None and "only http://" in route.problem


@pytest.mark.parametrize("uri, route_path, target, include, prepend, sent", [
    (b"/bar/rest", "/bar", "http://h:1/foo", True, True, b"/foo/bar/rest"),
    (b"/bar/rest", "/bar", "http://h:1/foo", True, False, b"/bar/rest"),
    (b"/bar/rest", "/bar", "http://h:1/foo", False, True, b"/foo/rest"),
    (b"/bar/rest", "/bar", "http://h:1/foo", False, False, b"/rest"),
    (b"/bar?q=//x", "/bar", "http://h:1/foo/", True, True, b"/foo/bar?q=//x"),
    (b"/bar", "/bar", "http://h:1", False, True, b"/"),
    (b"/bar", "/bar", "http://h:1", False, False, b"/"),
])
def test_upstream_target(uri, route_path, target, include, prepend, sent):
    table = RouteTable()
    route = table.add(route_path, {"target": target}, 0)
    assert upstream_target(uri, route, route.target, include_prefix=include,
                           prepend_path=prepend) == sent


def test_forwarded_headers():
    pairs = dict(forwarded_for_chp({b"x-forwarded-for": b"10.0.0.1"}, b"127.0.0.1", b"http",
                                   b"hub.example:8000"))
    assert pairs == {b"X-Forwarded-For": b"10.0.0.1,127.0.0.1", b"X-Forwarded-Port": b"8000",
                     b"X-Forwarded-Proto": b"http", b"X-Forwarded-Host": b"hub.example:8000"}
    pairs = dict(forwarded_for_chp({b"x-forwarded-host": b"outer"}, b"::1", b"wss", b"h"))
    assert pairs[b"X-Forwarded-Port"] == b"443" and b"X-Forwarded-Host" not in pairs


def test_times_round_trip_and_bad_ones_fail():
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert parse_time("1970-01-01T00:00:01.500Z") == 1.5
    assert parse_time("1970-01-02") == 86400
    with pytest.raises(ValueError):
        parse_time("endoftheworld")


def test_decode_path_is_strict_like_decode_uri_component():
    assert decode_path(b"/b%40r/b%20r") == "/b@r/b r"
    for bad in (b"/%", b"/%zz", b"/%ff"):
        with pytest.raises((ValueError, UnicodeDecodeError)):
            decode_path(bad)


def test_location_rewriting_only_for_the_target_itself():
    target = parse_target("http://127.0.0.1:9000/internal/")
    own = b"https://127.0.0.1:9000/whatever"
    assert chp_location(own, 301, target, b"proxy:8000", auto_rewrite=True,
                        protocol="https") == b"https://proxy:8000/whatever"
    assert chp_location(b"http://elsewhere/x", 301, target, b"proxy:8000", auto_rewrite=True,
                        protocol="https") == b"http://elsewhere/x"
    assert chp_location(own, 200, target, b"p", auto_rewrite=True, protocol="") == own
    assert chp_location(own, 302, target, b"p", auto_rewrite=False, protocol="") == own
