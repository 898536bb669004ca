"""
C{hubtwist chp [OPTIONS]}: configurable-http-proxy's command line, served by hubtwist's
engine. JupyterHub's stock C{ConfigurableHTTPProxy} starts it unchanged with
C{c.ConfigurableHTTPProxy.command = ["hubtwist", "chp"]}.

TLS (C{--ssl-*}, C{--api-ssl-*}, C{--client-ssl-*}, C{--redirect-port}, https targets)
is L{hubtwist.front.tls}'s. Options CHP has and hubtwist does not support (storage
backends, RC4) exit 2 with a sentence saying so, rather than running with a
different meaning. Log lines go to stdout, as CHP's do (C{Route added PATH -> TARGET} is
what CHP's own CLI tests wait for).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

__all__ = ["main", "parse_args"]

USAGE_ERROR = 2

_UNSUPPORTED = {
    "ssl_allow_rc4": "--ssl-allow-rc4",
    "storage_backend": "--storage-backend",
}
_WHY = {
    "--ssl-allow-rc4": "RC4 is broken and the OpenSSL hubtwist uses has no RC4 ciphers",
    "--storage-backend": "hubtwist chp keeps its routes in memory (JupyterHub restores them "
                         "when the proxy restarts)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        print(f"hubtwist chp: {message} (see `hubtwist chp --help`)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def _fail(message: str) -> None:
    print(f"hubtwist chp: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _millis(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """CHP's options (same names, same defaults); exits 2 on a mistake."""
    p = _Parser(prog="hubtwist chp", description="A configurable-http-proxy compatible "
                "front proxy (JupyterHub's proxy), on hubtwist's engine.")
    p.add_argument("--ip", default="", help="public-facing IP of the proxy (all by default)")
    p.add_argument("--port", type=int, default=8000, help="public-facing port (8000)")
    p.add_argument("--socket", help="public-facing unix socket path (instead of --ip/--port)")
    p.add_argument("--api-ip", default="localhost", help="IP of the REST API (localhost)")
    p.add_argument("--api-port", type=int, help="port of the REST API (--port + 1)")
    p.add_argument("--api-socket", help="unix socket of the REST API")
    p.add_argument("--default-target", help="target of the / route")
    p.add_argument("--error-target", help="URL asked for error pages: TARGET/CODE?url=URL")
    p.add_argument("--error-path", help="directory of CODE.html / error.html error pages")
    p.add_argument("--redirect-to", type=int,
                   help="(with --redirect-port) the HTTPS port redirected to (--port)")
    p.add_argument("--pid-file", help="write the process id to this file")
    p.add_argument("--no-x-forward", dest="x_forward", action="store_false",
                   help="send no X-Forwarded-* headers")
    p.add_argument("--no-prepend-path", dest="prepend_path", action="store_false",
                   help="do not prepend the target's path to the request's")
    p.add_argument("--no-include-prefix", dest="include_prefix", action="store_false",
                   help="strip the route's prefix from the request's path")
    p.add_argument("--auto-rewrite", action="store_true",
                   help="rewrite the host of redirects to the target to the request's")
    p.add_argument("--change-origin", action="store_true",
                   help="send the target's host as Host")
    p.add_argument("--protocol-rewrite", default="",
                   help="rewrite the scheme of redirects to the target to this one")
    p.add_argument("--custom-header", action="append", default=[],
                   help="NAME:VALUE added to every proxied request (repeatable)")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the certificates of https:// targets")
    p.add_argument("--host-routing", action="store_true", help="route by host, then path")
    p.add_argument("--log-level", default="info",
                   help="debug, info, warn or error (info)")
    p.add_argument("--timeout", type=_millis,
                   help="ms a proxied request may take before it is answered 503")
    p.add_argument("--proxy-timeout", type=_millis,
                   help="ms to wait for the target's response before answering 503")
    p.add_argument("--keep-alive-timeout", type=_millis, default=5000,
                   help="ms an idle client keep-alive connection is kept (5000)")
    p.add_argument("--metrics-ip", default="", help="IP of the metrics server (all by default)")
    p.add_argument("--metrics-port", type=int,
                   help="port of the Prometheus metrics server, GET /metrics (none by default)")
    p.add_argument("--metrics-socket", help="unix socket of the metrics server (instead of "
                   "--metrics-ip/--metrics-port)")
    p.add_argument("--storage-backend", help=argparse.SUPPRESS)
    p.add_argument("--redirect-port", type=int,
                   help="answer plain HTTP on this port with a 301 to the HTTPS port")
    _tls_arguments(p)
    args = p.parse_args(list(argv))
    for attribute, flag in _UNSUPPORTED.items():
        if getattr(args, attribute):
            _fail(f"{flag} is not supported: {_WHY[flag]}.")
    if args.metrics_socket and (args.metrics_port is not None or args.metrics_ip):
        _fail("--metrics-socket cannot be given with --metrics-port or --metrics-ip: pick one.")
    if args.error_target and args.error_path:
        _fail("--error-target and --error-path cannot be given together: pick one.")
    level = args.log_level.lower()
    args.log_level = {"warning": "warn", "critical": "error", "fatal": "error"}.get(level, level)
    if args.log_level not in ("debug", "info", "warn", "error"):
        _fail(f"--log-level {args.log_level!r}: use debug, info, warn or error.")
    headers = []
    for value in args.custom_header:
        name, colon, rest = value.strip().partition(":")
        if not colon or not name.strip():
            _fail(f"A colon was expected in custom header: {value}")
        headers.append((name.strip().encode("latin-1"), rest.strip().encode("latin-1")))
    args.headers = tuple(headers)
    if args.api_port is None:
        args.api_port = args.port + 1
    _tls_setup(args)
    if args.default_target:
        _check_target("--default-target", args.default_target, args.client_tls)
    if args.error_target:
        _check_target("--error-target", args.error_target, args.client_tls)
        if not args.error_target.endswith("/"):
            args.error_target += "/"
    return args


