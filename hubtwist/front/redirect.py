"""
C{--redirect-port}: a plain-HTTP listener that sends every request to the proxy's HTTPS
port with a 301, as configurable-http-proxy does (C{https://HOST[:PORT]URL}, the port left
out when it is 443, the client's C{Host} without its port; a request without C{Host} gets
a 400 saying why).
"""

from __future__ import annotations

from twisted.web.resource import Resource

__all__ = ["RedirectResource", "https_location"]


def https_location(host: bytes | None, uri: bytes, port: int) -> bytes | None:
    """The C{Location} for a plain-HTTP request to C{uri} with C{Host: host}, sent to
    HTTPS on C{port}; None without a usable C{Host}."""
    if not host:
        return None
    if host.startswith(b"["):  # an IPv6 literal: its colons are not the port's
        name = host[: host.find(b"]") + 1] if b"]" in host else host
    else:
        name = host.split(b":")[0]
    if not name:
        return None
    if port != 443:
        name += b":%d" % port
    return b"https://" + name + uri


class RedirectResource(Resource):
    """The whole redirect site: every method, every path."""

    isLeaf = True

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def render(self, request) -> bytes:
        location = https_location(request.getHeader(b"host"), request.uri, self.port)
        if location is None:
            request.setResponseCode(400)
            return (b"This server is HTTPS-only on port %d, but an HTTP request was made and "
                    b"the host could not be determined from the request." % self.port)
        request.setResponseCode(301)
        request.setHeader(b"location", location)
        request.setHeader(b"content-length", b"0")
        return b""
