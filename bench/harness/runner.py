"""
What every mode shares: start each peer in turn in front of the mode's backend, check it,
take its idle memory, load it while sampling its memory, stop it, and make a row of it.

A mode (L{Mode}) supplies only the backend, the checks, the load and its table columns;
any failure of one peer becomes that peer's row and the run goes on.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field

from harness.common import LOGS, TargetFailed, log
from harness.peers import Peer, Running
from harness.procs import PeakMemory, rss_mib


@dataclass
class Column:
    """A figure of the table: its key in L{Row.figures}, its header and its format."""

    key: str
    header: str
    format: str = "{:,.0f}"


RSS_COLUMNS = [
    Column("rss_idle", "RSS idle (MiB)", "{:.1f}"),
    Column("rss_peak", "RSS peak (MiB)", "{:.1f}"),
]


CPU_SETTINGS = (
    "CPU: user + system time of the peer's process tree (jsp: its own process) during that "
    "load, per request, message or MiB. The load generator and the backend share the "
    "machine, so a rate may be limited by them; the CPU figures say what the proxy itself "
    "costs")


def rss_settings(first_request: str) -> str:
    """The report line that says how the RSS columns were taken."""
    return ("RSS: sum of VmRSS over the peer's process tree (jsp: its own process only); idle = "
            f"after start and {first_request}; peak = largest 100 ms sample during the load, or "
            "the root process's VmHWM if larger")


@dataclass
class Row:
    """The outcome for one peer: figures, notes, or why it failed."""

    peer: Peer
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failure: str | None = None


class Mode:
    """One kind of traffic. Subclasses fill in the hooks; L{run} drives them."""

    name = ""
    columns: list[Column] = []
    # Rows measured together: {first key: its partner's key}. Both are started, then
    # load_pair loads them in turns, so that a drift of the machine's speed during the run
    # weighs on both; used for the pairs whose ratio is a target.
    pairs: dict[str, str] = {}

    def start_backend(self) -> Running:
        """Start the backend every peer proxies to (stopped with the other processes)."""
        raise NotImplementedError

    def peers(self, backend: Running) -> list[Peer]:
        """The peers, in table order: "direct" (the backend itself) first."""
        raise NotImplementedError

    def first_request(self, running: Running, key: str) -> None:
        """One small request to peer C{key}, checked; idle memory is taken right after it."""
        raise NotImplementedError

    def check(self, running: Running, key: str) -> None:
        """Any further checks before the load (large responses, ...)."""

    def load(self, running: Running, row: Row) -> None:
        """Load the peer and put the figures (and notes) into C{row}."""
        raise NotImplementedError

    def load_pair(self, runnings: list[Running], rows: list[Row]) -> None:
        """Load the peers of a pair (L{pairs}) in turns; figures into C{rows}."""
        raise NotImplementedError

    def settings(self) -> list[str]:
        """Lines describing the load, for the report."""
        return []

    def ratios(self, rows: dict[str, Row]) -> list[str]:
        """Comparison lines for the report, from the rows by peer key."""
        return []

    def tables(self, rows: list[Row]) -> list[tuple[str, list[Column], list[Row]]]:
        """The result tables: (title, columns, rows); one untitled table by default."""
        return [("", self.columns, rows)]


def measure(mode: Mode, peer: Peer, backend: Running) -> Row:
    """Start, check and load one peer; never raises but for Ctrl-C."""
    return measure_together(mode, [peer], backend)[0]


def measure_together(mode: Mode, peers: list[Peer], backend: Running) -> list[Row]:
    """
    Start and check one peer, or both of a pair (L{Mode.pairs}), then load them (a pair
    with L{Mode.load_pair}); never raises but for Ctrl-C. A failure fails every row given:
    a pair's figures mean something only side by side.
    """
    rows = [Row(peer) for peer in peers]
    runnings: list[Running] = []
    started = time.monotonic()
    try:
        for peer in peers:
            running = peer.start(backend.port)
            runnings.append(running)
            log(f"{peer.key}: listening on port {running.port} (pid {running.proc.pid})")
            mode.first_request(running, peer.key)
        time.sleep(0.5)  # let the first response settle before reading memory
        for running, row in zip(runnings, rows):
            row.figures["rss_idle"] = rss_mib(running.proc.pid, running.whole_tree)
            mode.check(running, row.peer.key)
        with ExitStack() as stack:
            memories = [stack.enter_context(PeakMemory(running.proc.pid, running.whole_tree))
                        for running in runnings]
            if len(rows) == 1:
                mode.load(runnings[0], rows[0])
            else:
                mode.load_pair(runnings, rows)
        for running, row, memory in zip(runnings, rows, memories):
            row.figures["rss_peak"] = memory.peak_mib
            if running.proc.popen.poll() is not None:
                row.notes.append(f"exited during the run (status "
                                 f"{running.proc.popen.returncode})")
    except TargetFailed as error:
        for row in rows:
            row.failure = str(error)
    except Exception as error:  # a bug here must not lose the other peers' rows
        for row in rows:
            row.failure = f"harness error {type(error).__name__}: {error}"
        with open(LOGS / "harness-errors.log", "a") as errors:
            errors.write(f"--- {', '.join(peer.key for peer in peers)}\n"
                         f"{traceback.format_exc()}\n")
    finally:
        for running in runnings:
            if running.owned:
                running.proc.stop()
    for row in rows:
        if row.failure:
            log(f"{row.peer.key}: failed: {row.failure}")
        else:
            log(f"{row.peer.key}: done in {time.monotonic() - started:.0f}s")
    return rows


def run(mode: Mode, only: set[str] | None) -> tuple[list[Row], dict[str, str]]:
    """Measure the peers (all, or those whose key is in C{only}); return the rows and the
    version of every peer measured."""
    for old in LOGS.glob("*.log"):  # keep only this run's logs (and the install logs)
        if not old.name.startswith("install-"):
            old.unlink()
    # The backend outlives every row (the "direct" row measures it): stop_all stops it.
    backend = dataclasses.replace(mode.start_backend(), owned=False)
    log(f"{mode.name} backend listening on port {backend.port} (pid {backend.proc.pid})")
    chosen = [peer for peer in mode.peers(backend)
              if ((peer.key in only) if only else not peer.optional)]
    by_key = {peer.key: peer for peer in chosen}
    partner_of = {second: first for first, second in mode.pairs.items()}
    measured: dict[str, Row] = {}
    versions = {}
    for peer in chosen:
        versions[peer.label] = peer.version()
        if peer.key in measured:
            continue
        partner = by_key.get(mode.pairs.get(peer.key) or partner_of.get(peer.key, ""))
        group = [peer] if partner is None else sorted(
            [peer, partner], key=lambda one: one.key in partner_of)  # the pair's first first
        for row in measure_together(mode, group, backend):
            measured[row.peer.key] = row
    return [measured[peer.key] for peer in chosen], versions
