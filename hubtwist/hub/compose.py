"""
Putting authentication in front of the router, as the L{AuthPlan} says: the Hub gate with
its API client, version and activity reporter; the standalone token gate; or nothing.
"""

from __future__ import annotations

from typing import Callable, Iterable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.resource import Resource

from hubtwist.config.schema import Config
from hubtwist.hub.activity import ActivityReporter
from hubtwist.hub.client import HubClient, HubRefused, HubUnavailable, retry_delay
from hubtwist.hub.gate import HubGate
from hubtwist.hub.settings import AuthPlan
from hubtwist.hub.tokengate import TokenGate

log = Logger(namespace="hubtwist.hub")

VERSION_RETRY_MAX = 10.0  # seconds between version requests, at most, after a failed start-up


class Protection:
    """
    The resource to serve (a gate around the router, or the router) and what runs with it.
    C{lean}: whether requests may take the lean path (L{hubtwist.proxy.lean}), which skips
    the resource; C{lean_admit}, the gate's own check for it (C{None}: no gate to ask).
    """

    def __init__(self, resource: Resource, *, client: HubClient | None = None,
                 gate: HubGate | None = None, reporter: ActivityReporter | None = None,
                 lean: bool = False, lean_admit: Callable | None = None) -> None:
        self.resource = resource
        self.client = client
        self.gate = gate
        self.reporter = reporter
        self.lean = lean
        self.lean_admit = lean_admit
        self._background: Deferred | None = None

    def start(self, reactor) -> None:
        if self.reporter is not None:
            self.reporter.start()
        if self.gate is not None and self.gate.hub_version is None:
            self._background = Deferred.fromCoroutine(self._keep_asking_version(reactor))
            self._background.addErrback(lambda failure: failure.trap(CancelledError))

    async def _keep_asking_version(self, reactor) -> None:
        # An external service may start before the Hub: ask again soon, then less often.
        attempt = 0
        while self.gate.hub_version is None:
            attempt += 1
            await deferLater(reactor, retry_delay(attempt, 1.0, VERSION_RETRY_MAX), lambda: None)
            try:
                self.gate.hub_version = (await self.client.version(attempts=1)).encode("latin-1")
                log.info("JupyterHub {version} reached at last", version=self.gate.hub_version.decode())
            except (HubUnavailable, HubRefused):
                continue

    async def stop(self) -> None:
        if self.reporter is not None:
            self.reporter.stop()
        if self._background is not None:
            self._background.cancel()
        if self.client is not None:
            await self.client.close()


async def protect(reactor, inner: Resource, config: Config, plan: AuthPlan,
                  activity: Callable[[], Iterable[float | None]],
                  open_paths: frozenset[bytes] = frozenset(),
                  observe_hub: Callable | None = None) -> Protection:
    """
    Wrap C{inner} as C{plan} says; C{open_paths} (hubtwist's own version API) need no
    credentials. In Hub mode the Hub's version is asked for first (a few
    quick tries: the Hub's readiness probe should already see it echoed), and the activity
    reporter is made when the Hub gave an activity URL. C{observe_hub} becomes the Hub
    client's C{observe} (the metrics of its calls).
    """
    log.info("{reason}", reason=plan.reason)
    for warning in plan.warnings:
        log.warn("{warning}", warning=warning)
    if plan.mode == "hub":
        settings = plan.hub
        client = HubClient(reactor, settings)
        client.observe = observe_hub
        gate = HubGate(inner, settings, client, base_url=config.base_url, clock=reactor.seconds,
                       forward_user_info=config.forward_user_info, open_paths=open_paths)
        try:
            version = await client.version(attempts=3)
            gate.hub_version = version.encode("latin-1")
            log.info("JupyterHub {version} at {url}", version=version, url=settings.api_url)
        except (HubUnavailable, HubRefused) as error:
            log.warn("Cannot learn the Hub's version yet ({why}); serving anyway and asking "
                     "again", why=str(error))
        reporter = None
        if settings.activity_url and settings.activity_interval > 0:
            reporter = ActivityReporter(
                reactor, lambda url, report: client.post_activity(url, report, attempts=1),
                url=settings.activity_url, server_name=settings.server_name, sources=activity,
                interval=settings.activity_interval, keep_alive=config.keep_alive)
        return Protection(gate, client=client, gate=gate, reporter=reporter, lean=True,
                          lean_admit=gate.admit_lean)
    if plan.token:
        token_gate = TokenGate(inner, plan.token, base_url=config.base_url, clock=reactor.seconds,
                               open_paths=open_paths)
        return Protection(token_gate, lean=True, lean_admit=token_gate.admit_lean)
    return Protection(inner, lean=True)
