"""A real local webhook receiver for the delivery tests: an http.server in a thread that records every
alert it takes, can answer with an error status or slowly, and can go down after N alerts."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Start with `start()`; `received` lists (Idempotency-Key, body) of every alert answered 2xx."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.status = 200
        self.delay_s = 0.0
        self.down_after: int | None = None  # go down once this many alerts were taken
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status = receiver.status
                if status < 300:
                    with receiver._lock:
                        receiver.received.append((self.headers["Idempotency-Key"], body))
                        taken = len(receiver.received)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"ok" if status < 300 else b"receiver says no")
                except BrokenPipeError:  # the client gave up waiting (the slow case)
                    return
                if status < 300 and receiver.down_after is not None and taken >= receiver.down_after:
                    receiver.down_after = None
                    threading.Thread(target=receiver.stop).start()  # stopped mid-stream

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def running(self) -> bool:
        return self._server is not None

    def keys(self) -> list[str]:
        with self._lock:
            return [key for key, _ in self.received]
