"""
The composition root: from a L{Config}, build the keepers (supervisors), the router and the
site, listen, autostart, and stop it all again in order.
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Callable
from time import monotonic

import attrs
from twisted.internet.defer import Deferred, DeferredList, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource

from hubtwist import __version__
from hubtwist.config import Config, ConfigError
from hubtwist.config.templates import server_prefix
from hubtwist.counting import OWN_SERVER, Traffic, method_label
from hubtwist.hub import AuthPlan, resolve_auth
from hubtwist.hub.compose import Protection, protect
from hubtwist.hub.listening import server_endpoint
from hubtwist.logs import AccessLog
from hubtwist.proxy.early import StreamingSite
from hubtwist.proxy.forward import Forwarder
from hubtwist.proxy.lean import LeanFactory, lean_description
from hubtwist.proxy.twisted_private import resolve_names_in_passing_threads
from hubtwist.proxy.upstream import UpstreamPool
from hubtwist.proxy.websocket import WebSocketBridge
from hubtwist.router import Router
from hubtwist.supervise import Guardian, shared_guardian, supervisor_for
from hubtwist.web.api import CorsFront

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


# What a reload applies: the servers (and nothing else; see plan_reload).
_LIVE_KEYS = frozenset({"servers"})


@attrs.frozen
class ReloadPlan:
    """What a reload changes (L{plan_reload}): server names, and the top-level keys that
    changed but need a restart (ignored until then). C{config} is what then runs: the new
    servers with every other key as it was."""

    config: Config
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    needs_restart: tuple[str, ...]

    def summary(self) -> dict:
        """The reload's JSON answer."""
        return {"added": list(self.added), "removed": list(self.removed),
                "changed": list(self.changed), "unchanged": list(self.unchanged),
                "needs_restart": list(self.needs_restart)}


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """
    Compare the running configuration with a newly read one. Only C{servers} applies
    live; a change to any other key (listen addresses, base URL, authentication, Hub
    settings, default_server...) is listed in C{needs_restart} and otherwise ignored.
    Raises L{ConfigError} when the new servers cannot run with the old other keys (the
    default server removed).
    """
    needs_restart = tuple(field.name for field in attrs.fields(Config)
                          if field.name not in _LIVE_KEYS
                          and getattr(old, field.name) != getattr(new, field.name))
    if old.default_server is not None and old.default_server not in new.servers:
        raise ConfigError("default_server", f"the server {old.default_server!r} serves the "
                          "base URL and cannot be removed without a restart of hubtwist")
    config = attrs.evolve(old, servers=new.servers)
    before, after = old.servers, new.servers
    return ReloadPlan(
        config,
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in before if name not in after),
        changed=tuple(name for name in after if name in before and before[name] != after[name]),
        unchanged=tuple(name for name in after if name in before and before[name] == after[name]),
        needs_restart=needs_restart)


