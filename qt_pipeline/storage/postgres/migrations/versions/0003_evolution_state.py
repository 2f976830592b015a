"""Evolution state: run records, per-generation checkpoints, evolved strategies (hall of fame + OOS report).

Revision ID: 0003_evolution_state
Revises: 0001_central_store
Create Date: 2026-11-28

Independent branch ("evolution") off the central-store base. The DuckDB equivalent (local mode) lives in
:mod:`qt_pipeline.evolution.state` (``DUCKDB_DDL``); keep the two in step.

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


def upgrade() -> None:
    s = qi(schema_name())
    op.execute(
        f"""
        CREATE TABLE {s}.evolution_runs (
            run_id text PRIMARY KEY,
            config jsonb NOT NULL,
            config_hash text NOT NULL,
            seed bigint NOT NULL,
            status text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            last_generation integer,
            error text
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE {s}.evolution_generations (
            run_id text NOT NULL REFERENCES {s}.evolution_runs (run_id) ON DELETE CASCADE,
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
            best_genome jsonb NOT NULL,
            evaluations integer NOT NULL,
            evaluations_total bigint NOT NULL,
            seconds double precision NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, generation)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE {s}.evolution_strategies (
            run_id text NOT NULL REFERENCES {s}.evolution_runs (run_id) ON DELETE CASCADE,
            rank integer NOT NULL,
            genome jsonb NOT NULL,
            description text NOT NULL,
            generation integer NOT NULL,
            fitness double precision NOT NULL,
            oos_fitness double precision,
            is_metrics jsonb NOT NULL,
            oos_metrics jsonb,
            flags text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, rank)
        )
        """
    )


def downgrade() -> None:
    s = qi(schema_name())
    op.execute(f"DROP TABLE IF EXISTS {s}.evolution_strategies")
    op.execute(f"DROP TABLE IF EXISTS {s}.evolution_generations")
    op.execute(f"DROP TABLE IF EXISTS {s}.evolution_runs")
