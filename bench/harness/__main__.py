"""
Command line of C{bench/run}: C{bench/run [http|ws|hub|front|front-ws] [--quick] [--targets KEYS] [...]}.

Load settings come from, in this order: flags, C{BENCH_<SETTING>} environment variables
(e.g. C{BENCH_DURATION=20}), C{--quick}, the mode's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from harness import install, report, runner
from harness.common import TargetFailed, log
from harness.procs import install_cleanup, stop_all

PEER_KEYS = ("direct", "nginx-proxy", "chp", "jsp", "hubtwist", "hubtwist-bare",
             "hubtwist-metrics", "hubtwist-access")  # http and ws


def peer_keys(mode: str) -> tuple[str, ...]:
    """The row keys C{--targets} accepts in C{mode} (the Hub mode has rows of its own)."""
    return getattr(modes()[mode][0], "peer_keys", PEER_KEYS)


def modes() -> dict[str, tuple[type, type]]:
    """Mode name -> (mode class, load settings dataclass)."""
    from harness.front_mode import FrontMode, FrontWsMode
    from harness.http_mode import HttpLoad, HttpMode
    from harness.hub_mode import HubLoad, HubMode
    from harness.ws_mode import WsLoad, WsMode

    return {"http": (HttpMode, HttpLoad), "ws": (WsMode, WsLoad), "hub": (HubMode, HubLoad),
            "front": (FrontMode, HttpLoad), "front-ws": (FrontWsMode, WsLoad)}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Benchmark hubtwist side by side with nginx, "
        "configurable-http-proxy and jupyter-server-proxy's standalone proxy.",
        epilog="Settings not given as flags may be given as BENCH_<NAME> environment "
        "variables, e.g. BENCH_DURATION=20. See bench/README.md.",
    )
    parser.add_argument("mode", nargs="?", default="http", choices=sorted(modes()),
                        help="kind of traffic (default: http)")
    parser.add_argument("--quick", action="store_true",
                        help="short runs (about a minute in all) to check the harness")
    parser.add_argument("--targets", default=os.environ.get("BENCH_TARGETS", ""),
                        help="comma-separated subset of: " + ", ".join(PEER_KEYS)
                        + " (hub mode: see bench/README.md)")
    parser.add_argument("--no-install", action="store_true",
                        help="skip the install step (use what is in bench/.scratch)")
    settings = parser.add_argument_group("load settings (defaults depend on the mode)")
    for name, kind, text in [
        ("duration", float, "seconds of the small-message run (1 KB / 64 B)"),
        ("bulk-duration", float, "seconds of the bulk run (8 MB / 1 MiB)"),
        ("warmup", float, "seconds of warm-up before the small-message run"),
        ("threads", int, "wrk threads for the 1 KB run (http)"),
        ("connections", int, "connections for the small-message run"),
        ("bulk-threads", int, "wrk threads for the 8 MB run (http)"),
        ("bulk-connections", int, "connections for the bulk run"),
    ]:
        settings.add_argument(f"--{name}", type=kind, help=text)
    args = parser.parse_args(argv)
    known = peer_keys(args.mode)
    unknown = {key for key in args.targets.split(",") if key} - set(known)
    if unknown:
        parser.error(f"unknown targets {', '.join(sorted(unknown))}; known in {args.mode} "
                     "mode: " + ", ".join(known))
    return args


def load_settings(load_class: type, args: argparse.Namespace) -> object:
    """The mode's load settings: its defaults (or --quick ones), then env, then flags."""
    load = load_class.quick() if args.quick else load_class()
    for field in dataclasses.fields(load):
        kind = type(getattr(load, field.name))
        flag = getattr(args, field.name, None)
        env = os.environ.get(f"BENCH_{field.name.upper()}")
        if flag is not None:
            setattr(load, field.name, kind(flag))
        elif env:
            setattr(load, field.name, kind(env))
    return load


def main(argv: list[str]) -> int:
    args = parse(argv)
    mode_class, load_class = modes()[args.mode]
    mode = mode_class(load_settings(load_class, args))
    install_cleanup()
    run = report.RunInfo(command=" ".join(["bench/run", *argv]))
    started = time.monotonic()
    try:
        if not args.no_install:
            install.ensure_all(mode.name)
        only = {key for key in args.targets.split(",") if key} or None
        rows, versions = runner.run(mode, only)
    except TargetFailed as error:
        log(f"cannot run the benchmark: {error}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
    run.elapsed = time.monotonic() - started
    text = report.render(mode, rows, versions, run)
    path = report.write(mode, text, run)
    print(text)
    log(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
