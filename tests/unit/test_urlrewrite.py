"""The pure URL rewriter of `rewrite_urls` (hubtwist.proxy.urlrewrite): what is rewritten,
what is left alone, and that chunk boundaries never change the result (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hubtwist.proxy.urlrewrite import (
    MAX_TAG, UrlRewriter, body_kind, needs_prefix, rewrite_whole,
)

P = b"/user/ann/app/"


def html(body: bytes) -> bytes:
    return rewrite_whole(body, P, "html")


def css(body: bytes) -> bytes:
    return rewrite_whole(body, P, "css")


@pytest.mark.parametrize("given, expected", [
    (b'<a href="/x">', b'<a href="/user/ann/app/x">'),
    (b"<a href='/x'>", b"<a href='/user/ann/app/x'>"),
    (b"<a href=/x>", b"<a href=/user/ann/app/x>"),
    (b'<A HREF = "/x" class=y>', b'<A HREF = "/user/ann/app/x" class=y>'),
    (b'<img src="/i.png" alt="">', b'<img src="/user/ann/app/i.png" alt="">'),
    (b'<form action="/post" method=post>', b'<form action="/user/ann/app/post" method=post>'),
    (b'<button formaction="/f">', b'<button formaction="/user/ann/app/f">'),
    (b'<a href=" /x">', b'<a href=" /user/ann/app/x">'),
    (b'<base href="/">', b'<base href="/user/ann/app/">'),
    (b'<img srcset="/a.png 1x, /b.png 2x,/c.png 3x">',
     b'<img srcset="/user/ann/app/a.png 1x, /user/ann/app/b.png 2x,/user/ann/app/c.png 3x">'),
    (b'<div style="background:url(/bg.png)">',
     b'<div style="background:url(/user/ann/app/bg.png)">'),
    (b'<div style="background:url(&quot;/bg.png&quot;)">',
     b'<div style="background:url(&quot;/user/ann/app/bg.png&quot;)">'),
    (b'<meta http-equiv="refresh" content="0;url=/next">',
     b'<meta http-equiv="refresh" content="0;url=/user/ann/app/next">'),
    (b"<meta http-equiv=refresh content=5;URL='/next'>",
     b"<meta http-equiv=refresh content=5;URL='/user/ann/app/next'>"),
    (b"<style>a{b:url('/x')}</style>", b"<style>a{b:url('/user/ann/app/x')}</style>"),
    (b'<p title="a > b" data-x=1 href="/x">', b'<p title="a > b" data-x=1 href="/user/ann/app/x">'),
])
def test_root_absolute_urls_in_html_go_under_the_prefix(given, expected):
    assert html(given) == expected


@pytest.mark.parametrize("untouched", [
    b'<a href="//cdn.example/x">',  # protocol-relative
    b'<a href="/\\evil.example/x">',  # what browsers read as protocol-relative
    b'<a href="/user/ann/app/x">',  # already under the prefix
    b'<a href="/user/ann/app">',
    b'<a href="/user/ann/app?q">',
    b'<a href="https://example.org/x">',
    b'<a href="x/y">',
    b'<a href="#top">',
    b'<meta property="og:url" content="/x">',  # not a refresh
    b'<p title="see href=/x">',  # inside another attribute's value
    b'<script>var a = "<a href=/x>"; location = "/y";</script>',
    b"<textarea><a href=/x></textarea>",
    b'<!-- <a href="/x"> -->',
    b'<!doctype html><?xml version="1.0"?>',
    b"a < b and c <3 d",
    b"href=/x in text",
])
def test_what_is_left_alone(untouched):
    assert html(untouched) == untouched


def test_text_after_a_raw_element_is_rewritten_again():
    assert html(b'<script>x</script><a href="/y">') == b'<script>x</script><a href="/user/ann/app/y">'


@pytest.mark.parametrize("given, expected", [
    (b"a{b:url(/x)}", b"a{b:url(/user/ann/app/x)}"),
    (b'a{b:url( "/x" )}', b'a{b:url( "/user/ann/app/x" )}'),
    (b"@import '/y.css';", b"@import '/user/ann/app/y.css';"),
    (b"@import url(/y.css);", b"@import url(/user/ann/app/y.css);"),
    (b"a{b:url(//cdn/x)}", b"a{b:url(//cdn/x)}"),
    (b"a{b:url(/user/ann/app/x)}", b"a{b:url(/user/ann/app/x)}"),
    (b"a{b:url(data:image/png;base64,AAA)}", b"a{b:url(data:image/png;base64,AAA)}"),
    (b"a{b:url(rel.png)}", b"a{b:url(rel.png)}"),
])
def test_css(given, expected):
    assert css(given) == expected


def test_needs_prefix():
    assert needs_prefix(b"/x", P)
    assert needs_prefix(b"/", P)
    assert needs_prefix(b"/user/ann/apples", P)
    assert not needs_prefix(b"/user/ann/app/", P)
    assert not needs_prefix(b"//x", P)
    assert not needs_prefix(b"x", P)
    assert not needs_prefix(b"", P)


def test_body_kind():
    assert body_kind(b"text/html; charset=utf-8") == "html"
    assert body_kind(b"TEXT/CSS") == "css"
    assert body_kind(b"application/xhtml+xml") == "html"
    assert body_kind(b"application/json") is None
    assert body_kind(b"text/javascript") is None
    assert body_kind(None) is None


def test_a_tag_longer_than_the_limit_is_passed_on_and_the_carry_stays_bounded():
    huge = b'<a title="' + b"x" * (MAX_TAG + 10) + b'" href="/x">'
    rewriter = UrlRewriter(P)
    out = []
    for index in range(0, len(huge), 1000):
        out.append(rewriter.feed(huge[index:index + 1000]))
        assert len(rewriter._carry) <= MAX_TAG
    out.append(rewriter.close())
    assert b"".join(out) == html(huge)
    assert b"/user/ann/app/x" not in html(huge)  # too long to rewrite: passed on as is


def test_streaming_sends_text_without_waiting_for_the_end():
    rewriter = UrlRewriter(P)
    assert rewriter.feed(b"<p>hello world</p> and more text") == b"<p>hello world</p> and more text"
    assert rewriter.feed(b'<a href="/x') == b""  # a cut tag waits
    assert rewriter.feed(b'">') == b'<a href="/user/ann/app/x">'


# -- any chunking gives the whole body's result -------------------------------------------

_PIECES = [b"<", b">", b"/", b"//", b"=", b'"', b"'", b" ", b"\n", b"a", b"href", b"HREF",
           b"src", b"srcset", b"style", b"content", b"url(", b")", b"@import ", b",",
           b"<a ", b"<img ", b"<!--", b"-->", b"<!doctype html>", b"<script>", b"</script>",
           b"<style>", b"</style>", b"<textarea>", b"</textarea>", b"<base ", b"&quot;",
           b"0;url=", b"/user/ann/app/", b"/user/ann/app", b"x", b"?", b"#", b"\\", b"1x",
           b"<meta http-equiv=refresh ", b"<", b"</"]

_bodies = st.lists(st.sampled_from(_PIECES) | st.binary(max_size=4), max_size=60).map(b"".join)


def _chunked(body: bytes, cuts: list[int], kind: str) -> bytes:
    rewriter = UrlRewriter(P, kind)
    points = sorted({min(cut, len(body)) for cut in cuts})
    out, last = [], 0
    for point in [*points, len(body)]:
        out.append(rewriter.feed(body[last:point]))
        last = point
    out.append(rewriter.close())
    return b"".join(out)


@settings(max_examples=600, deadline=None)
@given(_bodies, st.lists(st.integers(0, 400), max_size=12), st.sampled_from(["html", "css"]))
@example(b'<a title="x > y" href="/q">', [12], "html")
@example(b"<style>a{b:url(/x)}</style>", [19, 20, 21], "html")
@example(b"url(/url(/x", [5], "css")
def test_any_chunking_gives_the_whole_body_result(body, cuts, kind):
    assert _chunked(body, cuts, kind) == rewrite_whole(body, P, kind)


@settings(max_examples=200, deadline=None)
@given(_bodies, st.sampled_from(["html", "css"]))
def test_byte_by_byte_gives_the_whole_body_result(body, kind):
    assert _chunked(body, list(range(len(body))), kind) == rewrite_whole(body, P, kind)


@settings(max_examples=300, deadline=None)
@given(_bodies)
def test_only_insertions_of_the_prefix(body):
    """Rewriting only ever inserts the prefix: removing what was inserted gives the input."""
    out = html(body)
    assert len(out) >= len(body)
    assert (len(out) - len(body)) % (len(P) - 1) == 0


@settings(max_examples=400, deadline=None)
@given(_bodies)
@example(b'<a class=x href="/y">')
@example(b'<p title="u=/x">')
@example(b"<img srcset='a.png 1x, /b.png 2x'>")
@example(b'<div style="background:url(/x)">')
def test_the_fast_path_skips_only_tags_that_cannot_change(body):
    """The one-match skip of plain text and tags (urlrewrite._PLAIN) gives the result of
    looking at every tag."""
    import re

    from hubtwist.proxy import urlrewrite

    fast = html(body)
    plain, urlrewrite._PLAIN = urlrewrite._PLAIN, re.compile(rb"[^<]*+")
    try:
        assert html(body) == fast
    finally:
        urlrewrite._PLAIN = plain
