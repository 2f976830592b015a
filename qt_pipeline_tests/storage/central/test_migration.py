"""Migration DuckDB → PostgreSQL: exact copy, ledger, resume, no-op second run, filters, faults."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.migration import (
    day_bounds,
    migrate_all,
    migrate_partition,
    parse_partition_key,
    partition_key,
    plan_batches,
    read_ledger,
)
from qt_pipeline_tests.storage.central.helpers import make_bars, sql, table_fingerprint


def test_partition_key_round_trip_and_bad_key() -> None:
    assert partition_key("BTCUSD", date(2024, 1, 3)) == "2024-01-03|BTCUSD"
    assert parse_partition_key("2024-01-03|BRK.B") == ("BRK.B", date(2024, 1, 3))
    with pytest.raises(ValueError, match="expected 'YYYY-MM-DD|SYMBOL'"):
        parse_partition_key("BTCUSD-2024")


def test_plan_batches_groups_contiguous_days_under_the_row_budget() -> None:
    sd = pd.DataFrame(
        {
            "symbol": ["A", "B", "A", "B", "A", "A"],
            "day": [date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 2), date(2024, 1, 3),
                    date(2024, 1, 9)],
            "rows": [10, 10, 10, 10, 10, 10],
        }
    )  # fmt: skip
    batches = plan_batches(sd, batch_rows=40)
    # day 1+2 (40 rows) | day 3 (budget) | day 9 (gap → new window)
    assert [(b.start.date(), b.end.date(), b.rows) for b in batches] == [
        (date(2024, 1, 1), date(2024, 1, 3), 40),
        (date(2024, 1, 3), date(2024, 1, 4), 10),
        (date(2024, 1, 9), date(2024, 1, 10), 10),
    ]
    assert sum(len(b.days) for b in batches) == len(sd)


def test_migrate_all_copies_exactly_and_fills_the_ledger(local, central, pg_schema) -> None:
    bars = make_bars(("BTCUSD", "ETHUSD", "SOLUSD"), days=3, per_day=40)
    local.write_bars(bars)
    seen: list[tuple[int, int, str]] = []
    summary = migrate_all(
        local, central, progress=lambda d, t, st: seen.append((d, t, st.partition_key)), batch_rows=100
    )
    assert (summary.migrated, summary.skipped, summary.rows) == (9, 0, len(bars))
    assert summary.batches >= 2 and summary.bytes > 0 and summary.rows_per_s > 0
    assert [d for d, _, _ in seen] == list(range(1, 10)) and {t for _, t, _ in seen} == {9}
    pd.testing.assert_frame_equal(central.read_range(), local.read_range())  # bit-exact floats
    ledger = read_ledger(central)
    assert len(ledger) == 9
    for sym in ("BTCUSD", "ETHUSD", "SOLUSD"):
        for d in (date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)):
            lo, hi = day_bounds(d)
            assert ledger[partition_key(sym, d)] == frame_checksum(local.read_bars(sym, lo, hi))


def test_second_run_is_a_no_op(local, central, pg_schema) -> None:
    url, schema = pg_schema
    local.write_bars(make_bars(days=2, per_day=25))
    first = migrate_all(local, central)
    before = table_fingerprint(url, schema)
    ledger_before = sql(url, f'SELECT partition_key, migrated_at FROM "{schema}".migration_ledger ORDER BY 1')
    second = migrate_all(local, central)
    assert (first.migrated, second.migrated, second.skipped, second.rows) == (4, 0, 4, 0)
    assert table_fingerprint(url, schema) == before  # no row inserted or rewritten (xmin unchanged)
    assert (
        sql(url, f'SELECT partition_key, migrated_at FROM "{schema}".migration_ledger ORDER BY 1')
        == ledger_before
    )


def test_changed_local_day_is_the_only_one_copied_again(local, central) -> None:
    bars = make_bars(days=3, per_day=20)
    local.write_bars(bars)
    migrate_all(local, central)
    lo, hi = day_bounds(date(2024, 1, 3))
    changed = local.read_bars("ETHUSD", lo, hi)
    changed.loc[5, "close"] = changed.loc[5, "close"] + 1e-9
    local.write_bars(changed)
    again = migrate_all(local, central)
    assert again.migrated == 1 and again.skipped == 5
    assert [p.partition_key for p in again.partitions if not p.skipped] == ["2024-01-03|ETHUSD"]
    pd.testing.assert_frame_equal(central.read_bars("ETHUSD", lo, hi), local.read_bars("ETHUSD", lo, hi))


def test_filters_symbols_and_range(local, central) -> None:
    local.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=4, per_day=10))
    s = migrate_all(local, central, symbols=["ethusd"], start=date(2024, 1, 3), end=date(2024, 1, 5))
    assert sorted(p.partition_key for p in s.partitions) == ["2024-01-03|ETHUSD", "2024-01-04|ETHUSD"]
    sd = central.symbol_days()
    assert list(zip(sd["symbol"], sd["day"], strict=True)) == [
        ("ETHUSD", date(2024, 1, 3)),
        ("ETHUSD", date(2024, 1, 4)),
    ]
    with pytest.raises(ValueError, match="must be before end"):
        migrate_all(local, central, start=date(2024, 1, 5), end=date(2024, 1, 5))


def test_migrate_partition_copy_then_skip_then_forced_upsert(local, central) -> None:
    local.write_bars(make_bars(("BTCUSD",), days=1, per_day=15))
    first = migrate_partition(local, central, "BTCUSD", date(2024, 1, 2))
    assert not first.skipped and first.rows == 15 and first.method == "copy"
    again = migrate_partition(local, central, "BTCUSD", "2024-01-02")
    assert again.skipped and again.rows == 15 and again.checksum == first.checksum
    forced = migrate_partition(local, central, "BTCUSD", date(2024, 1, 2), resume=False)
    assert not forced.skipped and forced.method == "upsert"
    assert len(central.read_bars("BTCUSD")) == 15
    empty = migrate_partition(local, central, "BTCUSD", date(2023, 12, 31))
    assert (empty.rows, empty.checksum, empty.skipped) == (0, 0, False)
