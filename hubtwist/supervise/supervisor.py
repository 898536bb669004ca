"""
The supervisor of one app: a small state machine around one process group.

Callers use three things: L{Supervisor.ensure_running} (a Deferred of the app's
L{BackendAddress}, shared by every caller while a start is under way), L{Supervisor.stop},
and the read-only status (C{state}, C{logs}, C{address}, C{last_activity}, C{uptime},
C{last_exit}). An operator's controls are L{Supervisor.start} and L{Supervisor.restart}.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from typing import Callable

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from hubtwist._procgroups import live_members, signal_group
from hubtwist.config import kinds
from hubtwist.config.jsp import call_for_server
from hubtwist.config.kinds import signal_number
from hubtwist.config.schema import ServerConfig
from hubtwist.config.templates import expand, template_values
from hubtwist.supervise import policy
from hubtwist.supervise.addresses import (
    BackendAddress, check_unix_path, free_tcp_port, private_socket_dir, remove_socket_dir,
    remove_stale_socket,
)
from hubtwist.supervise.guardian import Guardian
from hubtwist.supervise.logring import LineSplitter, LogLine, LogRing
from hubtwist.supervise.readiness import NotReady, wait_until_ready
from hubtwist.supervise.spawn import (
    RunAs, app_environment, check_user_allowed, find_executable, is_frozen, spawn,
)
from hubtwist.supervise.states import TRANSITIONS, State

log = Logger(namespace="hubtwist.supervise")

# After SIGKILL, how long a group may take to vanish before we give up waiting on it.
KILL_GRACE = 5.0


class ServerUnavailable(Exception):
    """
    The app cannot serve: it is FATAL, exited without restart, or being stopped.
    C{retry_after} (seconds) says when trying again makes sense; C{logs} are its last lines.
    """

    def __init__(self, name: str, reason: str, retry_after: float | None, logs: list[LogLine]) -> None:
        self.name = name
        self.reason = reason
        self.retry_after = retry_after
        self.logs = logs
        super().__init__(f"{name}: {reason}")


@attrs.frozen
class ExitStatus:
    """How the app's last process ended: C{code} or C{signal} (a name such as C{"SIGKILL"}),
    when (C{time}, seconds since the epoch), after how long (C{uptime}), and whether
    hubtwist stopped it on purpose (C{stopped})."""

    code: int | None
    signal: str | None
    time: float
    uptime: float
    stopped: bool

    def describe(self) -> str:
        return f"killed by signal {self.signal}" if self.signal else f"exited with status {self.code}"


class _Run:
    """One process group's life: from spawn until every member is gone."""

    def __init__(self, pid: int, protocol: "_AppProtocol", started_at: float) -> None:
        self.pid = pid
        self.protocol = protocol
        self.started_at = started_at
        self.group_gone: Deferred = Deferred()
        self.exited = False  # the leader's exit has been reaped (processExited)
        self.terminating = False


class _AppProtocol(ProcessProtocol):
    """Turns the app's output into log lines and its exit into a call on the supervisor."""

    def __init__(self, supervisor: "Supervisor") -> None:
        self._supervisor = supervisor
        self._splitters = {1: LineSplitter(), 2: LineSplitter()}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        for line in self._splitters[childFD].feed(data):
            self._supervisor._output(childFD, line)

    def processExited(self, reason) -> None:
        # processExited, not processEnded: a grandchild holding the pipes open must not
        # delay noticing that the app itself is gone.
        value = reason.value
        code = signum = None
        if isinstance(value, ProcessTerminated):
            code, signum = value.exitCode, value.signal
        elif isinstance(value, ProcessDone):
            code = 0
        self._supervisor._exited(self, code, signum)

    def processEnded(self, reason) -> None:
        for fd, splitter in self._splitters.items():
            for line in splitter.flush():
                self._supervisor._output(fd, line)


