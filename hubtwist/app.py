"""
The composition root: from a L{Config}, build the keepers (supervisors), the router and the
site, listen, autostart, and stop it all again in order.
"""

from __future__ import annotations

import gc
import os

from twisted.internet.defer import DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from hubtwist import __version__
from hubtwist.config import Config, ConfigError
from hubtwist.config.templates import server_prefix
from hubtwist.hub import AuthPlan, resolve_auth
from hubtwist.hub.compose import Protection, protect
from hubtwist.proxy.early import StreamingSite
from hubtwist.proxy.forward import Forwarder
from hubtwist.proxy.lean import LeanFactory, lean_description
from hubtwist.proxy.upstream import UpstreamPool
from hubtwist.proxy.websocket import WebSocketBridge
from hubtwist.router import Router
from hubtwist.supervise import Guardian, shared_guardian, supervisor_for

log = Logger(namespace="hubtwist")


def build_keepers(config: Config, reactor, guardian: Guardian) -> dict:
    """One keeper per configured server; problems that need the running system (users) are
    reported as L{ConfigError}s naming the key."""
    keepers = {}
    for name, server in config.servers.items():
        try:
            keepers[name] = supervisor_for(
                name, server, reactor=reactor, guardian=guardian, base_url=config.base_url,
                prefix=server_prefix(config.base_url, name, config.default_server))
        except (PermissionError, KeyError) as error:
            message = error.args[0] if error.args else str(error)
            raise ConfigError(f"servers.{name}.user", message) from None
    return keepers


class Running:
    """A serving hubtwist: its listening ports, keepers and site. L{stop} undoes L{serve}."""

    def __init__(self, config, keepers, ports, forwarder, site, router,
                 protection: Protection | None = None, lean: LeanFactory | None = None) -> None:
        self.config = config
        self.keepers = keepers
        self.ports = ports
        self.forwarder = forwarder
        self.site = site
        self.router = router
        self.protection = protection
        self.lean = lean

    async def stop(self) -> None:
        """
        Stop listening, close the bridged WebSockets (1001 Going Away, a few seconds at
        most), stop every app (whole process groups), close pooled connections.

        The WebSockets are closed while the apps still run: stopping an app first would
        end its clients' WebSockets with the app's connection (1011, or no close at all).
        """
        await DeferredList([port.stopListening() for port in self.ports])
        upgrades = self.forwarder.upgrades
        if isinstance(upgrades, WebSocketBridge):
            await upgrades.close_all()
        if self.protection is not None:
            await self.protection.stop()
        await DeferredList([keeper.stop() for keeper in self.keepers.values()])
        await self.forwarder.upstream.close()


async def serve(reactor, config: Config, guardian: Guardian | None = None,
                auth: AuthPlan | None = None) -> Running:
    """
    Listen on every C{config.listen} endpoint and serve the apps; autostart the eager ones.

    C{auth} says how requests are authenticated (the command line resolves it from flags and
    the environment); without it, only the configuration counts: the Hub gate when C{[hub]}
    names an API URL and token, the token gate when C{token} is set, else no gate.
    """
    guardian = guardian or shared_guardian(reactor)
    keepers = build_keepers(config, reactor, guardian)
    forwarder = Forwarder(reactor, UpstreamPool(reactor, stall_timeout=config.stall_timeout),
                          upgrades=WebSocketBridge(reactor))
    router = Router(config, keepers, forwarder)
    protection = await protect(
        reactor, router, config, auth or resolve_auth({}, config),
        activity=lambda: [keeper.last_activity
                          for keeper in [*keepers.values(), *router.port_keepers()]],
        open_paths=router.open_paths)
    site = StreamingSite(protection.resource, max_body_size=config.max_body_size,
                         head_timeout=config.head_timeout)
    site.noisy = False  # no "Starting factory" line per listen
    # twisted.web formats a combined-log line for every request even when nothing keeps
    # it (a measurable part of the proxy's hot path); hubtwist writes no access log.
    site.log = _no_access_log
    # Common requests skip twisted.web on plain sockets (hubtwist.proxy.lean), when the
    # protection allows it (not in Hub mode).
    lean = None
    if protection.lean:
        lean = LeanFactory(site, router, forwarder, admit=protection.lean_admit)
    ports = []
    try:
        for description in config.listen:
            factory = lean if lean is not None and lean_description(description) else site
            try:
                port = await serverFromString(reactor, description).listen(factory)
            except Exception as error:
                raise ListenError(f"cannot listen on {description!r}: {error}") from None
            ports.append(port)
            host = port.getHost()
            if getattr(host, "port", None):
                router.own_ports.add(host.port)
            log.info("Listening on {where} (base URL {base})", where=_describe(host), base=config.base_url)
    except ListenError:
        await DeferredList([port.stopListening() for port in ports])
        await protection.stop()
        raise
    protection.start(reactor)
    for name, keeper in keepers.items():
        if keeper.config.autostart and not keeper.config.is_external:
            keeper.ensure_running().addErrback(
                lambda failure, name=name: log.warn("[{server}] autostart failed: {why}",
                                                    server=name, why=failure.getErrorMessage()))
    return Running(config, keepers, ports, forwarder, site, router, protection, lean)


