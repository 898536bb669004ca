"""
The parsers of what clients send (cookies, signed values, Authorization, query strings,
Origin), fed arbitrary input: each returns its documented result and never raises, so a
malformed request is refused or ignored, never a 500.
"""

from urllib.parse import parse_qsl

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hubtwist.hub import requestinfo as info
from hubtwist.hub.cookies import parse_cookies, without_cookies
from hubtwist.hub.identity import cache_key
from hubtwist.hub.oauth import Signer, safe_next_url
from hubtwist.hub.xsrf import XSRF_COOKIE, anonymous_id, needs_check, token_is_valid, xsrf_id

NOW = 1_800_000_000.0
SIGNER = Signer(b"k" * 32)
# Text as the gates see it: header bytes read as latin-1, or any unicode (query arguments).
header_text = st.binary(max_size=300).map(lambda raw: raw.decode("latin-1"))
any_text = st.one_of(header_text, st.text(max_size=300))
# Close to a signed value, so the parts after the format check are reached too.
near_signed = st.builds(lambda a, b, c: f"{a}.{b}.{c}", any_text, any_text, any_text)


@settings(max_examples=300)
@given(st.one_of(any_text, near_signed), any_text, st.floats(allow_nan=False))
@example("a.b.\u00e9", "name", NOW)  # non-ASCII signature: was a TypeError (a 500)
@example("YQ.99999999999999999999999.00", "name", NOW)
@example("%%%." + "9" * 5000 + ".==", "name", NOW)
def test_verify_returns_a_value_or_none(signed, name, now):
    assert SIGNER.verify(name, signed, now) is None  # nothing forged passes either


@given(any_text, any_text)
def test_verify_reads_back_what_was_signed(name, value):
    assert SIGNER.verify(name, SIGNER.sign(name, value, NOW), NOW + 1) == value


@given(st.lists(st.binary(max_size=200), max_size=4))
@example([b"a=\xff; =x; ;b; c=\"\"; d=\"q\"", b"\x00\x80=\xe9"])
def test_cookie_headers_of_any_bytes_parse(headers):
    pairs = parse_cookies(headers)
    assert all(isinstance(name, str) and name and isinstance(value, str) for name, value in pairs)
    kept = without_cookies(headers, lambda name, value: False)
    assert kept is None or parse_cookies([kept]) == pairs
    assert without_cookies(headers, lambda name, value: True) is None
    dropped = without_cookies(headers, lambda name, value: name.startswith("a"))
    assert all(not name.startswith("a") for name, _ in parse_cookies([dropped] if dropped else []))


@given(st.one_of(st.none(), any_text))
@example("token")
@example("Bearer \u00e9\u2028 x")
def test_authorization_values_give_a_token_or_none(value):
    token = info.token_of_authorization(value)
    assert token is None or (token and token == token.strip())


@given(st.binary(max_size=300), st.sampled_from(["token", "_xsrf", "t\u00e9"]))
@example(b"/x?token=%FF%FE&token=a&%80=1&=&&", "token")
@example(b"/x?tok%65n=a&a=%2F+b", "token")
def test_query_arguments_of_any_bytes(uri, name):
    value = info.query_value(uri, name)
    assert value is None or isinstance(value, str)
    without = info.query_without(uri, name)
    assert info.query_value(without, name) is None
    assert without.partition(b"?")[0] == uri.partition(b"?")[0]
    # Every other argument is kept, byte for byte and in order.
    def named(part: bytes) -> bool:
        pairs = parse_qsl(part.decode("latin-1"), keep_blank_values=True)
        return bool(pairs) and pairs[0][0] == name

    others = [part for part in uri.partition(b"?")[2].split(b"&") if part and not named(part)]
    assert [part for part in without.partition(b"?")[2].split(b"&") if part] == others


@given(st.sampled_from([b"GET", b"POST", b"\xff"]), st.one_of(st.none(), header_text),
       st.one_of(st.none(), header_text), st.one_of(st.none(), header_text), st.booleans())
@example(b"GET", "127.0.0.1:8888", "http://[::1", None, True)
@example(b"POST", "h\u00e9:1", "http://h\u00e9:1", None, False)
def test_origin_checks_of_any_headers(method, host, origin, site, upgrade):
    assert isinstance(info.cross_origin(method, host, origin, site, upgrade=upgrade), bool)


@given(st.binary(max_size=8), st.one_of(st.none(), header_text), st.one_of(st.none(), header_text))
def test_xsrf_exemptions_of_any_headers(method, mode, site):
    assert isinstance(needs_check(method, mode, site), bool)


@given(st.one_of(st.none(), any_text), any_text, st.one_of(st.none(), any_text), header_text,
       header_text)
def test_xsrf_tokens_and_identities_of_any_input(sent, session, login_token, ip, agent):
    identity = xsrf_id(session, login_token, anonymous_id(ip, agent))
    assert token_is_valid(SIGNER, sent, identity, NOW) is False
    assert isinstance(cache_key(login_token or "", session), str)
    assert SIGNER.verify(XSRF_COOKIE, sent, NOW) is None


@given(st.one_of(st.none(), any_text))
def test_next_urls_of_any_text(url):
    assert isinstance(safe_next_url(url, "/base/"), str)