def _tls_arguments(p: argparse.ArgumentParser) -> None:
    """CHP's TLS options (hubtwist.front.tls says what each means)."""
    for prefix, what in (("ssl", "the public (HTTPS) listener"), ("api-ssl", "the REST API")):
        p.add_argument(f"--{prefix}-key", help=f"PEM private key of {what}")
        p.add_argument(f"--{prefix}-cert", help=f"PEM certificate (chain) of {what}")
        p.add_argument(f"--{prefix}-ca", help=f"PEM CA(s) that client certificates of {what} "
                       "are checked against")
        p.add_argument(f"--{prefix}-request-cert", action="store_true",
                       help=f"ask clients of {what} for a certificate")
        p.add_argument(f"--{prefix}-reject-unauthorized", action="store_true",
                       help=f"refuse clients of {what} without a valid certificate (with "
                       f"--{prefix}-request-cert)")
    p.add_argument("--ssl-protocol", help="TLS version: TLS (any), TLSv1_2, TLSv1_3, ...")
    p.add_argument("--ssl-ciphers", help="OpenSSL cipher list (CHP's default otherwise)")
    p.add_argument("--ssl-dhparam", help="PEM Diffie-Hellman parameters")
    p.add_argument("--ssl-allow-rc4", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client-ssl-key", help="PEM key of the certificate shown to https targets")
    p.add_argument("--client-ssl-cert", help="PEM certificate shown to https targets")
    p.add_argument("--client-ssl-ca", help="PEM CA(s) https targets are checked against "
                   "(the system's otherwise)")
    for name in ("client-ssl-request-cert", "client-ssl-reject-unauthorized"):
        # CHP accepts them and passes neither to its targets' connections; nor does hubtwist.
        p.add_argument(f"--{name}", action="store_true", help=argparse.SUPPRESS)


def _tls_setup(args: argparse.Namespace) -> None:
    """The TLS contexts the options ask for (files read now: a mistake exits 2 here):
    C{args.public_tls}, C{args.api_tls} (None for plain HTTP), C{args.client_tls}."""
    from hubtwist.front.tls import ClientTls, TlsSetupError, server_context

    try:
        args.public_tls = args.api_tls = None
        if args.ssl_key or args.ssl_cert:
            args.public_tls = server_context(
                "ssl", args.ssl_key, args.ssl_cert, ca=args.ssl_ca or "",
                request_cert=args.ssl_request_cert,
                reject_unauthorized=args.ssl_reject_unauthorized,
                ciphers=args.ssl_ciphers or "", protocol=args.ssl_protocol or "",
                dhparam=args.ssl_dhparam or "",
                passphrase=os.environ.get("CONFIGPROXY_SSL_KEY_PASSPHRASE", ""))
        if args.api_ssl_key or args.api_ssl_cert:
            # CHP gives the API the public listener's ciphers, protocol and DH parameters.
            args.api_tls = server_context(
                "api-ssl", args.api_ssl_key, args.api_ssl_cert, ca=args.api_ssl_ca or "",
                request_cert=args.api_ssl_request_cert,
                reject_unauthorized=args.api_ssl_reject_unauthorized,
                ciphers=args.ssl_ciphers or "", protocol=args.ssl_protocol or "",
                dhparam=args.ssl_dhparam or "",
                passphrase=os.environ.get("CONFIGPROXY_API_SSL_KEY_PASSPHRASE", ""))
        args.client_tls = ClientTls(key=args.client_ssl_key or "", cert=args.client_ssl_cert or "",
                                    ca=args.client_ssl_ca or "", insecure=args.insecure)
    except TlsSetupError as error:
        _fail(f"{error}.")
    if args.redirect_port is not None:
        if args.public_tls is None:
            _fail("--redirect-port needs --ssl-key and --ssl-cert: it redirects plain HTTP to "
                  "the proxy's HTTPS port.")
        if not 0 < args.redirect_port <= 65535:
            _fail(f"--redirect-port {args.redirect_port} is out of range.")


def https_address(client_tls):
    """The C{https(address, hostname)} maker of https targets' addresses (see
    L{hubtwist.front.routes.parse_target})."""
    from hubtwist.front.tls import TlsAddress

    return lambda address, hostname: TlsAddress(address, hostname, client_tls)


def _check_target(flag: str, value: str, client_tls) -> None:
    from hubtwist.front.routes import TargetError, parse_target

    try:
        parse_target(value, https_address(client_tls))
    except TargetError as error:
        _fail(f"{flag}: {error}.")


def _endpoint(socket: str | None, ip: str, port: int) -> str:
    if socket:
        return "unix:" + socket.replace(":", r"\:")
    if not 0 <= port <= 65535:
        _fail(f"port {port} is out of range.")
    host = "127.0.0.1" if ip == "localhost" else ip
    if ":" in host:  # IPv6
        return f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={host}" if host else f"tcp:{port}"


def _no_access_log(_request) -> None:
    pass


def main(argv: Sequence[str]) -> None:
    """The C{hubtwist chp} command."""
    args = parse_args(argv)
    from twisted.internet import task

    from hubtwist.logs import start_logging

    start_logging(args.log_level, "text", sys.stdout)
    task.react(_serve, [args])


async def _serve(reactor, args) -> None:
    import signal

    from twisted.internet.defer import Deferred, maybeDeferred
    from twisted.internet.endpoints import serverFromString
    from twisted.logger import Logger
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from twisted.web.server import Site

    from hubtwist.front.api import RoutesApi
    from hubtwist.front.lean import ChpForwarder, ChpLeanExchange, ChpLeanRouter
    from hubtwist.front.proxy import Front, FrontOptions, FrontResource
    from hubtwist.front.redirect import RedirectResource
    from hubtwist.front.routes import RouteTable
    from hubtwist.proxy.early import StreamingSite
    from hubtwist.proxy.lean import LeanFactory, lean_description
    from hubtwist.proxy.upstream import UpstreamPool
    from hubtwist.proxy.twisted_private import resolve_names_in_passing_threads
    from hubtwist.proxy.websocket import WebSocketBridge

    resolve_names_in_passing_threads(reactor)  # targets by host name leave no idle thread

    log = Logger(namespace="hubtwist.front")
    token = os.environ.get("CONFIGPROXY_AUTH_TOKEN", "")
    timeouts = [value / 1000 for value in (args.timeout, args.proxy_timeout) if value]
    options = FrontOptions(
        include_prefix=args.include_prefix, prepend_path=args.prepend_path,
        xfwd=args.x_forward, change_origin=args.change_origin, auto_rewrite=args.auto_rewrite,
        protocol_rewrite=args.protocol_rewrite, custom_headers=args.headers,
        error_target=args.error_target or "", error_path=args.error_path or "",
        upstream_timeout=min(timeouts) if timeouts else None,
    )
    table = RouteTable(host_routing=args.host_routing, https=https_address(args.client_tls))
    clock = time.time
    pool = UpstreamPool(reactor)
    front = Front(reactor, table, options, pool, WebSocketBridge(reactor), clock)

    def added(route) -> None:
        log.info("Route added {path} -> {target}", path=route.path, target=route.data["target"])

    if args.default_target:
        added(table.add("/", {"target": args.default_target}, clock()))
    site = StreamingSite(FrontResource(front), timeout=args.keep_alive_timeout / 1000 or None)
    site.noisy = False
    site.displayTracebacks = False
    site.log = _no_access_log  # a line per proxied request costs more than the proxying
    api_site = Site(RoutesApi(table, token, clock, added))
    api_site.noisy = False
    api_site.displayTracebacks = False
    api_site.log = _no_access_log
    public = _endpoint(args.socket, args.ip, args.port)
    api = _endpoint(args.api_socket, args.api_ip, args.api_port)
    public_factory = site
    if args.public_tls is not None:
        # The lean path needs a plain socket (it swaps the connection's protocol): over
        # TLS every request takes twisted.web.
        public_factory = TLSMemoryBIOFactory(args.public_tls, False, site)
    elif lean_description(public):
        # Plain GET/HEAD requests on the lean path, everything else on twisted.web (`site`).
        router = ChpLeanRouter(front)
        public_factory = LeanFactory(site, router, ChpForwarder(front),
                                     admit=router.admit if args.host_routing else None)
        public_factory.exchange = ChpLeanExchange
    api_factory = api_site
    if args.api_tls is not None:
        api_factory = TLSMemoryBIOFactory(args.api_tls, False, api_site)
    listeners = {"public": (public, public_factory), "api": (api, api_factory)}
    redirect_to = args.redirect_to or args.port
    if args.redirect_port is not None and (args.socket or args.port == 80) \
            and not args.redirect_to:
        # CHP's condition: no port to redirect to (a unix socket), or the proxy on 80.
        log.warn("--redirect-port ignored: give --redirect-to the HTTPS port")
    elif args.redirect_port is not None:
        redirect_site = Site(RedirectResource(redirect_to))
        redirect_site.noisy = False
        redirect_site.log = _no_access_log
        listeners["redirect"] = (f"tcp:{args.redirect_port}", redirect_site)
    if args.metrics_socket or args.metrics_port is not None:
        # As CHP: --metrics-ip alone starts nothing. Its own listener: neither the proxy
        # nor the API is served there, and the proxy port routes /metrics like any path.
        from hubtwist.front.metrics import MetricsRoot

        lean = public_factory if isinstance(public_factory, LeanFactory) else None
        metrics_site = Site(MetricsRoot(table.counts, lean))
        metrics_site.noisy = False
        metrics_site.displayTracebacks = False
        metrics_site.log = _no_access_log
        listeners["metrics"] = (_endpoint(args.metrics_socket, args.metrics_ip,
                                          args.metrics_port), metrics_site)
    ports = {}
    for name, (description, factory) in listeners.items():
        try:
            ports[name] = await serverFromString(reactor, description).listen(factory)
        except Exception as error:  # in use, no such address, no permission
            print(f"hubtwist chp: cannot listen on {description}: {error}", file=sys.stderr)
            raise SystemExit(1) from None
    if "metrics" in ports:
        where = args.metrics_socket or (
            f"{args.metrics_ip or '*'}:{ports['metrics'].getHost().port}")
        log.info("Serve metrics at http://{where}/metrics", where=where)
    if not token:
        log.warn("REST API is not authenticated.")
    log.info("Proxying {scheme}://{where} to {default}",
             scheme="https" if args.public_tls else "http",
             where=args.socket or f"{args.ip or '*'}:{args.port}",
             default=args.default_target or "(no default)")
    log.info("Proxy API at {scheme}://{where}/api/routes",
             scheme="https" if args.api_tls else "http",
             where=args.api_socket or f"{args.api_ip}:{args.api_port}")
    if "redirect" in ports:
        # The words CHP's own CLI test waits for.
        log.info("Added HTTP to HTTPS redirection from {source} to {to}",
                 source=ports["redirect"].getHost().port, to=redirect_to)
    if args.pid_file:
        with open(args.pid_file, "w") as stream:
            stream.write(str(os.getpid()))
    stopped: Deferred = Deferred()

    def stop(signum, _frame) -> None:
        # CHP exits 2 on SIGINT/SIGTERM; JupyterHub only checks that it is gone.
        if not stopped.called:
            reactor.callFromThread(stopped.callback, signum)

    def install() -> None:
        # After reactor.run has installed Twisted's own handlers (which would exit 0).
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    reactor.callWhenRunning(install)
    try:
        await stopped
        if isinstance(public_factory, LeanFactory):
            log.info("Stopping; {count} requests were served on the lean path",
                     count=public_factory.served)
    finally:
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass
        for port in ports.values():
            await maybeDeferred(port.stopListening)
        await pool.close()
    raise SystemExit(2)
