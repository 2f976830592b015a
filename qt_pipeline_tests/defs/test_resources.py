"""The store resources: Dagster's lifecycle opens and closes them (no module-level cache), fields are
visible config read with EnvVar, and tests pass resources instead of patching the environment."""

import subprocess
import sys

import dagster as dg

from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.resources import LocalStoreResource, StorageResource


def _other_process_can_write(path) -> bool:
    code = (
        "import duckdb, sys\n"
        f"con = duckdb.connect({str(path)!r})\n"
        "con.execute('create table if not exists probe(x int)')\n"
        "con.close()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0


def test_resource_reuses_its_store_and_release_frees_the_file(settings):
    res = LocalStoreResource()
    store = res.get_store()
    assert res.get_store() is store  # one connection per resource and execution
    assert LocalStoreResource().get_store() is not store  # nothing shared at module level
    assert not _other_process_can_write(settings.resolved_duckdb_path)  # the file is held

    res.release()
    assert _other_process_can_write(settings.resolved_duckdb_path)
    reopened = res.get_store()
    assert reopened is not store and reopened.list_symbols().empty
    res.release()


def test_dagster_closes_the_store_at_the_end_of_the_run(settings, tmp_path):
    path = tmp_path / "other.duckdb"

    @dg.asset
    def writes(local_store: LocalStoreResource) -> None:
        local_store.get_store()  # opens the file in this run

    assert dg.materialize(
        [writes], resources={"local_store": LocalStoreResource(duckdb_path=str(path))}
    ).success
    assert path.exists() and _other_process_can_write(path)  # teardown closed it: no lock left behind


def test_fields_come_from_envvars_and_show_as_config(settings, pg_schema, monkeypatch):
    url, schema = pg_schema
    monkeypatch.setenv("QT_TEST_CENTRAL_URL", url)

    @dg.asset
    def where(central_store: CentralStoreResource) -> dg.MaterializeResult:
        store = central_store.get_store()
        return dg.MaterializeResult(metadata={"schema": store.schema, "pool": store.settings.pg_pool_size})

    res = CentralStoreResource(database_url=dg.EnvVar("QT_TEST_CENTRAL_URL"), pg_schema=schema, pool_size=2)
    result = dg.materialize([where], resources={"central_store": res})
    md = result.asset_materializations_for_node("where")[0].metadata
    assert md["schema"].value == schema and md["pool"].value == 2
    # the code location's resources reference the variables instead of holding their values
    monkeypatch.setenv("NEON_DATABASE_URL", url)
    from qt_pipeline.defs.central.resources import central_store_resource

    configured = central_store_resource()
    assert isinstance(configured.database_url, dg.EnvVar) and configured.database_url.env_var_name == (
        "NEON_DATABASE_URL"
    )
    assert StorageResource(backend="local").resolved_backend() == "local"
