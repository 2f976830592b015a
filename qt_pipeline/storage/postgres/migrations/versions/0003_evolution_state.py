"""Evolution state: run records, per-generation checkpoints, evolved strategies (hall of fame + OOS report).

Revision ID: 0003_evolution_state
Revises: 0001_central_store
Create Date: 2026-11-28

Independent branch ("evolution") off the central-store base. The DDL text (:data:`EVOLUTION_TABLES`) is
also what the local DuckDB state store (:mod:`qt_pipeline.evolution.state`) creates: one definition.

Arrays (population, fitness, metrics, hall of fame) are stored as raw little-endian float64/int64 bytes
so a resumed run continues from bit-identical values; the shapes are stored beside them.
"""

from __future__ import annotations

from alembic import op

from qt_pipeline.storage.postgres.schema import qi, schema_name

revision = "0003_evolution_state"
down_revision = "0001_central_store"
branch_labels = ("evolution",)
depends_on = None


# The evolution tables, written once: this revision renders them for PostgreSQL, and the local (DuckDB)
# state store renders the same text (``ddl(prefix="", json="VARCHAR", on_delete_cascade="")``). A change
# here needs a new revision (and a DuckDB schema version bump in qt_pipeline.evolution.state).
EVOLUTION_TABLES: tuple[str, ...] = (
    """CREATE TABLE {prefix}evolution_runs (
    run_id text PRIMARY KEY,
    config {json} NOT NULL,
    config_hash text NOT NULL,
    seed bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    last_generation integer,
    error text
)""",
    """CREATE TABLE {prefix}evolution_generations (
    run_id text NOT NULL REFERENCES {prefix}evolution_runs (run_id){on_delete_cascade},
    generation integer NOT NULL CHECK (generation >= 0),
    n_individuals integer NOT NULL,
    n_genes integer NOT NULL,
    n_metrics integer NOT NULL,
    population bytea NOT NULL,
    fitness bytea NOT NULL,
    metrics bytea NOT NULL,
    rng_state text NOT NULL,
    hof_size integer NOT NULL,
    hof_genomes bytea NOT NULL,
    hof_fitness bytea NOT NULL,
    hof_metrics bytea NOT NULL,
    hof_generation bytea NOT NULL,
    best_fitness double precision NOT NULL,
    mean_fitness double precision NOT NULL,
    std_fitness double precision NOT NULL,
    diversity double precision NOT NULL,
    best_genome {json} NOT NULL,
    evaluations integer NOT NULL,
    evaluations_total bigint NOT NULL,
    seconds double precision NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, generation)
)""",
    """CREATE TABLE {prefix}evolution_strategies (
    run_id text NOT NULL REFERENCES {prefix}evolution_runs (run_id){on_delete_cascade},
    rank integer NOT NULL,
    genome {json} NOT NULL,
    description text NOT NULL,
    generation integer NOT NULL,
    fitness double precision NOT NULL,
    oos_fitness double precision,
    is_metrics {json} NOT NULL,
    oos_metrics {json},
    flags text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, rank)
)""",
)


def ddl(*, prefix: str, json: str, on_delete_cascade: str) -> list[str]:
    """The ``CREATE TABLE`` statements with ``prefix`` (``"schema".`` or empty) and dialect words."""
    return [t.format(prefix=prefix, json=json, on_delete_cascade=on_delete_cascade) for t in EVOLUTION_TABLES]


def upgrade() -> None:
    for stmt in ddl(prefix=f"{qi(schema_name())}.", json="jsonb", on_delete_cascade=" ON DELETE CASCADE"):
        op.execute(stmt)


def downgrade() -> None:
    s = qi(schema_name())
    op.execute(f"DROP TABLE IF EXISTS {s}.evolution_strategies")
    op.execute(f"DROP TABLE IF EXISTS {s}.evolution_generations")
    op.execute(f"DROP TABLE IF EXISTS {s}.evolution_runs")
