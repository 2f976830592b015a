"""Evolution state stores: run records, one checkpoint per generation, evolved strategies.

Two implementations of one interface (:class:`EvolutionStateStore`):

* :class:`PostgresStateStore` — the central database (Neon / PostgreSQL). Tables come from the Alembic
  branch revision ``0003_evolution_state`` (``storage/postgres/migrations/versions``), created by
  :func:`qt_pipeline.storage.postgres.schema.upgrade` in the configured schema (``QT_PG_SCHEMA``).
* :class:`DuckDBStateStore` — local mode, ``QT_DATA_DIR/evolution.duckdb``; its DDL is the Alembic
  revision's text rendered for DuckDB (:func:`duckdb_ddl`), versioned by an ``evolution_schema_version`` row.

SQL is written once with ``:name`` parameters; SQLAlchemy binds them on PostgreSQL and compiles them to
DuckDB's ``?`` placeholders.

:func:`state_store_from_settings` chooses: the central store (``NEON_DATABASE_URL``, else the embedded
PostgreSQL) unless ``QT_EVOLUTION_STATE=duckdb`` — the same store whichever entry point runs evolution.

Every generation is committed in **one transaction** (checkpoint row + run record update), so a process
killed at any moment leaves the last committed generation complete and consistent. Arrays are stored as
raw float64/int64 bytes, so a resumed run continues from bit-identical values.
"""

from __future__ import annotations

import abc
import functools
import importlib
import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from qt_pipeline.evolution.ga import GAState, GenerationStats, HallOfFame
from qt_pipeline.redaction import redact

if TYPE_CHECKING:
    from qt_pipeline.storage.postgres.store import PostgresStore

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DUCKDB_SCHEMA_VERSION = 1
RUN_STATUSES = ("running", "completed", "failed")


class StateStoreError(RuntimeError):
    """A state-store operation failed (message says what, where and how to fix; never holds secrets)."""


class RunNotFoundError(StateStoreError):
    pass


class RunConfigMismatchError(StateStoreError):
    pass


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    config: dict[str, Any]
    config_hash: str
    seed: int
    status: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    last_generation: int | None
    error: str | None


@dataclass(frozen=True)
class Checkpoint:
    """One committed generation: the full :class:`GAState` plus bookkeeping."""

    run_id: str
    state: GAState
    committed_at: datetime | None = None


