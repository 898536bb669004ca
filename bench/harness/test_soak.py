"""
Tests of bench/soak's own logic: which failures count as injected, the verdict, the
hubtwist log filter, the report, and the HTTP client's body framing (against a real asyncio
server on 127.0.0.1). Run with
C{python3 -m pytest bench/harness/test_soak.py -q -p no:cacheprovider}.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.soak import (Sample, Soak, hubtwist_problems, markdown, parse,
                          processes_left, summarize, verdict)
from harness.soak_traffic import (INJECT_WINDOW, Connection, Failure, Kill, OpError,
                                  Traffic, byte_pattern, is_injected)


def failure(app="web", started=10.0, ended=10.5, injectable=True, error="status 502"):
    return Failure("keepalive", app, "GET /web/", error, "", started, ended, injectable)


KILLS = [Kill("web", at=20.0, pid=1)]


@pytest.mark.parametrize("started, ended, expected", [
    (19.0, 20.1, True),  # in flight when the kill came
    (21.0, 21.2, True),  # sent while the app was restarting
    (20.0 + INJECT_WINDOW, 25.1, True),  # the window's last moment
    (25.5, 25.6, False),  # after the window: the app should be back
    (10.0, 19.9, False),  # failed before the kill
])
def test_injected_window(started, ended, expected):
    assert is_injected(failure(started=started, ended=ended), KILLS) is expected


def test_injected_needs_the_killed_app_and_an_injectable_kind():
    assert not is_injected(failure(app="sock", started=20.5, ended=20.6), KILLS)
    assert not is_injected(failure(started=20.5, ended=20.6, injectable=False,
                                   error="bad content"), KILLS)
    assert not is_injected(failure(started=20.5, ended=20.6), [])


def test_verdict():
    assert verdict(0, (100.0, 109.9), (20, 20)) == []
    assert verdict(0, (100.0, 100.0), (20, 18)) == []  # fewer fds is fine
    assert verdict(3, (100.0, 100.0), (20, 20)) == ["3 errors other than injected ones"]
    assert verdict(0, (100.0, 110.0), (20, 20)) == ["RSS grew 10.0 % (limit 10 %)"]
    assert verdict(0, (100.0, 100.0), (20, 21)) == ["open fds grew from 20 to 21"]


def test_hubtwist_problems_leaves_out_app_output(tmp_path: Path):
    log = tmp_path / "hubtwist.log"
    log.write_text("\n".join([
        "$ python -m hubtwist ...",
        "2026-01-01T00:00:00.000 info    hubtwist.supervise: [web] Traceback (most recent "
        "call last):",
        "2026-01-01T00:00:00.000 info    hubtwist.supervise: [web] started pid 12 on 127.0.0.1:5",
        "2026-01-01T00:00:00.000 error   hubtwist.proxy: Unhandled error in relay",
        "Traceback (most recent call last):",
    ]))
    assert hubtwist_problems(log) == [
        "2026-01-01T00:00:00.000 error   hubtwist.proxy: Unhandled error in relay",
        "Traceback (most recent call last):",
    ]


def test_summary_sorts_failures_and_sets_the_exit_status(tmp_path: Path):
    traffic = Traffic(port=1)
    traffic.tally("keepalive").ok = 100
    traffic.fail(failure(started=20.2, ended=20.3))  # injected
    traffic.fail(failure(app="sock", started=20.2, ended=20.3))  # another app: other
    hub = SimpleNamespace(version="hubtwist test",
                          proc=SimpleNamespace(log_path=tmp_path / "none.log"))
    soak = Soak(hub, argparse.Namespace(auth="none", kill_every=30.0, traffic=("keepalive",)), traffic, t0=0.0,
                kills=KILLS)
    soak.samples = [Sample("baseline", 1, 50.0, 19, True), Sample("end", 9, 51.0, 19, True)]
    result, status = summarize(soak, "bench/soak", [], 60.0)
    assert status == 1
    assert result["traffic"]["keepalive"]["injected"] == 1
    assert result["traffic"]["keepalive"]["other"] == 1
    assert result["other_errors"][0]["app"] == "sock"
    assert result["rss_growth_pct"] == 2.0
    assert "FAIL: 1 errors other than injected ones" in markdown(result)


def test_byte_pattern():
    pattern = byte_pattern(65536 + 6)
    assert len(pattern) == 65542
    assert pattern[:8] == b"\0" * 8
    assert pattern[65536:] == b"\0\0\0\1\0\0"


def test_parse_defaults_and_mistakes(capsys):
    args = parse([])
    assert (args.minutes, args.kill_every, args.auth, args.warmup) == (10.0, 30.0, "none", 60.0)
    assert parse(["--minutes", "1"]).warmup == 10.0
    with pytest.raises(SystemExit) as exit:
        parse(["--minutes", "0.1"])
    assert exit.value.code == 2
    assert "--minutes must be at least 0.5" in capsys.readouterr().err


def test_processes_left():
    assert processes_left({2 ** 22 + 12345}) == []  # no such pid


# --- the HTTP client, against a scripted server ----------------------------------------------

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the connection closes
]


async def _client_run() -> list:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in ANSWERS:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    traffic = Traffic(port=server.sockets[0].getsockname()[1], token="secret")
    connection = Connection(traffic)
    results = []
    try:
        await connection.open()
        assert traffic.open_connections == 1
        for _ in range(3):
            status, headers = await connection.request("GET", "/x")
            try:
                results.append((status, await connection.read_all(headers)))
            except OpError as error:
                results.append((error.error, error.injectable))
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()
    assert traffic.open_connections == 0
    return results


def test_client_body_framing():
    results = asyncio.run(asyncio.wait_for(_client_run(), 10))
    assert results == [(200, b"hello"), (200, b"abcde"), ("truncated body", True)]
