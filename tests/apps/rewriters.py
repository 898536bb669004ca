"""rewrite_response functions used by the proxy tests (jupyter-server-proxy's contract)."""


def shout(response):
    response.body = response.body.upper()
    response.headers["X-Rewritten"] = "yes"


def teapot_for_404(response, path, orig_response):
    if path == "/status/404":
        response.code = 418
        response.reason = "I'm a teapot"
        response.body = b"was " + str(orig_response.code).encode()


def broken(response):
    raise RuntimeError("this rewriter is broken")


def broken_mappath(path):
    """A mappath callable that fails (the proxy must answer 500, not drop the client)."""
    raise RuntimeError("this mappath is broken")
