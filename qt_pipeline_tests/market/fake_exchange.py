"""A fake Binance spot REST server on loopback for ccxt's real client (no internet here).

It serves the two public endpoints ccxt's ``binance`` uses for OHLCV history, in Binance's response
shapes: ``/api/v3/exchangeInfo`` replays a recorded response (``recorded/binance_exchangeInfo.json``,
trimmed to two markets) and ``/api/v3/klines`` answers like Binance (``startTime``/``endTime``/``limit``,
at most 1000 bars, 12-field arrays of strings) from a deterministic minute series that ends at
``last_ms`` (the exchange's "now"). ``faults`` queues HTTP errors (429 with Binance's -1003 body, 503) for
the next kline requests, to exercise retries; ``requests`` logs every kline query.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

RECORDED = Path(__file__).parent / "recorded"
MINUTE_MS = 60_000


def kline(symbol: str, ms: int) -> list:
    """Binance kline for the minute at ``ms`` (a smooth deterministic walk per symbol)."""
    base = 42_000.0 if symbol.startswith("BTC") else 2_300.0
    k = ms // MINUTE_MS
    o = base + (k % 97) * 0.5
    c = o + ((k % 7) - 3) * 0.25
    h = max(o, c) + 1.0
    lo = min(o, c) - 1.0
    v = 1.0 + (k % 13) * 0.1
    return [
        ms,
        f"{o:.2f}",
        f"{h:.2f}",
        f"{lo:.2f}",
        f"{c:.2f}",
        f"{v:.5f}",
        ms + MINUTE_MS - 1,
        f"{v * c:.4f}",
        10 + k % 5,
        f"{v / 2:.5f}",
        f"{v * c / 2:.4f}",
        "0",
    ]


class FakeBinance:
    def __init__(self, first_ms: int, last_ms: int):
        self.first_ms = first_ms  # first listed minute
        self.last_ms = last_ms  # newest closed minute
        self.faults: list[int] = []
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server API
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/api/v3/exchangeInfo":
                    return self._send(200, json.loads((RECORDED / "binance_exchangeInfo.json").read_text()))
                if url.path == "/api/v3/klines":
                    with outer._lock:
                        outer.requests.append(q)
                        fault = outer.faults.pop(0) if outer.faults else None
                    if fault == 429:
                        return self._send(
                            429,
                            {
                                "code": -1003,
                                "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE.",
                            },
                        )
                    if fault:
                        return self._send(
                            fault,
                            {
                                "code": -1001,
                                "msg": "Internal error; unable to process your request. Please try again.",
                            },
                        )
                    if q.get("symbol") not in ("BTCUSDT", "ETHUSDT"):
                        return self._send(400, {"code": -1121, "msg": "Invalid symbol."})
                    limit = min(int(q.get("limit", 500)), 1000)
                    start = max(int(q.get("startTime", outer.first_ms)), outer.first_ms)
                    start = -(-start // MINUTE_MS) * MINUTE_MS
                    end = min(int(q.get("endTime", outer.last_ms)), outer.last_ms)
                    rows = [kline(q["symbol"], ms) for ms in range(start, end + 1, MINUTE_MS)][:limit]
                    return self._send(200, rows)
                return self._send(404, {"code": -1, "msg": f"no route {url.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeBinance:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
