"""
hubtwist.proxy.http1, the wire rules every path shares: examples for each rule, and
properties over arbitrary input (hypothesis): the parsers raise nothing but WireError, what
they return is always clean, and what is written parses back to the same thing.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings, strategies as st

from hubtwist.proxy.http1 import (
    HOP_BY_HOP, ChunkedDecoder, WireError, are_header_names, connection_tokens, is_header_name,
    is_idempotent, only_crlf_line_ends, parse_response_head, request_head, response_head,
    response_head_end, strip_hop_by_hop,
)

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.text(TOKEN_CHARS, min_size=1, max_size=20).map(str.encode)
clean_values = st.binary(max_size=40).map(
    lambda value: value.translate(None, b"\r\n\x00").strip(b" \t"))


def assert_clean(head) -> None:
    assert b"\r" not in head.phrase and b"\n" not in head.phrase and b"\x00" not in head.phrase
    for name, value in head.headers:
        assert is_header_name(name)
        assert not set(value) & {0, 10, 13}
        assert name.lower() not in HOP_BY_HOP
        assert name.lower() not in head.connection or name.lower() == b"host"


# -- examples ------------------------------------------------------------------------------


def test_a_response_head_is_parsed_and_hop_by_hop_headers_are_dropped():
    head = parse_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Secret\r\n"
        b"X-Secret: s\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        b"Upgrade: h2c\r\nX-Ok:  padded \t")
    assert (head.code, head.phrase, head.length, head.chunked) == (200, b"OK", 5, False)
    assert head.headers == [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"X-Ok", b"padded")]
    assert head.keep_alive and head.upgrade == b"h2c"


@pytest.mark.parametrize("raw, why", [
    (b"SSH-2.0-OpenSSH", "not HTTP"),
    (b"HTTP/2 200 OK", "not HTTP"),
    (b"HTTP/1.1 2000 OK", "not HTTP"),
    (b"HTTP/1.1 20x OK", "not HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x10", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6", "Content-Length"),
])
def test_heads_that_cannot_be_passed_on(raw, why):
    with pytest.raises(WireError, match=why):
        parse_response_head(raw)


def test_a_repeated_equal_content_length_is_one_length():
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5").length == 5
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5").length == 5


def test_lone_crs_and_nuls_never_start_a_header():
    head = parse_response_head(b"HTTP/1.1 200 O\rK\r\n"
                               b"X-B: b\rLocation: /evil\r\nX-C: c\x00d\r\nBad Name: x\r\n"
                               b" folded: line\r\nno colon")
    assert head.phrase == b"O K"
    assert head.headers == [(b"X-B", b"b Location: /evil"), (b"X-C", b"c d")]


def test_lines_ending_with_a_lone_lf_are_lines():
    # busybox httpd: its own CRLF status line, then a CGI script's LF-only header lines.
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\nContent-Length: 3\n\nabc"
    end, rest = response_head_end(raw)
    assert raw[rest:] == b"abc"
    head = parse_response_head(raw[:end])
    assert (head.code, head.phrase, head.length) == (200, b"OK", 3)
    assert head.headers == [(b"Content-Type", b"text/plain")]
    assert not head.keep_alive  # never another response on that connection
    crlf = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3")
    assert crlf.keep_alive


def test_the_head_ends_at_the_first_empty_line_whatever_its_line_ends():
    assert response_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody") == (21, 25)
    assert response_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n") == (-1, -1)
    assert response_head_end(b"HTTP/1.1 200 OK\nA: b\n") == (-1, -1)
    assert response_head_end(b"HTTP/1.1 200 OK\nA: b\n\nx\r\n\r\n") == (20, 22)
    assert response_head_end(b"HTTP/1.1 200 OK\nA: b\r\n\nx") == (20, 23)
    assert response_head_end(b"HTTP/1.1 200 OK\r\nA: b\n\r\nx") == (21, 24)


def test_transfer_encoding_wins_over_content_length():
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked")
    assert head.chunked and head.length is None and head.body_length(b"GET") is None
    gzip_only = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip")
    assert not gzip_only.chunked and gzip_only.body_length(b"GET") is None  # until close
    assert not parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked").chunked


@pytest.mark.parametrize("method, status, expected", [
    (b"HEAD", 200, 0), (b"GET", 204, 0), (b"GET", 304, 0), (b"GET", 101, 0), (b"GET", 200, 7),
])
def test_body_length(method, status, expected):
    head = parse_response_head(b"HTTP/1.1 %d X\r\nContent-Length: 7" % status)
    assert head.body_length(method) == expected


def test_http_1_0_and_close_are_not_kept_alive():
    assert not parse_response_head(b"HTTP/1.0 200 OK").keep_alive
    assert not parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: Close").keep_alive


def test_connection_cannot_make_host_hop_by_hop():
    kept = strip_hop_by_hop([(b"Host", [b"a"]), (b"Connection", [b"host, x-a"]),
                             (b"X-A", [b"1"]), (b"X-B", [b"2"])])
    assert kept == [(b"Host", [b"a"]), (b"X-B", [b"2"])]


def test_only_idempotent_methods_may_be_retried():
    assert all(is_idempotent(m) for m in (b"GET", b"HEAD", b"OPTIONS", b"TRACE"))
    assert not any(is_idempotent(m) for m in (b"POST", b"PUT", b"PATCH", b"DELETE", b"get"))


def test_connection_tokens():
    assert connection_tokens([b"Keep-Alive, Upgrade", b" close ,,"]) == {
        b"keep-alive", b"upgrade", b"close"}


@pytest.mark.parametrize("body", [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n",
    b"000\r\n\r\n",
    b"A\r\n0123456789\r\n0\r\n\r\n",
])
def test_chunked_bodies_decode_split_anywhere(body):
    expected = ChunkedDecoder()
    whole = b"".join(expected.feed(body + b"NEXT"))
    assert expected.done and expected.rest == b"NEXT"
    for split in range(len(body)):
        decoder = ChunkedDecoder()
        pieces = decoder.feed(body[:split]) + decoder.feed(body[split:])
        assert decoder.done and b"".join(pieces) == whole


@pytest.mark.parametrize("body", [
    b"+5\r\nhello\r\n0\r\n\r\n",  # int(x, 16) would take these three
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5_0\r\n",
    b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
    b"\r\n",
    b"zz\r\n",
    b"1" * 16 + b"\r\n",  # more than 15 hex digits
    b"5" + b" " * 5000,  # a size line that never ends
])
def test_malformed_chunked_bodies(body):
    with pytest.raises(WireError):
        ChunkedDecoder().feed(body)


def test_heads_are_written_in_one_piece():
    assert request_head(b"GET", b"/x", [(b"Host", b"a")], b"Content-Length: 0\r\n") == (
        b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert b"".join(response_head(404, b"Not Found", [(b"X", b"1")])) == (
        b"HTTP/1.1 404 Not Found\r\nX: 1\r\n\r\n")


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
@example(b"HTTP/1.1 200 \x00\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: \xff")
def test_any_bytes_as_a_head_parse_clean_or_raise_wire_error(raw):
    try:
        head = parse_response_head(raw)
    except WireError:
        return
    assert_clean(head)


head_lines = st.lists(st.one_of(
    st.tuples(names, st.binary(max_size=30)).map(lambda pair: pair[0] + b": " + pair[1]),
    st.sampled_from([b"Content-Length: 3", b"Transfer-Encoding: chunked", b"Connection: close",
                     b"Connection: x-a", b"X-A: 1", b"Host: h"]),
    st.binary(max_size=30),
), max_size=12)


@settings(max_examples=400, deadline=None)
@given(st.integers(100, 599), st.binary(max_size=20), head_lines)
def test_plausible_heads_parse_clean_or_raise_wire_error(code, phrase, lines):
    raw = b"\r\n".join([b"HTTP/1.1 %d %s" % (code, phrase), *lines])
    try:
        head = parse_response_head(raw)
    except WireError:
        return
    assert head.code == code
    assert_clean(head)


@settings(max_examples=300, deadline=None)
@given(st.integers(100, 599), clean_values,
       st.lists(st.tuples(names, clean_values), max_size=10).map(
           lambda pairs: [(n, v) for n, v in pairs if n.lower() not in HOP_BY_HOP]))
def test_a_written_response_head_parses_back(code, phrase, headers):
    written = b"".join(response_head(code, phrase, headers))
    head = parse_response_head(written[:-4])
    assert (head.code, head.phrase, head.headers) == (code, phrase, headers)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
@example(b"HTTP/1.1 200 OK\r\n\r\n")
@example(b"\n\n")
def test_the_head_end_is_the_first_empty_line(buffer):
    end, rest = response_head_end(buffer)
    if end < 0:
        assert rest == -1 and b"\n\n" not in buffer and b"\n\r\n" not in buffer
        return
    head = buffer[:end]
    assert b"\n\n" not in head and b"\n\r\n" not in head
    assert buffer[end:rest] in (b"\n\n", b"\r\n\n", b"\n\r\n", b"\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.data())
def test_chunked_round_trip_with_arbitrary_splits(chunks, data):
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\nREST"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=6)))
    decoder = ChunkedDecoder()
    pieces = []
    start = 0
    for cut in [*cuts, len(encoded)]:
        pieces += decoder.feed(encoded[start:cut])
        start = cut
    assert decoder.done and b"".join(pieces) == b"".join(chunks) and decoder.rest == b"REST"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_any_bytes_as_a_chunked_body_decode_or_raise_wire_error(feeds):
    decoder = ChunkedDecoder()
    for data in feeds:
        try:
            decoder.feed(data)
        except WireError:
            return


# -- the fast forms of the rules, against their definitions ---------------------------------

_RFC_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2


@given(st.lists(st.binary(max_size=12) | names, max_size=6))
@example([b"Host", b""])
@example([b"Host", b"Bad Name"])
@example([b"X:Y"])
def test_header_names_are_tokens_checked_one_by_one_or_all_at_once(candidates):
    expected = [_RFC_TOKEN.fullmatch(name) is not None for name in candidates]
    assert [is_header_name(name) for name in candidates] == expected
    assert are_header_names(candidates) == all(expected)


@given(st.binary(max_size=60) | st.lists(st.sampled_from(
    [b"a", b"\r", b"\n", b"\r\n", b"\x00", b" "]), max_size=12).map(b"".join))
@example(b"\r\r\n\n")
@example(b"a\n\rb")
def test_only_crlf_line_ends_is_every_cr_and_lf_in_a_crlf_and_no_nul(head):
    # the definition: take the CRLFs out; no CR, LF or NUL may be left
    expected = not set(head.replace(b"\r\n", b"")) & {0, 10, 13}
    assert only_crlf_line_ends(head) == expected


def test_connection_tokens_are_the_same_whether_split_or_remembered():
    for _ in range(2):  # the second time from memory
        assert connection_tokens([b"Keep-Alive, X-Secret", b" close "]) == {
            b"keep-alive", b"x-secret", b"close"}
        assert connection_tokens(iter([b"upgrade"])) == {b"upgrade"}  # any iterable
        assert connection_tokens([]) == frozenset()
