"""The results file: machine, versions, settings, the table and the ratios, in markdown."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from harness.common import RESULTS
from harness.runner import RSS_COLUMNS, Column, Mode, Row


def cpu_model() -> str:
    """The CPU model line of /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> list[str]:
    """Lines describing where the numbers come from."""
    return [
        f"CPUs usable (`nproc`): {len(os.sched_getaffinity(0))}",
        f"CPU: {cpu_model()}",
        f"kernel: {platform.system()} {platform.release()}",
        "load average at the start (1, 5, 15 min): "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg()),
        f"Python running the harness: {platform.python_version()}",
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(columns: list[Column], rows: list[Row]) -> list[str]:
    """A markdown table: one row per peer, failures in the notes column."""
    columns = columns + RSS_COLUMNS
    lines = [
        "| target | " + " | ".join(column.header for column in columns) + " | notes |",
        "|---|" + "---:|" * len(columns) + "---|",
    ]
    for row in rows:
        cells = [
            column.format.format(row.figures[column.key]) if column.key in row.figures else "—"
            for column in columns
        ]
        notes = ([f"failed: {row.failure}"] if row.failure else []) + row.notes
        lines.append(f"| {row.peer.label} | " + " | ".join(cells)
                     + f" | {_cell('; '.join(notes))} |")
    return lines


def ratio(rows: dict[str, Row], label: str, top: tuple[str, str], bottom: tuple[str, str],
          better: str, goal: float | None = None) -> str:
    """One line "label: x.xx (better)" from C{figure} of two peers; n/a when one is missing.
    C{top} and C{bottom} are (peer key, figure key). With a C{goal}, the line also says
    whether the ratio meets it (at least C{goal} when higher is better, else at most)."""
    try:
        value = rows[top[0]].figures[top[1]] / rows[bottom[0]].figures[bottom[1]]
    except (KeyError, ZeroDivisionError):
        missing = [key for key, figure in (top, bottom)
                   if figure not in getattr(rows.get(key), "figures", {})]
        return f"- {label}: n/a (no figure for {', '.join(missing) or 'a zero divisor'})"
    if goal is None:
        return f"- {label}: **{value:.2f}** ({better})"
    higher = better.startswith("higher")
    met = value >= goal if higher else value <= goal
    return (f"- {label}: **{value:.2f}**, target {'≥' if higher else '≤'} {goal:g}: "
            f"{'met' if met else '**not met**'}")


@dataclass
class RunInfo:
    """Facts about the run itself, taken when it starts (and its length, at the end)."""

    command: str
    when: datetime.datetime = field(default_factory=lambda: datetime.datetime.now().astimezone())
    machine: list[str] = field(default_factory=machine)
    elapsed: float = 0.0


def render(mode: Mode, rows: list[Row], versions: dict[str, str], run: RunInfo) -> str:
    """The whole report."""
    lines = [
        f"# hubtwist {mode.name.upper()} benchmark, {run.when:%Y-%m-%d %H:%M:%S %Z}",
        "",
        "## Machine",
        *(f"- {line}" for line in run.machine),
        "- load average at the end: " + ", ".join(f"{load:.2f}" for load in os.getloadavg())
        + " (other work on the machine skews the figures)",
        "",
        "## Versions",
        *(f"- {label}: {version or 'unknown'}" for label, version in versions.items()),
        "",
        "## Load",
        f"- command: `{run.command}`",
        *(f"- {line}" for line in mode.settings()),
        f"- run time, installs included: {run.elapsed:.0f}s",
        "",
        "## Results",
        *(line for title, columns, subset in mode.tables(rows)
          for line in ([f"### {title}", ""] if title else []) + table(columns, subset) + [""]),
        "## hubtwist compared",
        *mode.ratios({row.peer.key: row for row in rows if not row.failure}),
        "",
    ]
    return "\n".join(lines)


def write(mode: Mode, text: str, run: RunInfo) -> Path:
    """Save the report as C{bench/results/MODE-TIMESTAMP.md}."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{mode.name}-{run.when:%Y%m%d-%H%M%S}.md"
    path.write_text(text)
    return path
