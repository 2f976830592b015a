"""The Neon management API client against a real local HTTP server that answers like the documented API."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from qt_pipeline.storage.neon_api import NeonApiClient, NeonApiError
from qt_pipeline_tests.storage.hybrid.neon_api_server import FakeNeonApi

KEY = "neon-key-s3cr3t-abcdef0123456789"


@pytest.fixture
def api():
    server = FakeNeonApi(KEY)
    yield server
    server.close()


def test_endpoint_state_branches_consumption_with_bearer_key(api, caplog):
    caplog.set_level(logging.DEBUG)
    with NeonApiClient(KEY, base_url=api.base_url, max_wait_s=0.05) as client:
        ep = client.endpoint(api.project_id, api.endpoint_id)
        assert ep.current_state == "active" and ep.suspend_timeout_seconds == 300 and ep.min_cu == 0.25
        api.state = "idle"
        assert client.endpoint(api.project_id, api.endpoint_id).is_suspended
        assert [b["name"] for b in client.branches(api.project_id)] == ["main"]
        rows = client.consumption(
            api.project_id, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
        )
        assert rows[0]["compute_time_seconds"] == 900
    assert all(r["auth"] == f"Bearer {KEY}" for r in api.requests)
    assert api.requests[-1]["query"]["granularity"] == ["daily"]
    assert KEY not in caplog.text


def test_transient_errors_are_retried(api, caplog):
    caplog.set_level(logging.DEBUG)
    api.fail_next = [503, 429]
    with NeonApiClient(KEY, base_url=api.base_url, attempts=3, max_wait_s=0.05) as client:
        assert client.endpoint(api.project_id, api.endpoint_id).current_state == "active"
    assert len(api.requests) == 3
    assert KEY not in caplog.text


def test_bad_key_and_unknown_endpoint_say_what_to_check(api):
    with NeonApiClient("wrong-key-0000", base_url=api.base_url, max_wait_s=0.05) as client:
        with pytest.raises(NeonApiError, match="NEON_API_KEY") as info:
            client.endpoint(api.project_id, api.endpoint_id)
        assert info.value.status == 401
    assert len(api.requests) == 1  # 401 is not retried
    with NeonApiClient(KEY, base_url=api.base_url, max_wait_s=0.05) as client:
        with pytest.raises(NeonApiError, match="NEON_ENDPOINT_ID"):
            client.endpoint(api.project_id, "ep-nope")
        assert KEY not in repr(client.__dict__.get("base_url"))


def test_unreachable_api_error_is_redacted(api):
    url = api.base_url
    api.close()
    client = NeonApiClient(KEY, base_url=url, attempts=2, max_wait_s=0.05, timeout_s=1)
    with client, pytest.raises(NeonApiError, match="NEON_API_URL") as info:
        client.endpoint(api.project_id, api.endpoint_id)
    assert KEY not in str(info.value)
