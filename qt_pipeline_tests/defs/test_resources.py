"""The shared StorageResource: stores are cached per process, and release() frees the DuckDB file lock."""

import subprocess
import sys

from qt_pipeline.defs.resources import StorageResource


def _other_process_can_write(path) -> bool:
    code = (
        "import duckdb, sys\n"
        f"con = duckdb.connect({str(path)!r})\n"
        "con.execute('create table if not exists probe(x int)')\n"
        "con.close()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0


def test_store_is_cached_and_release_frees_the_file(settings):
    res = StorageResource(backend="local")
    store = res.get_store()
    assert res.get_store() is store  # one long-lived connection per process
    assert not _other_process_can_write(settings.resolved_duckdb_path)  # the file is held

    res.release()
    assert _other_process_can_write(settings.resolved_duckdb_path)

    reopened = res.get_store()
    assert reopened is not store
    assert reopened.list_symbols().empty
