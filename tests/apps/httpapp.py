"""
A small real HTTP app for tests, stdlib only, on a TCP port or a unix socket.

    python httpapp.py --port 8000            (127.0.0.1)
    python httpapp.py --unix-socket /path/app.sock
    options: --startup-delay S   sleep before listening
             --exit-after S      exit after S seconds, with --exit-status (default 1)
             --exit-code N       exit with N right away (before listening)
             --grandchild FILE   spawn a `sleep` grandchild, write its pid to FILE
             --ignore-term       ignore SIGTERM (tests the SIGKILL escalation)
             --print TEXT        print TEXT on stdout and stderr at start

Routes: /echo (method, path, headers, body length, sha256), /bytes/N (N bytes, streamed:
64 KiB block i is the 4-byte big-endian i, repeated; tests.helpers.byte_pattern makes them),
/chunked?n=K (a chunked response),
/sse?n=K&interval=S (server-sent events), /redirect?to=X (302), /slow?s=S,
/set-cookie, /status/N, /pid, anything else: 200 "hello from httpapp".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json" if body.startswith(b"{") else "text/plain")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    digest.update(chunk)
                    total += len(chunk)
                    remaining -= len(chunk)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                digest.update(chunk)
                total += len(chunk)
                remaining -= len(chunk)
        return total, digest.hexdigest()

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path.endswith("/echo") or path == "/echo":
            length, sha = self._read_body()
            body = json.dumps({
                "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "header_list": [[k.lower(), v] for k, v in self.headers.items()],
                "body_length": length, "body_sha256": sha,
            }).encode()
            self._send(200, body)
        elif path.startswith("/bytes/"):
            size = int(path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            index = 0
            while size:
                piece = index.to_bytes(4, "big") * 16384
                piece = piece[: min(size, len(piece))]
                self.wfile.write(piece)
                size -= len(piece)
                index += 1
        elif path == "/sse":
            count, interval = int(query.get("n", 3)), float(query.get("interval", 0.5))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(count):
                self.wfile.write(f"data: event {i}\n\n".encode())
                self.wfile.flush()
                time.sleep(interval)
            self.close_connection = True
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(query.get("n", 3))):
                piece = f"piece {i};".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/redirect":
            self._send(302, b"", {"Location": query.get("to", "/")})
        elif path == "/slow":
            time.sleep(float(query.get("s", 5)))
            self._send(200, b"slow done")
        elif path == "/set-cookie":
            self.send_response(200)
            self.send_header("Set-Cookie", "a=1; Path=/")
            self.send_header("Set-Cookie", "b=2; Path=/sub; HttpOnly")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"status")
        elif path == "/pid":
            self._send(200, str(os.getpid()).encode())
        elif path == "/die":
            # Die in the middle of a response: headers and part of the body, then exit.
            self.send_response(200)
            self.send_header("Content-Length", query.get("size", "1000000"))
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            os._exit(3)
        else:
            self._read_body()
            self._send(200, b"hello from httpapp")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = handle_any

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "18")
        self.end_headers()


def _quiet_about_gone_clients(server_class):
    """A client that goes away mid-answer (a readiness probe, a test that stops reading) is
    not an error of this app: no traceback for it, which tests would read as a crash."""
    report = server_class.handle_error

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        report(self, request, client_address)

    server_class.handle_error = handle_error
    return server_class


@_quiet_about_gone_clients
class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256

    def get_request(self):
        request, _ = super().get_request()
        return request, ("unix", 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix-socket")
    parser.add_argument("--startup-delay", type=float, default=0)
    parser.add_argument("--exit-after", type=float)
    parser.add_argument("--exit-code", type=int)
    parser.add_argument("--exit-status", type=int, default=1)
    parser.add_argument("--grandchild")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--print")
    args = parser.parse_args()
    if args.print:
        print(args.print, flush=True)
        print(args.print, file=sys.stderr, flush=True)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.exit_code is not None:
        sys.exit(args.exit_code)
    if args.grandchild:
        child = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
        with open(args.grandchild, "w") as handle:
            handle.write(str(child.pid))
    time.sleep(args.startup_delay)
    if args.exit_after is not None:
        threading.Timer(args.exit_after, lambda: os._exit(args.exit_status)).start()
    if args.unix_socket:
        server = UnixHTTPServer(args.unix_socket, Handler)
    else:
        server_class = _quiet_about_gone_clients(ThreadingHTTPServer)
        server_class.daemon_threads = True
        server_class.request_queue_size = 256  # the stdlib default of 5 drops bursts
        server = server_class(("127.0.0.1", args.port), Handler)
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.serve_forever()


if __name__ == "__main__":
    main()
