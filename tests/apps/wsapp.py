"""
A real WebSocket app for tests (the `websockets` package, asyncio), on a TCP port or a unix
socket; or, with --raw, a plain TCP echo server like a VNC server behind websockify.

    python wsapp.py --port 8000            (127.0.0.1)
    python wsapp.py --unix-socket /path/app.sock
    python wsapp.py --raw --port 5900      (plain TCP: a banner line, then an echo)

A plain HTTP GET gets 200 "ok" (readiness checks). WebSocket paths:

  /echo            echo every message
  /info            first a JSON message (path, headers, subprotocol, query), then echo
  /refuse          HTTP 403 with a body and a cookie, no upgrade
  /close?code=C&reason=R   after the first message, close with C and R
  /fragments       answer each message with a fragmented text message ("part1-part2-part3")
  /die             on the first message, SIGKILL this process (an abrupt death)
  /flood?size=N&count=K    send K binary messages of N bytes as fast as the peer takes them
  /send?size=N     send one binary message of N bytes, then echo
  /stall?seconds=S stop reading for S seconds, then drop the connection (no close frame)
  /flood-status    one JSON message: {"sent": messages the last /flood has sent so far}
  /last-close      one JSON message: the close code and reason the last closed
                   connection received from its client

Subprotocols: "superchat" is chosen when offered, else "chat", else none. Every handshake
response sets two cookies (ws_a at /, ws_b at /sub) and X-Ws-App: yes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve, unix_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

LAST_CLOSE: dict = {}
FLOODED = {"sent": 0}

BANNER = b"RFB 003.008\n"


def process_request(connection, request):
    if "upgrade" not in request.headers.get("Connection", "").lower():
        return connection.respond(200, "ok\n")
    if urlsplit(request.path).path == "/refuse":
        headers = Headers()
        headers["Content-Type"] = "text/plain"
        headers["Set-Cookie"] = "refused=1; Path=/"
        headers["X-Refused"] = "yes"
        body = b"go away: no WebSockets for you\n"
        headers["Content-Length"] = str(len(body))
        return Response(403, "Forbidden", headers, body)
    return None


def process_response(connection, request, response):
    if response.status_code == 101:
        response.headers["Set-Cookie"] = "ws_a=1; Path=/"
        response.headers["Set-Cookie"] = "ws_b=2; Path=/sub; HttpOnly"
        response.headers["X-Ws-App"] = "yes"
    return response


def select_subprotocol(connection, offered):
    for choice in ("superchat", "chat"):
        if choice in offered:
            return choice
    return None


async def handler(ws) -> None:
    url = urlsplit(ws.request.path)
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    path = url.path
    try:
        if path == "/info":
            headers: dict = {}
            for name, value in ws.request.headers.raw_items():
                headers.setdefault(name.lower(), []).append(value)
            await ws.send(json.dumps({"path": ws.request.path, "headers": headers,
                                      "subprotocol": ws.subprotocol}))
        elif path == "/last-close":
            await ws.send(json.dumps(LAST_CLOSE))
            return
        elif path == "/flood-status":
            await ws.send(json.dumps(FLOODED))
            return
        elif path == "/close":
            await ws.recv()
            await ws.close(int(query.get("code", 1000)), query.get("reason", ""))
            return
        elif path == "/flood":
            payload = os.urandom(int(query["size"]))
            FLOODED["sent"] = 0
            for _ in range(int(query["count"])):
                await ws.send(payload)
                FLOODED["sent"] += 1
            await ws.close()
            return
        elif path == "/stall":
            ws.transport.pause_reading()
            await asyncio.sleep(float(query["seconds"]))
            ws.transport.abort()
            return
        elif path == "/send":
            await ws.send(os.urandom(int(query["size"])))
        async for message in ws:
            if path == "/die":
                os.kill(os.getpid(), signal.SIGKILL)
            if path == "/fragments":
                await ws.send(["part1-", "part2-", "part3"])
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        if path not in ("/last-close", "/flood-status"):
            received = ws.protocol.close_rcvd
            LAST_CLOSE.clear()
            LAST_CLOSE.update(path=path, code=received.code if received else None,
                              reason=received.reason if received else None)


async def raw_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(BANNER)
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(args) -> None:
    if args.raw:
        if args.unix_socket:
            server = await asyncio.start_unix_server(raw_echo, args.unix_socket)
        else:
            server = await asyncio.start_server(raw_echo, "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()
        return
    options = dict(process_request=process_request, process_response=process_response,
                   select_subprotocol=select_subprotocol, ping_interval=None, max_size=None,
                   max_queue=4, server_header=None)
    if args.unix_socket:
        server = unix_serve(handler, args.unix_socket, **options)
    else:
        server = serve(handler, "127.0.0.1", args.port, **options)
    async with server:
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix-socket")
    parser.add_argument("--raw", action="store_true")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main(parser.parse_args()))