class Supervisor:
    """
    Runs one app per its L{ServerConfig}: lazy or eager start, readiness, restarts with
    backoff, FATAL after repeated failures, and stopping of its whole process group.
    """

    def __init__(
        self,
        name: str,
        config: ServerConfig,
        *,
        reactor,
        guardian: Guardian,
        base_url: str = "/",
        prefix: str | None = None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.name = name
        self.config = config
        self.base_url = base_url
        self.prefix = prefix if prefix is not None else f"{base_url}{name}/"
        # The Host of the first request ({origin_host}); the app starts on a request then.
        self.origin_host: str | None = None
        self.state = State.STOPPED
        self.logs = LogRing()
        self.address: BackendAddress | None = None
        self.last_activity: float | None = None
        self.restarts = 0
        self.last_exit: ExitStatus | None = None
        self.on_ready: Callable[[str, float], None] | None = None  # (name, seconds): metrics
        self._reactor = reactor
        self._guardian = guardian
        self._uniform = uniform
        self._run_as: RunAs | None = check_user_allowed(config.user) if config.user else None
        self._socket_dir: str | None = None
        self._run: _Run | None = None
        self._dying: set[_Run] = set()
        self._failures = 0
        self._fatal_at = 0.0
        self._waiters: list[Deferred] = []
        self._readiness: Deferred | None = None
        self._restart_call = None
        self._stopped: Deferred | None = None
        self._start_error: str | None = None

    @property
    def pid(self) -> int | None:
        """The app's pid (and process group id) while it runs."""
        return self._run.pid if self._run is not None else None

    @property
    def uptime(self) -> float | None:
        """Seconds since the app's current process started (C{None} when none runs)."""
        if self._run is None:
            return None
        return max(0.0, self._reactor.seconds() - self._run.started_at)

    # -- public surface -------------------------------------------------------------------

    def ensure_running(self) -> Deferred:
        """
        A Deferred of the app's L{BackendAddress} once it is ready. Starts it when needed;
        concurrent callers share one start. Fails with L{ServerUnavailable}.
        """
        if self.state is State.RUNNING:
            return succeed(self.address)
        if self.state is State.STOPPING:
            return self._unavailable("is being stopped", None)
        if self.state is State.FATAL:
            wait = self._fatal_at + self.config.backoff_max - self._reactor.seconds()
            if wait > 0:
                return self._unavailable(
                    f"failed {self._failures} times in a row; it may be tried again in "
                    f"{wait:.0f} s", wait)
            self._failures = 0
        waiter: Deferred = Deferred(self._forget)
        self._waiters.append(waiter)
        if self.state in (State.STOPPED, State.EXITED, State.FATAL):
            self._start()
        return waiter

    def stop(self) -> Deferred:
        """Stop the app and its whole process group; fires when they are gone."""
        if self._stopped is not None:
            return self._chain(self._stopped)
        if self.state is State.STOPPED:
            return succeed(None)
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        self._set_state(State.STOPPING)
        self._fail_waiters("is being stopped", None)
        self._stopped = stopped = Deferred()
        if self._readiness is not None:
            self._readiness.cancel()
        if self._run is not None:
            self._terminate(self._run)
        runs = [self._run, *self._dying] if self._run is not None else list(self._dying)
        DeferredList([run.group_gone for run in runs]).addCallback(lambda _: self._finish_stop())
        return self._chain(stopped)

    def start(self) -> Deferred:
        """
        An operator's start (the API's control): like L{ensure_running}, but at once — a
        FATAL app is tried again without waiting out C{backoff_max}, a restart waiting in
        BACKOFF happens now, and an app being stopped is started again once it is gone.
        """
        if self.state is State.STOPPING:
            started: Deferred = self._chain(self._stopped)
            return started.addCallback(lambda _: self.start())
        if self.state is State.FATAL:
            self._fatal_at = -math.inf  # ensure_running then starts it with a clean count
        elif self.state is State.BACKOFF and self._restart_call is not None \
                and self._restart_call.active():
            self._restart_call.cancel()
            self._restart()
        return self.ensure_running()

    def restart(self) -> Deferred:
        """Stop the app (whole process group), then L{start} it; a Deferred of its address."""
        return self.stop().addCallback(lambda _: self.start())

    def touch(self, when: float | None = None) -> None:
        """Record activity (a proxied request or message) at C{when} (default: now)."""
        self.last_activity = time.time() if when is None else when

    def note_origin_host(self, host: bytes | None) -> None:
        """Remember the C{Host} of the first request that wants the app (C{{origin_host}})."""
        if self.origin_host is None and host:
            self.origin_host = host.decode("latin-1")

    # -- the start ------------------------------------------------------------------------

    def _start(self) -> None:
        self._set_state(State.STARTING)
        self._start_error = None
        try:
            self.address = self._allocate() if self.config.proxied else None
            argv, extra = self._command_and_environment()
            env = app_environment(os.environ, extra, self._run_as, is_frozen(),
                                  pass_hub_token=self.config.pass_hub_token)
            if self.config.cwd and not os.path.isdir(self.config.cwd):
                raise OSError(f"the working directory {self.config.cwd!r} does not exist")
            if find_executable(argv[0], env, self.config.cwd) is None:
                raise OSError(f"the command {argv[0]!r} was not found on the PATH or is not executable")
            protocol = _AppProtocol(self)
            with open(os.devnull, "rb") as stdin:
                transport = spawn(self._reactor, protocol, argv, env, self.config.cwd,
                                  self._run_as, stdin.fileno())
        except (OSError, ValueError) as error:
            self._note(f"cannot start: {error}")
            self._after_exit(failed=True)
            return
        self._run = _Run(transport.pid, protocol, self._reactor.seconds())
        self._guardian.watch(self._run.pid)
        where = f" on {self.address.describe()}" if self.address is not None else ""
        self._note(f"started pid {self._run.pid}{where}: {' '.join(argv)}")
        if self.address is None:
            # Not proxied (a background service): nothing to probe, running once started.
            self._readiness = succeed(0.0)
        else:
            self._readiness = Deferred.fromCoroutine(wait_until_ready(
                self._reactor, self.address, self.config.ready_check_path,
                self.config.timeout, raw=self.config.raw_socket_proxy))
        self._readiness.addCallbacks(self._ready, self._not_ready)

    def _command_and_environment(self) -> tuple[list[str], dict[str, str]]:
        """
        This start's argv and extra environment, templates filled. A function (Python
        configuration) is called now, with the arguments it names; one that fails raises
        C{ValueError} saying so, and the start fails like a missing executable would.
        """
        address = self.address
        port, path = (address.port, address.path) if address is not None else (0, "")
        config = self.config
        if callable(config.command):
            argv = list(call_for_server(config.command, kinds.StrList(non_empty_items=True),
                                        port, path, self.base_url, f"servers.{self.name}.command"))
            if not argv:
                raise ValueError(f"the `servers.{self.name}.command` function returned an "
                                 "empty command")
        else:
            values = template_values(port, path, self.base_url, self.prefix, self.origin_host)
            argv = [expand(arg, values) for arg in config.command]
        if callable(config.environment):
            extra = call_for_server(config.environment, kinds.StrDict(), port, path,
                                    self.base_url, f"servers.{self.name}.environment")
        else:
            values = template_values(port, path, self.base_url, self.prefix, self.origin_host)
            extra = {k: expand(v, values) for k, v in config.environment.items()}
        return argv, extra

    def _allocate(self) -> BackendAddress:
        socket = self.config.unix_socket
        if socket is True:
            if self._socket_dir is None:
                owner = (self._run_as.uid, self._run_as.gid) if self._run_as else None
                self._socket_dir = private_socket_dir(self.name, owner)
            path = os.path.join(self._socket_dir, "app.sock")
        elif isinstance(socket, str):
            path = socket
        else:
            return BackendAddress.tcp(self.config.port or free_tcp_port())
        check_unix_path(path)
        remove_stale_socket(path)  # the previous run's, when this is a restart
        return BackendAddress.unix(path)

    def _ready(self, seconds: float) -> None:
        self._readiness = None
        self._set_state(State.RUNNING, f"ready in {seconds * 1000:.0f} ms")
        if self.on_ready is not None:
            self.on_ready(self.name, seconds)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self.address)

    def _not_ready(self, failure) -> None:
        self._readiness = None
        if failure.check(CancelledError):
            return
        reason = failure.getErrorMessage() if failure.check(NotReady) else str(failure.value)
        self._start_error = f"not ready: {reason}"
        self._note(f"{self._start_error}; stopping it")
        if self._run is not None:
            self._terminate(self._run)

    # -- exits ----------------------------------------------------------------------------

    def _exited(self, protocol: _AppProtocol, code: int | None, signum: int | None) -> None:
        run = self._run
        if run is None or protocol is not run.protocol:
            return
        run.exited = True
        self._run = None
        self._dying.add(run)
        uptime = self._reactor.seconds() - run.started_at
        self.last_exit = ExitStatus(
            code=code, signal=signal.Signals(signum).name if signum else None,
            time=time.time(), uptime=uptime, stopped=self.state is State.STOPPING)
        how = self.last_exit.describe()
        # The leader is gone; the rest of its group (grandchildren) follows it.
        self._terminate(run)
        if self.state is State.STOPPING:
            self._note(f"{how} (stopped)")
            return
        if self._readiness is not None:
            self._readiness.cancel()
            self._readiness = None
        if policy.run_was_healthy(uptime, self.config.min_uptime) and self._start_error is None:
            self._failures = 0
        failed = (self.state is State.STARTING or self._start_error is not None
                  or policy.is_failure(code, signum))
        detail = f" ({self._start_error})" if self._start_error else ""
        self._note(f"{how} after {uptime:.1f} s{detail}")
        self._after_exit(failed)

    def _after_exit(self, failed: bool) -> None:
        if failed:
            self._failures += 1
        if failed and policy.is_fatal(self._failures, self.config.start_retries):
            self._fatal_at = self._reactor.seconds()
            self._set_state(State.FATAL, f"{self._failures} failures in a row; not restarting")
            self._fail_waiters(f"failed {self._failures} times in a row", self.config.backoff_max)
        elif policy.should_restart(self.config.restart, failed):
            delay = policy.restart_delay(
                max(self._failures, 1), self.config.backoff_initial, self.config.backoff_max,
                self._uniform)
            self._set_state(State.BACKOFF, f"restarting in {delay:.2f} s")
            self._restart_call = self._reactor.callLater(delay, self._restart)
        else:
            self._set_state(State.EXITED, f"not restarted (restart = {self.config.restart})")
            self._fail_waiters("exited", None)

    def _restart(self) -> None:
        self._restart_call = None
        self.restarts += 1
        if self._dying:
            # A fixed port or socket is only free once the old group is gone.
            DeferredList([run.group_gone for run in self._dying]).addCallback(
                lambda _: self._start() if self.state is State.BACKOFF else None)
        else:
            self._start()

    # -- process groups -------------------------------------------------------------------

    def _terminate(self, run: _Run) -> None:
        """Signal the run's group, SIGKILL it after C{stop_timeout}, fire C{group_gone}."""
        if run.terminating:
            return
        run.terminating = True
        signal_group(run.pid, signal_number(self.config.stop_signal))
        deadline = self._reactor.seconds() + self.config.stop_timeout
        self._reactor.callLater(0.01, self._check_group, run, deadline, False, 0.01)

    def _check_group(self, run: _Run, deadline: float, killed: bool, delay: float) -> None:
        # An exited leader is a zombie until Twisted reaps it, and zombies are not live
        # members: wait for the reaping too, so the exit is handled before the group counts
        # as gone (and a stopped server cannot see its own exit afterwards).
        if run.exited and not live_members(run.pid):
            self._group_ended(run)
            return
        now = self._reactor.seconds()
        if now >= deadline:
            if killed:
                self._note(f"process group {run.pid} survived SIGKILL; giving up on it")
                self._group_ended(run)
                return
            self._note(f"still running {self.config.stop_timeout:g} s after "
                       f"SIG{self.config.stop_signal}; sending SIGKILL to its process group")
            signal_group(run.pid, signal.SIGKILL)
            killed, deadline = True, now + KILL_GRACE
        delay = min(delay * 2, 0.2)
        self._reactor.callLater(delay, self._check_group, run, deadline, killed, delay)

    def _group_ended(self, run: _Run) -> None:
        self._guardian.release(run.pid)
        self._dying.discard(run)
        if not run.group_gone.called:
            run.group_gone.callback(None)

    def _finish_stop(self) -> None:
        self.address = None
        self._remove_socket()
        self._set_state(State.STOPPED)
        stopped, self._stopped = self._stopped, None
        stopped.callback(None)

    def _remove_socket(self) -> None:
        """Once the app is gone, its unix socket (and private directory) are not left behind."""
        if self._socket_dir is not None:
            remove_socket_dir(self._socket_dir)
            self._socket_dir = None
        elif isinstance(self.config.unix_socket, str):
            try:
                remove_stale_socket(self.config.unix_socket)
            except OSError:
                pass  # not a socket, or not ours to remove: the next start says so

    # -- helpers --------------------------------------------------------------------------

    def _set_state(self, new: State, detail: str = "") -> None:
        old = self.state
        if new is old:
            return
        assert new in TRANSITIONS[old], f"{self.name}: illegal transition {old} -> {new}"
        self.state = new
        log.info("[{server}] {old} -> {new}{detail}", server=self.name, old=old.value,
                 new=new.value, detail=f": {detail}" if detail else "")

    def _note(self, text: str) -> None:
        self.logs.append(LogLine(time.time(), "hubtwist", text))
        log.info("[{server}] {text}", server=self.name, text=text)

    def _output(self, fd: int, line: str) -> None:
        stream = "stdout" if fd == 1 else "stderr"
        self.logs.append(LogLine(time.time(), stream, line))
        if self.config.log_output:
            log.info("[{server}] {line}", server=self.name, stream=stream, line=line)

    def _unavailable(self, reason: str, retry_after: float | None) -> Deferred:
        return fail(ServerUnavailable(self.name, reason, retry_after, self.logs.tail(50)))

    def _fail_waiters(self, reason: str, retry_after: float | None) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(ServerUnavailable(self.name, reason, retry_after, self.logs.tail(50)))

    def _forget(self, waiter: Deferred) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    @staticmethod
    def _chain(source: Deferred) -> Deferred:
        result: Deferred = Deferred()
        source.addBoth(lambda value: (result.callback(None), value)[1])
        return result


