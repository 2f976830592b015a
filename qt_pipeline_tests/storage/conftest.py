"""The ``store`` fixture: one fresh store per backend listed in :data:`backends.BACKENDS`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qt_pipeline.storage.interface import DataStorageInterface
from qt_pipeline_tests.storage.backends import BACKENDS


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataStorageInterface]:
    s = BACKENDS[request.param](request, tmp_path)
    try:
        yield s
    finally:
        s.close()