FULL_COLLECTION_EVERY = 60.0


def _tune_garbage_collector(reactor) -> LoopingCall:
    """
    Everything built so far lives as long as the process: freeze it out of the collector's
    scans, and collect the youngest generation less often. Measured on the 1 KB proxy
    benchmark: p99 latency 45 ms -> 17 ms and +7 % requests/s; idle memory unchanged.

    With those thresholds a full collection came about once in 25 minutes under load, and
    what only a full collection frees (connections, request bodies, splices and WebSocket
    sessions that end in reference cycles) piled up meanwhile: the soak test (bench/soak)
    saw RSS grow 4 MiB a minute. So a full collection also runs every
    C{FULL_COLLECTION_EVERY} seconds: a few milliseconds, as the frozen objects are not
    scanned; the same soak then stays flat.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    collecting = LoopingCall(gc.collect)
    collecting.clock = reactor
    collecting.start(FULL_COLLECTION_EVERY, now=False)
    return collecting


def _no_access_log(request) -> None:
    pass


def _describe(host) -> str:
    if hasattr(host, "port"):
        return f"http://{host.host}:{host.port}"
    return f"unix:{host.name.decode() if isinstance(host.name, bytes) else host.name}"


def _announce_token(running: Running, token: str) -> None:
    """Print the generated token once, on stdout (never to the log), as a URL to open."""
    host = running.ports[0].getHost() if running.ports else None
    where = "http://<this host>"
    if getattr(host, "port", None):
        shown = "127.0.0.1" if host.host in ("0.0.0.0", "::", "") else host.host
        where = f"http://{shown}:{host.port}"
    print(f"hubtwist: open {where}{running.config.base_url}?token={token}\n"
          "hubtwist: (a generated token; choose one with --token or HUBTWIST_TOKEN, or use "
          "--no-auth on loopback)", flush=True)


class ListenError(Exception):
    """A listen endpoint could not be opened (port in use, bad description, permissions)."""


async def _report_port_if_asked(running: Running, auth: AuthPlan) -> None:
    """Under batchspawner (C{JUPYTERHUB_SERVICE_URL} with port 0), tell the Hub the port
    hubtwist got; if that fails the spawn cannot succeed, so stop and say why."""
    from hubtwist.hub.batchspawner import PortNotReported, port_left_to_server, report_port

    if not port_left_to_server(auth.hub.service_url):
        return
    try:
        await report_port(running.protection.client, [port.getHost() for port in running.ports])
    except PortNotReported as error:
        await running.stop()
        raise ListenError(str(error)) from None


async def run(reactor, config: Config, auth: AuthPlan | None = None) -> None:
    """Serve until the reactor is stopped (SIGTERM/SIGINT), then stop every app first."""
    from hubtwist import systemd

    log.info("hubtwist {version} starting (pid {pid})", version=__version__, pid=os.getpid())
    systemd.take_notify_socket()
    running = await serve(reactor, config, auth=auth)
    if auth is not None and auth.mode == "hub" and running.protection.client is not None:
        await _report_port_if_asked(running, auth)
    collecting = _tune_garbage_collector(reactor)
    if auth is not None and auth.token_generated:
        _announce_token(running, auth.token)
    systemd.ready(f"serving {len(running.keepers)} app(s) on {', '.join(config.listen)}")

    async def shutdown() -> None:
        upgrades = running.forwarder.upgrades
        websockets = len(upgrades.sessions) if isinstance(upgrades, WebSocketBridge) else 0
        log.info("Stopping: closing {websockets} WebSocket(s), stopping {count} app(s)",
                 websockets=websockets, count=len(running.keepers))
        systemd.stopping()
        collecting.stop()
        await running.stop()
        shared_guardian(reactor).close()
        log.info("Stopped.")

    from twisted.internet.defer import Deferred

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(shutdown()))
    await Deferred()  # serve until the reactor stops