class ExternalServer:
    """
    An app that something else runs (no C{command}): hubtwist only proxies to its C{port}
    or C{unix_socket}. It has the L{Supervisor}'s surface so routes need not care.
    """

    state = State.RUNNING
    pid = None
    restarts = 0
    uptime = None
    last_exit = None

    def __init__(self, name: str, config: ServerConfig, address: BackendAddress | None = None) -> None:
        self.name = name
        self.config = config
        self.logs = LogRing()
        self.last_activity: float | None = None
        if address is not None:
            self.address = address
        elif isinstance(config.unix_socket, str):
            self.address = BackendAddress.unix(config.unix_socket)
        else:
            self.address = BackendAddress.tcp(config.port)

    def ensure_running(self) -> Deferred:
        return succeed(self.address)

    def stop(self) -> Deferred:
        return succeed(None)

    touch = Supervisor.touch

    def note_origin_host(self, host: bytes | None) -> None:
        """Nothing to start: nothing to remember."""


def supervisor_for(name: str, config: ServerConfig, *, reactor, guardian: Guardian,
                   base_url: str = "/", prefix: str | None = None) -> Supervisor | ExternalServer:
    """The right keeper for C{config}: a L{Supervisor}, or an L{ExternalServer}. C{prefix}:
    the app's public prefix (C{{prefix}}), C{BASE/NAME/} by default."""
    if config.is_external:
        return ExternalServer(name, config)
    return Supervisor(name, config, reactor=reactor, guardian=guardian, base_url=base_url,
                      prefix=prefix)
