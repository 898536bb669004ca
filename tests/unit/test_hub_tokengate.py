"""The standalone gate's origin check (pure)."""

import pytest

from hubtwist.hub.tokengate import cross_origin


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
