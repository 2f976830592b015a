"""The alert webhook URL is a secret: the image's entry point reads it from QT_ALERT_WEBHOOK_URL_FILE, and
the configured URL (or its token-bearing path/query, however a client re-prints it) never shows in text
that goes through redact(), including the error of a refused delivery."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from qt_pipeline.config import Settings

ENTRY = Path(__file__).resolve().parents[2] / "infra" / "docker-entrypoint.sh"
TOKEN = "T0ABC/B0DEF/wEbHoOkT0k3n9"


def test_entrypoint_reads_the_webhook_url_from_a_secret_file(tmp_path):
    secret = tmp_path / "webhook"
    secret.write_text(f"https://hooks.example.com/services/{TOKEN}")
    env = {"PATH": "/usr/bin:/bin", "QT_ALERT_WEBHOOK_URL_FILE": str(secret)}
    out = subprocess.run(["sh", str(ENTRY), "env"], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f"QT_ALERT_WEBHOOK_URL=https://hooks.example.com/services/{TOKEN}" in lines
    assert not any(line.startswith("QT_ALERT_WEBHOOK_URL_FILE=") for line in lines)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_configured_webhook_url_is_redacted_in_every_spelling(settings):
    from qt_pipeline.monitoring.alerts import Alert, AlertError, post_alert
    from qt_pipeline.redaction import redact

    port = _closed_port()
    url = f"http://127.0.0.1:{port}/services/{TOKEN}?channel=ops-Qz7"
    Settings(QT_ALERT_WEBHOOK_URL=url)  # loading the settings registers it
    for text in (
        f"POST {url} failed",
        f"POST http://localhost:{port}/services/{TOKEN}/ failed",  # another host spelling, trailing slash
        f"GET /services/{TOKEN} 404",  # a server log prints the path only
        "query was channel=ops-Qz7",
    ):
        masked = redact(text)
        assert TOKEN not in masked and "ops-Qz7" not in masked, masked
    assert redact("GET /hooks 200") == "GET /hooks 200"  # ordinary text stays readable

    alert = Alert(kind="run_failure", name="job", what="x", repair="qt run", run_id="r1", details={})
    with pytest.raises(AlertError) as err:
        post_alert(url, alert, attempts=1, timeout_s=2)
    assert TOKEN not in str(err.value) and "QT_ALERT_WEBHOOK_URL" in str(err.value)
