"""
The composition root: from a L{Config}, build the keepers (supervisors), the router and the
site, listen, autostart, and stop it all again in order.
"""

from __future__ import annotations

import os

from twisted.internet.defer import DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from hubtwist import __version__
from hubtwist.config import Config, ConfigError
from hubtwist.proxy.early import StreamingSite
from hubtwist.proxy.forward import Forwarder
from hubtwist.router import Router
from hubtwist.supervise import Guardian, shared_guardian, supervisor_for

log = Logger(namespace="hubtwist")


def build_keepers(config: Config, reactor, guardian: Guardian) -> dict:
    """One keeper per configured server; problems that need the running system (users) are
    reported as L{ConfigError}s naming the key."""
    keepers = {}
    for name, server in config.servers.items():
        try:
            keepers[name] = supervisor_for(name, server, reactor=reactor, guardian=guardian,
                                           base_url=config.base_url)
        except (PermissionError, KeyError) as error:
            message = error.args[0] if error.args else str(error)
            raise ConfigError(f"servers.{name}.user", message) from None
    return keepers


class Running:
    """A serving hubtwist: its listening ports, keepers and site. L{stop} undoes L{serve}."""

    def __init__(self, config, keepers, ports, forwarder, site, router) -> None:
        self.config = config
        self.keepers = keepers
        self.ports = ports
        self.forwarder = forwarder
        self.site = site
        self.router = router

    async def stop(self) -> None:
        """Stop listening, stop every app (whole process groups), close pooled connections."""
        await DeferredList([port.stopListening() for port in self.ports])
        await DeferredList([keeper.stop() for keeper in self.keepers.values()])
        await self.forwarder.upstream.close()


async def serve(reactor, config: Config, guardian: Guardian | None = None) -> Running:
    """Listen on every C{config.listen} endpoint and serve the apps; autostart the eager ones."""
    guardian = guardian or shared_guardian(reactor)
    keepers = build_keepers(config, reactor, guardian)
    forwarder = Forwarder(reactor)
    router = Router(config, keepers, forwarder)
    site = StreamingSite(router, max_body_size=config.max_body_size)
    site.noisy = False  # no "Starting factory" line per listen
    ports = []
    try:
        for description in config.listen:
            try:
                port = await serverFromString(reactor, description).listen(site)
            except Exception as error:
                raise ListenError(f"cannot listen on {description!r}: {error}") from None
            ports.append(port)
            host = port.getHost()
            if getattr(host, "port", None):
                router.own_ports.add(host.port)
            log.info("Listening on {where} (base URL {base})", where=_describe(host), base=config.base_url)
    except ListenError:
        await DeferredList([port.stopListening() for port in ports])
        raise
    for name, keeper in keepers.items():
        if keeper.config.autostart and not keeper.config.is_external:
            keeper.ensure_running().addErrback(
                lambda failure, name=name: log.warn("[{server}] autostart failed: {why}",
                                                    server=name, why=failure.getErrorMessage()))
    return Running(config, keepers, ports, forwarder, site, router)


def _describe(host) -> str:
    if hasattr(host, "port"):
        return f"http://{host.host}:{host.port}"
    return f"unix:{host.name.decode() if isinstance(host.name, bytes) else host.name}"


class ListenError(Exception):
    """A listen endpoint could not be opened (port in use, bad description, permissions)."""


async def run(reactor, config: Config) -> None:
    """Serve until the reactor is stopped (SIGTERM/SIGINT), then stop every app first."""
    log.info("hubtwist {version} starting (pid {pid})", version=__version__, pid=os.getpid())
    running = await serve(reactor, config)

    async def shutdown() -> None:
        log.info("Stopping: stopping {count} app(s)", count=len(running.keepers))
        await running.stop()
        shared_guardian(reactor).close()
        log.info("Stopped.")

    from twisted.internet.defer import Deferred

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(shutdown()))
    await Deferred()  # serve until the reactor stops
