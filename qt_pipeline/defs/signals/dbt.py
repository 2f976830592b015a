"""dagster-dbt wiring of ``dbt_timescale/``: every dbt model is an asset downstream of the central bars
asset (the dbt source ``central.ohlcv_bars``), every dbt test an asset check.

* The project lives at the repository top level (``QT_DBT_PROJECT_DIR`` overrides). Its manifest is made on
  install (``./dev.sh`` runs ``dbt parse`` when the project changed); if it is missing anyway (a fresh
  clone imported without dev.sh) it is made here once, so the code location always loads.
* ``dbt`` is the executable next to this Python interpreter (the project's virtualenv): nothing needs to be
  activated or on PATH. Its version is then the installed dbt-core's, read from the package metadata
  (:class:`ProjectDbtCliResource`) instead of dagster-dbt's ``dbt --version`` before every invocation.
* The connection is the central store's (``NEON_DATABASE_URL`` or the embedded PostgreSQL), handed to dbt
  through environment variables read by ``dbt_timescale/profiles.yml``; the password goes in a
  ``DBT_ENV_SECRET_`` variable, which dbt scrubs from its logs.
"""

import contextlib
import importlib.metadata
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from packaging import version

from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.schedules import utc_schedule
from qt_pipeline.defs.signals.keys import CENTRAL_BARS_KEY, DBT_GROUP

REPO_ROOT = Path(__file__).resolve().parents[3]


def dbt_project_dir() -> Path:
    return Path(os.environ.get("QT_DBT_PROJECT_DIR") or REPO_ROOT / "dbt_timescale").resolve()


def dbt_executable() -> str:
    """The ``dbt`` installed with this interpreter (the venv's bin/), else one on PATH."""
    here = Path(sys.executable).parent / ("dbt.exe" if os.name == "nt" else "dbt")
    if here.exists():
        return str(here)
    found = shutil.which("dbt")
    if found is None:
        raise RuntimeError(
            f"dbt is not installed next to {sys.executable} nor on PATH; run ./dev.sh (it installs dbt-core "
            "and dbt-postgres from pyproject.toml)"
        )
    return found


DBT_PROJECT = DbtProject(project_dir=dbt_project_dir())
if not DBT_PROJECT.manifest_path.exists() or os.environ.get("DAGSTER_IS_DEV_CLI"):
    # dev.sh prepares it on install; `dagster dev` re-parses on start (prepare_if_dev semantics)
    DBT_PROJECT.preparer.prepare(DBT_PROJECT)


class CentralBarsTranslator(DagsterDbtTranslator):
    """The dbt source ``central.ohlcv_bars`` is the central bars asset; models go in the ``rollups`` group."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if (
            dbt_resource_props.get("resource_type") == "source"
            and dbt_resource_props.get("name") == "ohlcv_bars"
        ):
            return CENTRAL_BARS_KEY
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return DBT_GROUP


TRANSLATOR = CentralBarsTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def _current_database(store: Any) -> str | None:
    import sqlalchemy as sa

    with store.engine.connect() as conn:
        return conn.execute(sa.text("select current_database()")).scalar()


def dbt_connection_env(store: Any) -> dict[str, str]:
    """Environment for profiles.yml from a PostgresStore: its direct URL (DDL-capable) and schema."""
    url = store.config.direct_url
    query = dict(url.query)
    sslmode = store.config.sslmode or query.get("sslmode") or "prefer"
    return {
        "QT_DBT_HOST": str(url.host or "127.0.0.1"),
        "QT_DBT_PORT": str(url.port or 5432),
        "QT_DBT_USER": str(url.username or "postgres"),
        "DBT_ENV_SECRET_QT_DBT_PASSWORD": str(url.password or ""),
        # dbt qualifies every relation with the database: use the server's own name for it (a proxy or
        # pooler may accept another name in the URL, and Postgres refuses "cross-database" references)
        "QT_DBT_DBNAME": _current_database(store) or str(url.database or "postgres"),
        "QT_DBT_SCHEMA": store.schema,
        "QT_DBT_SSLMODE": str(sslmode if isinstance(sslmode, str) else sslmode[0]),
    }


@contextlib.contextmanager
def dbt_env(store: Any) -> Iterator[None]:
    """Set the dbt connection variables for the duration of one dbt invocation (restored after)."""
    env = dbt_connection_env(store)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path,
    project=DBT_PROJECT,
    dagster_dbt_translator=TRANSLATOR,
    name="dbt_timescale",
)
def dbt_timescale_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, central_store: CentralStoreResource
) -> Iterator[Any]:
    """``dbt build`` of the selected models (incremental; tests become asset checks)."""
    store = central_store.get_store()
    store.ensure_schema()  # a fresh database: create ohlcv_bars before dbt reads it
    with dbt_env(store):
        yield from dbt.cli(["build"], context=context).stream()


class ProjectDbtCliResource(DbtCliResource):
    """dagster-dbt's ``DbtCliResource``, except how it learns dbt's version: dagster-dbt runs
    ``dbt --version`` once per resource instance, i.e. before every dbt invocation of a run (~3.5 s on the
    2-core VM: it imports dbt and asks PyPI for the latest release, over the network). When the executable
    is this interpreter's own ``dbt`` (:func:`dbt_executable`), its version is the installed dbt-core's,
    read from the package metadata; any other executable is still asked."""

    @cached_property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                return version.parse(importlib.metadata.version("dbt-core"))
        return DbtCliResource._cli_version.func(self)  # type: ignore[attr-defined]


def dbt_resource() -> DbtCliResource:
    # (DbtCliResource.__init__ takes a DbtProject; mypy's pydantic plugin sees only the str field)
    return ProjectDbtCliResource(project_dir=DBT_PROJECT, dbt_executable=dbt_executable())  # type: ignore[arg-type]


dbt_rollups_job = dg.define_asset_job(
    "dbt_rollups_job",
    selection=dg.AssetSelection.assets(dbt_timescale_models),
    description="dbt build of dbt_timescale: rollups, returns, correlations (incremental) and their tests.",
)

dbt_rollups_schedule = utc_schedule(
    dbt_rollups_job,
    "10 * * * *",
    "Hourly incremental dbt build (late bars within late_window_hours are folded in).",
)
