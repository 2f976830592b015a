"""A real local HTTP server answering like Neon's management API (/api/v2) for tests.

Only the third-party API is faked; the real ``qt_pipeline.storage.neon_api`` client talks to it over TCP.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeNeonApi:
    def __init__(self, api_key: str, project_id: str = "proj-test-123", endpoint_id: str = "ep-test-456"):
        self.api_key = api_key
        self.project_id = project_id
        self.endpoint_id = endpoint_id
        self.state = "active"
        self.fail_next: list[int] = []  # HTTP statuses to answer before succeeding (e.g. 503)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                outer.requests.append(
                    {
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "auth": self.headers.get("Authorization"),
                    }
                )
                if self.headers.get("Authorization") != f"Bearer {outer.api_key}":
                    return self._send(401, {"code": "", "message": "authentication required"})
                if outer.fail_next:
                    return self._send(outer.fail_next.pop(0), {"message": "temporarily unavailable"})
                base = f"/api/v2/projects/{outer.project_id}"
                if url.path == f"{base}/endpoints/{outer.endpoint_id}":
                    return self._send(
                        200,
                        {
                            "endpoint": {
                                "host": f"{outer.endpoint_id}.us-east-2.aws.neon.tech",
                                "id": outer.endpoint_id,
                                "project_id": outer.project_id,
                                "branch_id": "br-main-1",
                                "autoscaling_limit_min_cu": 0.25,
                                "autoscaling_limit_max_cu": 2,
                                "region_id": "aws-us-east-2",
                                "type": "read_write",
                                "current_state": outer.state,
                                "suspend_timeout_seconds": 300,
                                "last_active": "2026-01-01T00:00:00Z",
                            }
                        },
                    )
                if url.path == f"{base}/branches":
                    return self._send(
                        200, {"branches": [{"id": "br-main-1", "name": "main", "current_state": "ready"}]}
                    )
                if url.path == "/api/v2/consumption_history/projects":
                    return self._send(
                        200,
                        {
                            "projects": [
                                {
                                    "project_id": outer.project_id,
                                    "periods": [
                                        {
                                            "period_id": "p1",
                                            "consumption": [
                                                {
                                                    "timeframe_start": "2026-01-01T00:00:00Z",
                                                    "timeframe_end": "2026-01-02T00:00:00Z",
                                                    "active_time_seconds": 3600,
                                                    "compute_time_seconds": 900,
                                                    "written_data_bytes": 1024,
                                                    "synthetic_storage_size_bytes": 2048,
                                                }
                                            ],
                                        }
                                    ],
                                }
                            ]
                        },
                    )
                return self._send(404, {"message": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v2"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