class Running:
    """A serving hubtwist: its listening ports, keepers and site. L{stop} undoes L{serve}."""

    def __init__(self, config, keepers, ports, forwarder, site, router,
                 protection: Protection | None = None, lean: LeanFactory | None = None,
                 reactor=None, guardian: Guardian | None = None,
                 load: Callable[[], Config] | None = None,
                 traffic: Traffic | None = None) -> None:
        self.config = config
        self.traffic = traffic  # the metrics' counts (None: metrics off)
        self.flush_logs = _nothing  # writes the access lines gathered so far
        self.keepers = keepers
        self.ports = ports
        self.forwarder = forwarder
        self.site = site
        self.router = router
        self.protection = protection
        self.lean = lean
        self.reactor = reactor
        self.guardian = guardian
        # How the configuration is read again (SIGHUP, POST api/reload): the command
        # line's own path from its flags to a Config (hubtwist.cli.configure).
        self.load = load
        self._reloading = DeferredLock()

    async def reload(self) -> dict:
        """
        Read the configuration again (L{load}) and apply it (L{apply}). A configuration
        that does not load is rejected: its error is logged as the command line prints it
        and the running one is kept. Returns the answer of C{POST api/reload}: what was
        added, removed, changed, or C{{"error": ...}}.
        """
        if self.load is None:
            return {"error": "this hubtwist has no configuration file to reload"}
        try:
            new = self.load()
        except ConfigError as error:
            log.error("Configuration not reloaded (the running one is kept): hubtwist: {error}",
                      error=str(error))
            return {"error": str(error)}
        return await self.apply(new)

    async def apply(self, new: Config) -> dict:
        """Apply configuration C{new} live (see L{plan_reload}); one reload at a time."""
        await self._reloading.acquire()
        try:
            return await self._apply(new)
        finally:
            self._reloading.release()

    async def _apply(self, new: Config) -> dict:
        try:
            plan = plan_reload(self.config, new)
            # Every new keeper is built before anything changes: a user that does not
            # exist rejects the whole reload.
            fresh = build_keepers(
                attrs.evolve(plan.config, servers={name: plan.config.servers[name]
                                                   for name in (*plan.added, *plan.changed)}),
                self.reactor, self.guardian)
        except ConfigError as error:
            log.error("Configuration not reloaded (the running one is kept): hubtwist: {error}",
                      error=str(error))
            return {"error": str(error)}
        for key in plan.needs_restart:
            log.warn("Reload: {key} changed; that takes a restart of hubtwist (ignored until "
                     "then)", key=key)
        self.config = plan.config
        router, keepers = self.router, self.keepers
        # Removed and changed servers: their routes go (or wait for the new keeper) and
        # their process groups are stopped; the others, and their connections, stay.
        for name in plan.removed:
            router.remove_server(name)
        # A changed server keeps its old route until the new keeper replaces it: requests
        # meanwhile get the stopping app's 503 ("being stopped"), not a 404.
        old = [keepers.pop(name) for name in (*plan.removed, *plan.changed)]
        await DeferredList([keeper.stop() for keeper in old])
        for name, keeper in fresh.items():
            keepers[name] = keeper
            router.put_server(name, keeper)
            if keeper.config.autostart and not keeper.config.is_external:
                keeper.ensure_running().addErrback(
                    lambda failure, name=name: log.warn("[{server}] autostart failed: {why}",
                                                        server=name, why=failure.getErrorMessage()))
        summary = plan.summary()
        log.info("Reloaded: added {added}, removed {removed}, changed {changed}",
                 added=", ".join(plan.added) or "none", removed=", ".join(plan.removed) or "none",
                 changed=", ".join(plan.changed) or "none")
        return summary

    def _reload_answer(self) -> Deferred:
        """For C{POST api/reload}: (status, answer)."""
        def status(answer: dict):
            return (400 if "error" in answer else 200), answer
        return Deferred.fromCoroutine(self.reload()).addCallback(status)

    def reload_on_sighup(self) -> None:
        """Reload when the process gets SIGHUP (the handler only wakes the reactor up)."""
        def reload() -> None:
            log.info("SIGHUP: reloading the configuration")
            Deferred.fromCoroutine(self.reload()).addErrback(
                lambda failure: log.failure("Reload failed", failure))

        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.reactor.callFromThread(reload))

    async def stop(self) -> None:
        """
        Stop listening, close the bridged WebSockets (1001 Going Away, a few seconds at
        most), stop every app (whole process groups), close pooled connections.

        The WebSockets are closed while the apps still run: stopping an app first would
        end its clients' WebSockets with the app's connection (1011, or no close at all).
        """
        await DeferredList([port.stopListening() for port in self.ports])
        self.router.api.close()  # the log streams of api/servers/NAME/logs
        upgrades = self.forwarder.upgrades
        if isinstance(upgrades, WebSocketBridge):
            await upgrades.close_all()
        if self.protection is not None:
            await self.protection.stop()
        await DeferredList([keeper.stop() for keeper in self.keepers.values()])
        await self.forwarder.upstream.close()
        self.flush_logs()


