"""A real local HTTP server that receives webhook POSTs (the third-party chat webhook is the only fake)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.paths: list[str] = []
        self.statuses: list[int] = []  # answer these statuses first (e.g. [503]), then 200
        self.received = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    outer.posts.append(json.loads(body))
                    outer.paths.append(self.path)
                    outer.received.set()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, token: str = "T000/B000/s3cr3tt0k3n") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/{token}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