# --- array (de)serialisation: raw little-endian bytes, exact ----------------------------------------------
def _f8(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _i8(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<i8").tobytes()


def _arr(b: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(bytes(b), dtype=dtype).astype(dtype[1:], copy=True).reshape(shape)


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats become None (JSON has no NaN/inf)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float | np.floating):
            v = float(v)
            out[k] = v if math.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


def _best_genome_json(state: GAState) -> str:
    from qt_pipeline.evolution.genome import genome_to_dict

    return json.dumps(_json_safe(genome_to_dict(state.population[state.best_index])))


# --- DDL for local mode: the Alembic revision's text (0003_evolution_state), rendered for DuckDB -------------
def duckdb_ddl() -> list[str]:
    """``CREATE TABLE`` statements of the evolution tables for DuckDB, from the one definition in Alembic
    revision ``0003_evolution_state`` (DuckDB has no JSON-binary type and no ``ON DELETE CASCADE``)."""
    revision = importlib.import_module(
        "qt_pipeline.storage.postgres.migrations.versions.0003_evolution_state"
    )
    return list(revision.ddl(prefix="", json="VARCHAR", on_delete_cascade=""))


_GEN_COLUMNS = (
    "run_id, generation, n_individuals, n_genes, n_metrics, population, fitness, metrics, rng_state, "
    "hof_size, hof_genomes, hof_fitness, hof_metrics, hof_generation, best_fitness, mean_fitness, "
    "std_fitness, diversity, best_genome, evaluations, evaluations_total, seconds, committed_at"
)
_RUN_COLUMNS = (
    "run_id, config, config_hash, seed, status, created_at, updated_at, finished_at, last_generation, error"
)
STRATEGY_COLUMNS = (
    "run_id",
    "rank",
    "genome",
    "description",
    "generation",
    "fitness",
    "oos_fitness",
    "is_metrics",
    "oos_metrics",
    "flags",
    "created_at",
)


def _loads(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v


def _operation(what: str) -> Callable[[F], F]:
    """Run a state-store method through :meth:`EvolutionStateStore._call` (retries on the central DB)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: EvolutionStateStore, *args: Any, **kwargs: Any) -> Any:
            return self._call(what, lambda: fn(self, *args, **kwargs))

        return wrapper  # type: ignore[return-value]

    return deco


class EvolutionStateStore(abc.ABC):
    """Where runs and their per-generation checkpoints live. SQL is written once with ``:name`` params.

    Every public operation is one transaction; on the central database transient failures (connection
    lost, Neon compute waking up, serialization failures) are retried with backoff as a whole — each
    operation is idempotent or checks first."""

    kind = "abstract"

    def _call(self, what: str, thunk: Callable[[], T]) -> T:
        return thunk()

    # --- backend primitives ----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Redacted, human-readable location."""

    @abc.abstractmethod
    def setup(self) -> None:
        """Create/upgrade the tables (idempotent)."""

    @abc.abstractmethod
    @contextmanager
    def _tx(self, action: str) -> Iterator[Any]:
        """A transaction handle with ``.q(sql, params) -> list[tuple]``; commits on success."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections; safe to call twice."""

    def __enter__(self) -> EvolutionStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs ----------------------------------------------------------------------------------------------
    def _now(self) -> datetime:
        return pd.Timestamp.now(tz="UTC").to_pydatetime()

    @_operation("create an evolution run")
    def create_run(self, run_id: str, config: dict[str, Any], config_hash: str, seed: int) -> RunRecord:
        now = self._now()
        with self._tx(f"create evolution run {run_id!r}") as tx:
            found = tx.q(
                "SELECT config_hash, last_generation FROM evolution_runs WHERE run_id = :r", {"r": run_id}
            )
            # same hash and no generation yet: a retry whose first attempt had committed (idempotent)
            if found and not (found[0][0] == config_hash and found[0][1] is None):
                raise StateStoreError(f"evolution run {run_id!r} already exists in {self.location}")
            if not found:
                tx.q(
                    f"INSERT INTO evolution_runs ({_RUN_COLUMNS}) VALUES "
                    "(:run_id, :config, :config_hash, :seed, 'running', :now, :now, NULL, NULL, NULL)",
                    {
                        "run_id": run_id,
                        "config": json.dumps(config, sort_keys=True),
                        "config_hash": config_hash,
                        "seed": int(seed),
                        "now": now,
                    },
                )
        rec = self.get_run(run_id)
        assert rec is not None
        return rec

    def _record(self, row: Sequence[Any]) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            config=_loads(row[1]),
            config_hash=row[2],
            seed=int(row[3]),
            status=row[4],
            created_at=row[5],
            updated_at=row[6],
            finished_at=row[7],
            last_generation=None if row[8] is None else int(row[8]),
            error=row[9],
        )

    @_operation("read an evolution run")
    def get_run(self, run_id: str) -> RunRecord | None:
        with self._tx(f"read evolution run {run_id!r}") as tx:
            rows = tx.q(f"SELECT {_RUN_COLUMNS} FROM evolution_runs WHERE run_id = :r", {"r": run_id})
        return self._record(rows[0]) if rows else None

    @_operation("list evolution runs")
    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        with self._tx("list evolution runs") as tx:
            rows = tx.q(
                f"SELECT {_RUN_COLUMNS} FROM evolution_runs ORDER BY created_at DESC, run_id LIMIT :n",
                {"n": int(limit)},
            )
        return [self._record(r) for r in rows]

    @_operation("update an evolution run's status")
    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        now = self._now()
        finished = now if status in ("completed", "failed") else None
        with self._tx(f"mark evolution run {run_id!r} {status}") as tx:
            tx.q(
                "UPDATE evolution_runs SET status = :s, updated_at = :now, finished_at = :f, error = :e "
                "WHERE run_id = :r",
                {
                    "s": status,
                    "now": now,
                    "f": finished,
                    "e": None if error is None else redact(error)[:4000],
                    "r": run_id,
                },
            )

    # --- checkpoints ---------------------------------------------------------------------------------------
    @_operation("commit a generation checkpoint")
    def commit_generation(self, run_id: str, state: GAState) -> None:
        """Write generation ``state.generation`` and advance the run record — one transaction.

        Idempotent: re-committing the same generation (a retry after an unknown commit outcome) replaces
        the row with identical content."""
        if state.stats is None:
            raise ValueError("GAState.stats is required to commit a generation")
        n, g = state.population.shape
        hof = state.hall_of_fame
        st = state.stats
        now = self._now()
        params = {
            "run_id": run_id,
            "generation": int(state.generation),
            "n_individuals": int(n),
            "n_genes": int(g),
            "n_metrics": int(state.metrics.shape[1]),
            "population": _f8(state.population),
            "fitness": _f8(state.fitness),
            "metrics": _f8(state.metrics),
            "rng_state": json.dumps(state.rng_state),
            "hof_size": len(hof),
            "hof_genomes": _f8(hof.genomes),
            "hof_fitness": _f8(hof.fitness),
            "hof_metrics": _f8(hof.metrics),
            "hof_generation": _i8(hof.generation),
            "best_fitness": st.best_fitness,
            "mean_fitness": st.mean_fitness,
            "std_fitness": st.std_fitness,
            "diversity": st.diversity,
            "best_genome": _best_genome_json(state),
            "evaluations": int(st.evaluations),
            "evaluations_total": int(state.evaluations),
            "seconds": float(st.seconds),
            "committed_at": now,
        }
        cols = [c.strip() for c in _GEN_COLUMNS.split(",")]
        with self._tx(f"commit generation {state.generation} of evolution run {run_id!r}") as tx:
            tx.q(
                "DELETE FROM evolution_generations WHERE run_id = :r AND generation = :g",
                {"r": run_id, "g": int(state.generation)},
            )
            tx.q(
                f"INSERT INTO evolution_generations ({_GEN_COLUMNS}) VALUES ({', '.join(':' + c for c in cols)})",
                params,
            )
            tx.q(
                "UPDATE evolution_runs SET last_generation = :g, updated_at = :now, status = 'running', "
                "error = NULL, finished_at = NULL WHERE run_id = :r",
                {"g": int(state.generation), "now": now, "r": run_id},
            )

    @_operation("load a generation checkpoint")
    def load_checkpoint(self, run_id: str, generation: int | None = None) -> Checkpoint | None:
        """The checkpoint of ``generation`` (default: the last committed one), or None."""
        with self._tx(f"load checkpoint of evolution run {run_id!r}") as tx:
            if generation is None:
                rows = tx.q(
                    f"SELECT {_GEN_COLUMNS} FROM evolution_generations WHERE run_id = :r "
                    "ORDER BY generation DESC LIMIT 1",
                    {"r": run_id},
                )
            else:
                rows = tx.q(
                    f"SELECT {_GEN_COLUMNS} FROM evolution_generations WHERE run_id = :r AND generation = :g",
                    {"r": run_id, "g": int(generation)},
                )
        if not rows:
            return None
        r = rows[0]
        (
            _,
            gen,
            n,
            g,
            m,
            pop,
            fit,
            met,
            rng,
            k,
            hg,
            hf,
            hm,
            hgen,
            best,
            mean,
            std,
            div,
            _bg,
            ev,
            ev_tot,
            sec,
            committed,
        ) = r
        hof = HallOfFame(
            _arr(hg, "<f8", (k, g)), _arr(hf, "<f8", (k,)), _arr(hm, "<f8", (k, m)), _arr(hgen, "<i8", (k,))
        )
        stats = GenerationStats(
            int(gen), float(best), float(mean), float(std), float(div), int(ev), float(sec)
        )
        state = GAState(
            generation=int(gen),
            population=_arr(pop, "<f8", (n, g)),
            fitness=_arr(fit, "<f8", (n,)),
            metrics=_arr(met, "<f8", (n, m)),
            rng_state=json.loads(rng),
            hall_of_fame=hof,
            evaluations=int(ev_tot),
            stats=stats,
        )
        return Checkpoint(run_id, state, committed)

    @_operation("read generation statistics")
    def generation_stats(self, run_id: str) -> pd.DataFrame:
        """best/mean/std fitness, diversity, evaluations, seconds per committed generation."""
        with self._tx(f"read generation statistics of evolution run {run_id!r}") as tx:
            rows = tx.q(
                "SELECT generation, best_fitness, mean_fitness, std_fitness, diversity, evaluations, seconds, "
                "committed_at FROM evolution_generations WHERE run_id = :r ORDER BY generation",
                {"r": run_id},
            )
        cols = [
            "generation",
            "best_fitness",
            "mean_fitness",
            "std_fitness",
            "diversity",
            "evaluations",
            "seconds",
            "committed_at",
        ]
        return pd.DataFrame([tuple(r) for r in rows], columns=cols)

    # --- evolved strategies ------------------------------------------------------------------------------
    @_operation("save evolved strategies")
    def save_strategies(self, run_id: str, rows: Sequence[dict[str, Any]], *, complete: bool = True) -> None:
        """Replace the run's evolved strategies (hall of fame with IS/OOS metrics and flags) and, with
        ``complete``, mark the run completed — one transaction."""
        now = self._now()
        with self._tx(f"save evolved strategies of evolution run {run_id!r}") as tx:
            tx.q("DELETE FROM evolution_strategies WHERE run_id = :r", {"r": run_id})
            for row in rows:
                tx.q(
                    f"INSERT INTO evolution_strategies ({', '.join(STRATEGY_COLUMNS)}) VALUES "
                    f"({', '.join(':' + c for c in STRATEGY_COLUMNS)})",
                    {
                        "run_id": run_id,
                        "rank": int(row["rank"]),
                        "genome": json.dumps(_json_safe(row["genome"])),
                        "description": row["description"],
                        "generation": int(row["generation"]),
                        "fitness": float(row["fitness"]),
                        "oos_fitness": None if row.get("oos_fitness") is None else float(row["oos_fitness"]),
                        "is_metrics": json.dumps(_json_safe(row["is_metrics"])),
                        "oos_metrics": None
                        if row.get("oos_metrics") is None
                        else json.dumps(_json_safe(row["oos_metrics"])),
                        "flags": row.get("flags", ""),
                        "created_at": now,
                    },
                )
            if complete:
                tx.q(
                    "UPDATE evolution_runs SET status = 'completed', updated_at = :now, finished_at = :now, "
                    "error = NULL WHERE run_id = :r",
                    {"now": now, "r": run_id},
                )

    @_operation("read evolved strategies")
    def load_strategies(self, run_id: str) -> pd.DataFrame:
        with self._tx(f"read evolved strategies of evolution run {run_id!r}") as tx:
            rows = tx.q(
                f"SELECT {', '.join(STRATEGY_COLUMNS)} FROM evolution_strategies WHERE run_id = :r ORDER BY rank",
                {"r": run_id},
            )
        df = pd.DataFrame([tuple(r) for r in rows], columns=list(STRATEGY_COLUMNS))
        for c in ("genome", "is_metrics", "oos_metrics"):
            df[c] = [_loads(v) if v is not None else None for v in df[c]]
        return df

    @_operation("count evolution rows")
    def table_counts(self) -> dict[str, int]:
        """Rows per evolution table (diagnostics, tests)."""
        out = {}
        with self._tx("count evolution rows") as tx:
            for t in ("evolution_runs", "evolution_generations", "evolution_strategies"):
                out[t] = int(tx.q(f"SELECT count(*) FROM {t}", {})[0][0])
        return out


# --- DuckDB (local mode) ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _qmark(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with ``:name`` parameters compiled by SQLAlchemy to DuckDB's ``?`` placeholders, and the
    parameter names in placeholder order."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    compiled = sa.text(sql).compile(dialect=postgresql.dialect(paramstyle="qmark"))
    return str(compiled), tuple(compiled.positiontup or ())


class _DuckTx:
    def __init__(self, con: Any):
        self.con = con

    def q(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        stmt, names = _qmark(sql)
        return self.con.execute(stmt, [params[n] for n in names]).fetchall()


class DuckDBStateStore(EvolutionStateStore):
    """Local mode: tables in a DuckDB file (one writer process at a time, a DuckDB rule)."""

    kind = "duckdb"

    def __init__(self, path: str | Path):
        import duckdb

        self._path = Path(path).expanduser().resolve()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(str(self._path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StateStoreError(
                    f"evolution state file {self._path} is locked by another process (DuckDB allows one "
                    "writer per file): wait for the running evolution to finish, or use a central database "
                    "(NEON_DATABASE_URL) for concurrent access"
                ) from None
            raise StateStoreError(f"cannot open evolution state file {self._path}: {exc}") from None
        self._con.execute("SET TimeZone = 'UTC'")
        self.setup()

    @property
    def location(self) -> str:
        return str(self._path)

    def setup(self) -> None:
        with self._lock:
            con = self._con
            if con is None:
                raise StateStoreError(f"evolution state store {self._path} is closed")
            con.execute(
                "CREATE TABLE IF NOT EXISTS evolution_schema_version (version INTEGER NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL)"
            )
            rows = con.execute("SELECT max(version) FROM evolution_schema_version").fetchall()
            current = rows[0][0] or 0
            if current > DUCKDB_SCHEMA_VERSION:
                raise StateStoreError(
                    f"{self._path} has evolution schema version {current}, newer than this code's "
                    f"{DUCKDB_SCHEMA_VERSION}; upgrade qt_pipeline or use another QT_DATA_DIR"
                )
            if current < DUCKDB_SCHEMA_VERSION:
                con.execute("BEGIN TRANSACTION")
                try:
                    for ddl in duckdb_ddl():
                        con.execute(ddl)
                    con.execute(
                        "INSERT INTO evolution_schema_version VALUES (?, now())", [DUCKDB_SCHEMA_VERSION]
                    )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise

    @contextmanager
    def _tx(self, action: str) -> Iterator[_DuckTx]:
        import duckdb

        with self._lock:
            if self._con is None:
                raise StateStoreError(f"evolution state store {self._path} is closed")
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                yield _DuckTx(con)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise StateStoreError(f"{action} in {self._path} failed (rolled back): {exc}") from None
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


# --- PostgreSQL (central) -----------------------------------------------------------------------------------
class _PgTx:
    def __init__(self, conn: Any, schema: str):
        self.conn = conn
        self.schema = schema

    def q(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        import sqlalchemy as sa

        res = self.conn.execute(sa.text(sql), params)
        return [tuple(r) for r in res.fetchall()] if res.returns_rows else []


class PostgresStateStore(EvolutionStateStore):
    """Central mode: the Alembic-managed tables in the central store's schema.

    Runs on a :class:`~qt_pipeline.storage.postgres.store.PostgresStore` (its direct engine, retry policy
    and error translation); ``owns_central`` closes that store (and disposes its engines) in :meth:`close`.
    """

    kind = "postgres"

    def __init__(self, central: PostgresStore, *, owns_central: bool = False):
        self.central = central
        self.engine = central.direct_engine
        self.schema = central.schema
        self._location = central.config.location
        self._owns_central = owns_central
        self._ready = False

    @classmethod
    def from_url(cls, url: str, schema: str = "public", settings: Any = None) -> PostgresStateStore:
        """A store on ``url`` using the central store's connection handling (driver, TLS, SET LOCAL
        timeouts, pool); prefer :func:`state_store_from_settings`."""
        from qt_pipeline.config import get_settings
        from qt_pipeline.storage.postgres.store import PostgresStore

        settings = settings or get_settings()
        return cls(PostgresStore(url, settings, schema=schema), owns_central=True)

    @property
    def location(self) -> str:
        return f"{self._location} (schema {self.schema})"

    def setup(self) -> None:
        if self._ready:
            return
        from qt_pipeline.storage.postgres.schema import upgrade

        try:
            upgrade(self.engine, self.schema, timescaledb="auto")
        except Exception as exc:
            raise StateStoreError(
                f"cannot set up the evolution tables in {self.location}: {redact(exc)}; check that the "
                "database is reachable and the user may create tables in the schema"
            ) from None
        self._ready = True

    @contextmanager
    def _tx(self, action: str) -> Iterator[_PgTx]:
        self.setup()
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f'SET LOCAL search_path TO "{self.schema}"')
            yield _PgTx(conn, self.schema)

    def _call(self, what: str, thunk: Callable[[], T]) -> T:
        """``thunk`` through the central store's retry-and-translate path (one transaction, retried as a
        whole on transient errors); what remains becomes a :class:`StateStoreError`."""
        from qt_pipeline.storage.interface import StorageError

        try:
            return self.central.run_db(f"evolution state: {what}", thunk)
        except StorageError as exc:
            raise StateStoreError(f"{exc} (rolled back, nothing of it was written)") from None

    def close(self) -> None:
        if self._owns_central:
            self.central.close()


def uses_central_state(settings: Any) -> bool:
    return getattr(settings, "evolution_state", "central") != "duckdb"


def state_store_from_settings(settings: Any = None) -> EvolutionStateStore:
    """Postgres (the central store: ``NEON_DATABASE_URL`` or the embedded server, ``QT_PG_SCHEMA``) unless
    ``QT_EVOLUTION_STATE=duckdb`` (``QT_DATA_DIR/evolution.duckdb``). Tables are created on first use."""
    from qt_pipeline.config import get_settings

    settings = settings or get_settings()
    if uses_central_state(settings):
        from qt_pipeline.storage.central import open_central

        return PostgresStateStore(open_central(settings), owns_central=True)
    return DuckDBStateStore(Path(settings.data_dir) / "evolution.duckdb")