async def serve(reactor, config: Config, guardian: Guardian | None = None,
                auth: AuthPlan | None = None, load: Callable[[], Config] | None = None) -> Running:
    """
    Listen on every C{config.listen} endpoint and serve the apps; autostart the eager ones.

    C{auth} says how requests are authenticated (the command line resolves it from flags and
    the environment); without it, only the configuration counts: the Hub gate when C{[hub]}
    names an API URL and token, the token gate when C{token} is set, else no gate.
    C{load} reads the configuration again, for reloads (L{Running.reload}).
    """
    guardian = guardian or shared_guardian(reactor)
    keepers = build_keepers(config, reactor, guardian)
    bridge = WebSocketBridge(reactor)
    forwarder = Forwarder(reactor, UpstreamPool(reactor, stall_timeout=config.stall_timeout),
                          upgrades=bridge)
    router = Router(config, keepers, forwarder)
    auth = auth or resolve_auth({}, config)
    router.api.configure(clock=reactor, auth=auth)
    traffic = Traffic() if config.metrics else None
    open_paths = router.open_paths
    if traffic is not None:
        from hubtwist.web.metrics import MetricsPage

        router._pages.metrics = MetricsPage(traffic, keepers)
        bridge.traffic = traffic
        for keeper in keepers.values():
            if hasattr(keeper, "on_ready"):
                keeper.on_ready = traffic.startup
        if not config.metrics_auth:
            open_paths = open_paths | {router.own_root + b"metrics"}
    protection = await protect(
        reactor, router, config, auth,
        activity=lambda: [keeper.last_activity
                          for keeper in [*keepers.values(), *router.port_keepers()]],
        open_paths=open_paths, observe_hub=traffic.hub_call if traffic is not None else None)
    record = request_recorder(config, traffic, reactor)
    # A WebSocket's line is written when it ends; it is not counted as a request (its
    # lifetime would swamp the latency histogram): hubtwist_websockets_* count them.
    bridge.record = record_websocket = request_recorder(config, None, reactor)
    resource = _Timed(protection.resource)
    if config.cors_allow_origins:
        # In front of the gate: a browser's preflight carries no credentials.
        resource = CorsFront(resource, router.own_root + b"api", config.cors_allow_origins)
    site = StreamingSite(resource, max_body_size=config.max_body_size,
                         head_timeout=config.head_timeout)
    site.noisy = False  # no "Starting factory" line per listen
    # twisted.web formats a combined-log line for every request even when nothing keeps
    # it (a measurable part of the proxy's hot path): hubtwist's own replaces it.
    site.log = lambda request: _log_request(record, request)
    # Common requests skip twisted.web on plain sockets (hubtwist.proxy.lean), when the
    # protection allows it (not in Hub mode).
    lean = None
    if protection.lean:
        lean = LeanFactory(site, router, forwarder, admit=protection.lean_admit)
        lean.record = record
        if traffic is not None:
            traffic.lean = lean
    ports = []
    try:
        for description in config.listen:
            factory = lean if lean is not None and lean_description(description) else site
            try:
                port = await server_endpoint(reactor, description).listen(factory)
            except Exception as error:
                raise ListenError(f"cannot listen on {description!r}: {error}") from None
            ports.append(port)
            host = port.getHost()
            if getattr(host, "port", None):
                router.own_ports.add(host.port)
            log.info("Listening on {where} (base URL {base})", where=_describe(host, description),
                     base=config.base_url)
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
    running = Running(config, keepers, ports, forwarder, site, router, protection, lean,
                      reactor, guardian, load, traffic)
    running.flush_logs = lambda: (record.flush(), record_websocket.flush())
    if load is not None:
        router.on_reload(running._reload_answer)
    return running


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


def request_recorder(config: Config, traffic: Traffic | None, reactor=None):
    """
    The C{record} function every finished request is reported to (see
    L{LeanFactory.record}): counted when metrics are on, written to the access log when it
    is on, and, when it is off, still written when hubtwist answered with a status of 300
    or more itself (an unknown path, a 502, a login redirect: a misconfigured prefix must
    leave a trace), at most 20 lines per 10 s and only at log level info or debug. With a
    C{reactor}, access lines are written in batches; C{record.flush()} writes the rest.
    """
    count = traffic.request if traffic is not None else None
    access_log = AccessLog(config.log_format, reactor=reactor) if config.access_log else None
    access = access_log.write if access_log is not None else None
    trace = None
    if access is None and config.log_level in ("debug", "info"):
        trace = AccessLog(config.log_format, limit=20, window=10.0).write

    def record(server: str, method: bytes, target: bytes, code: int, seconds: float,
               bytes_in: int, bytes_out: int, user: str | None, client, own: bool) -> None:
        if count is not None:
            count(server, method, code, seconds, bytes_in, bytes_out)
        if access is not None:
            access(server, method, target, code, seconds, bytes_in, bytes_out, user, client,
                   own)
        elif own and code >= 300 and trace is not None:
            trace(server, method, target, code, seconds, bytes_in, bytes_out, user, client,
                  own)

    record.flush = access_log.flush if access_log is not None else _nothing
    return record


def _nothing() -> None:
    pass


class _Timed(Resource):
    """The site's root: notes when a request started (the head is in), for its duration
    in the metrics and the access log, and renders the real root."""

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request):
        request.hubtwist_started = monotonic()
        return self._inner.render(request)


def _log_request(record, request) -> None:
    """C{Site.log}: a request answered through twisted.web, reported to C{record}."""
    started = getattr(request, "hubtwist_started", None)
    client = getattr(request.getClientAddress(), "host", "-")
    record(getattr(request, "hubtwist_server", OWN_SERVER), method_label(request.method),
           request.uri, request.code, monotonic() - started if started is not None else 0.0,
           request.body.received, request.sentLength, getattr(request, "hubtwist_user", None),
           client, not getattr(request, "from_app", False))


def _describe(host, description: str = "") -> str:
    if hasattr(host, "port"):
        scheme = "https" if description.split(":", 1)[0].lower() in ("ssl", "tls") else "http"
        return f"{scheme}://{host.host}:{host.port}"
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


async def run(reactor, config: Config, auth: AuthPlan | None = None,
              load: Callable[[], Config] | None = None) -> None:
    """Serve until the reactor is stopped (SIGTERM/SIGINT), then stop every app first.
    With C{load}, SIGHUP and C{POST api/reload} read the configuration again."""
    from hubtwist import systemd

    log.info("hubtwist {version} starting (pid {pid})", version=__version__, pid=os.getpid())
    systemd.take_notify_socket()
    resolve_names_in_passing_threads(reactor)  # no idle thread left by a lookup
    running = await serve(reactor, config, auth=auth, load=load)
    if auth is not None and auth.mode == "hub" and running.protection.client is not None:
        await _report_port_if_asked(running, auth)
    if load is not None:
        running.reload_on_sighup()
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

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(shutdown()))
    _stop_once_on_signals(reactor)
    await Deferred()  # serve until the reactor stops


def _stop_once_on_signals(reactor) -> None:
    """
    SIGTERM and SIGINT stop the reactor, once. Twisted's own handlers call C{reactor.stop}
    for every signal, and one arriving while the apps are being stopped (systemd and an
    impatient user; C{timeout} forwarding what it got) logged a C{ReactorNotRunning}
    traceback; now it is a line in the log.
    """
    stopping = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)

    def stop(signum: int) -> None:
        if stopping:
            log.info("Got {signal} while stopping: the stop goes on",
                     signal=signal.Signals(signum).name)
            return
        reactor.stop()

    def handler(signum, _frame) -> None:
        reactor.callFromThread(stop, signum)  # the handler only wakes the reactor up

    def install() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)

    # Once the reactor runs: it installs Twisted's handlers as it starts (task.react may
    # have got this far before that).
    reactor.callWhenRunning(install)
