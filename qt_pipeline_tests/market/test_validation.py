"""validate_bars case by case: exact reasons and lines, good rows of the same batch accepted."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.market.contract import (
    BAR_COLUMNS,
    BAR_DTYPES,
    REJECT_COLUMNS,
    REJECT_DTYPES,
    REJECT_KEY,
    RejectReason,
)
from qt_pipeline.market.validation import validate_bars

NOW = pd.Timestamp("2024-06-01T00:00:00Z")
GOOD = {
    "symbol": "BTCUSD",
    "timestamp": "2024-01-02T00:00:00Z",
    "open": "100",
    "high": "101",
    "low": "99",
    "close": "100.5",
    "volume": "12.5",
    "vwap": "100.2",
    "trade_count": "7",
}


def row(minute: int = 0, **overrides: str) -> dict:
    r = dict(GOOD)
    r["timestamp"] = f"2024-01-02T00:{minute:02d}:00Z"
    r.update(overrides)
    return r


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype="str")


def run(rows, **kw):
    kw.setdefault("source", "t.csv")
    kw.setdefault("now", NOW)
    res = validate_bars(frame(rows) if isinstance(rows, list) else rows, **kw)
    # the reject store is idempotent on REJECT_KEY: a result never holds two records with the same key
    assert not res.rejected.duplicated(list(REJECT_KEY)).any(), res.messages()
    return res


def reasons_by_line(result) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for rec in result.rejected.itertuples():
        if pd.notna(rec.line):
            out.setdefault(int(rec.line), []).append(rec.reason)
    return {k: sorted(v) for k, v in out.items()}


def test_good_raw_rows_become_canonical_sorted():
    res = run([row(2, symbol="ethusd"), row(1), row(0)])
    assert res.rejected.empty
    acc = res.accepted
    assert list(acc.columns) == list(BAR_COLUMNS)
    assert {c: acc[c].dtype for c in BAR_COLUMNS} == BAR_DTYPES
    assert list(acc["symbol"]) == ["BTCUSD", "BTCUSD", "ETHUSD"]  # lower case normalised
    assert list(acc["timestamp"]) == [
        pd.Timestamp("2024-01-02T00:00Z"),
        pd.Timestamp("2024-01-02T00:01Z"),
        pd.Timestamp("2024-01-02T00:02Z"),
    ]
    assert acc["close"].iloc[0] == 100.5 and acc["trade_count"].iloc[0] == 7
    assert list(res.accepted_line) == [2, 1, 0]
    assert res.summary() == {"accepted": 3, "rejected_rows": 0, "reject_records": 0, "by_reason": {}}


@pytest.mark.parametrize(
    ("override", "reason", "detail_part"),
    [
        ({"open": "abc"}, RejectReason.WRONG_TYPE, "column 'open' value 'abc' is not a number"),
        ({"volume": ""}, RejectReason.WRONG_TYPE, "column 'volume' is empty"),
        ({"high": "1,01"}, RejectReason.WRONG_TYPE, "'1,01'"),
        ({"close": "nan"}, RejectReason.NOT_FINITE, "column 'close' is 'nan'"),
        ({"volume": "inf"}, RejectReason.NOT_FINITE, "column 'volume' is 'inf'"),
        ({"open": "0", "low": "0"}, RejectReason.NON_POSITIVE_PRICE, "open 0.0 is not positive"),
        ({"high": "100.4"}, RejectReason.HIGH_BELOW_OPEN_CLOSE, "high 100.4 < max(open, close) 100.5"),
        (
            {"low": "100.1", "vwap": "100.2"},
            RejectReason.LOW_ABOVE_OPEN_CLOSE,
            "low 100.1 > min(open, close) 100.0",
        ),
        ({"volume": "-1"}, RejectReason.NEGATIVE_VOLUME, "volume -1.0 is negative"),
        ({"vwap": "101.0000001"}, RejectReason.VWAP_OUTSIDE_RANGE, "vwap 101.0000001 outside [low, high]"),
        (
            {"trade_count": "2.5"},
            RejectReason.BAD_TRADE_COUNT,
            "trade_count 2.5 is not a non-negative integer",
        ),
        ({"trade_count": "-3"}, RejectReason.BAD_TRADE_COUNT, "trade_count -3.0"),
        ({"symbol": "BTC USD"}, RejectReason.MALFORMED_SYMBOL, "symbol 'BTC USD' is malformed"),
        ({"symbol": "A" * 21}, RejectReason.MALFORMED_SYMBOL, "is malformed"),
        ({"symbol": ""}, RejectReason.MALFORMED_SYMBOL, "symbol '' is malformed"),
        ({"timestamp": "1704153600"}, RejectReason.WRONG_TYPE, "numeric epoch values are not accepted"),
        ({"timestamp": "02/01/2024 00:00"}, RejectReason.WRONG_TYPE, "is not a valid ISO-8601 timestamp"),
        ({"timestamp": "2024-01-02T00:00:30Z"}, RejectReason.OFF_GRID_TIMESTAMP, "not on the 1min grid"),
        ({"timestamp": "2024-01-02 00:05:00"}, RejectReason.NAIVE_TIMESTAMP, "QT_LANDING_TIMEZONE"),
        ({"timestamp": "2024-06-01T00:02:00Z"}, RejectReason.FUTURE_TIMESTAMP, "the bar has not closed"),
    ],
)
def test_each_reason_is_reported_on_its_line_and_good_rows_pass(override, reason, detail_part):
    rows = [row(0), row(1, **override), row(2)]
    res = run(rows, line_numbers=[2, 3, 4])
    bad = res.rejected[res.rejected["line"] == 3]
    assert reason in set(bad["reason"]), res.messages()
    detail = bad.loc[bad["reason"] == reason, "detail"].iloc[0]
    assert detail_part in detail
    assert detail.endswith(")")  # every detail ends with how to fix it
    assert set(res.rejected["line"]) == {3}
    assert list(res.accepted_line) == [2, 4]
    assert len(res.accepted) == 2
    rec = bad.iloc[0]
    assert json.loads(rec["raw"]) == {k: str(v) for k, v in rows[1].items()}
    assert rec["timestamp"] == rows[1]["timestamp"]
    assert any(m.startswith("t.csv:3: ") for m in res.messages())


def test_high_below_low_and_several_reasons_one_row():
    res = run([row(0, high="98", low="99", volume="-5"), row(1)])
    assert reasons_by_line(res) == {
        0: sorted(
            [
                RejectReason.HIGH_BELOW_OPEN_CLOSE,
                RejectReason.HIGH_BELOW_LOW,
                RejectReason.VWAP_OUTSIDE_RANGE,
                RejectReason.NEGATIVE_VOLUME,
            ]
        )
    }
    s = res.summary()
    assert s["accepted"] == 1 and s["rejected_rows"] == 1 and s["reject_records"] == 4


def test_vwap_bounds_are_inclusive_and_exact():
    res = run([row(0, vwap="99"), row(1, vwap="101"), row(2, vwap="98.99999999999999")])
    assert reasons_by_line(res) == {2: [RejectReason.VWAP_OUTSIDE_RANGE]}


def test_missing_column_rejects_every_row_naming_columns():
    rows = [{k: v for k, v in row(i).items() if k != "vwap"} for i in range(3)]
    res = run(rows, line_numbers=[2, 3, 4])
    assert res.accepted.empty
    assert list(res.rejected["line"]) == [2, 3, 4]
    assert set(res.rejected["reason"]) == {RejectReason.MISSING_COLUMN}
    detail = res.rejected["detail"].iloc[0]
    assert "['vwap'] missing" in detail and "'trade_count'" in detail  # names what was found too


def test_missing_column_with_no_rows_is_one_file_level_record():
    res = run(pd.DataFrame({"symbol": pd.Series([], dtype="str")}))
    assert len(res.rejected) == 1
    assert res.rejected["reason"].iloc[0] == RejectReason.MISSING_COLUMN
    assert pd.isna(res.rejected["line"].iloc[0])


def test_extra_column_is_one_file_level_record_and_rows_accepted():
    rows = [dict(row(i), note="hello") for i in range(2)]
    res = run(rows)
    assert len(res.accepted) == 2 and list(res.accepted.columns) == list(BAR_COLUMNS)
    assert len(res.rejected) == 1
    rec = res.rejected.iloc[0]
    assert rec["reason"] == RejectReason.EXTRA_COLUMN and pd.isna(rec["line"]) and "['note']" in rec["detail"]
    assert res.summary()["rejected_rows"] == 0
    assert res.messages()[0].startswith("t.csv: extra_column: ")


def test_unknown_symbol_only_with_known_symbols():
    rows = [row(0), row(0, symbol="DOGEUSD")]
    assert run(rows).rejected.empty
    res = run(rows, known_symbols=["BTCUSD"], line_numbers=[10, 11])
    assert reasons_by_line(res) == {11: [RejectReason.UNKNOWN_SYMBOL]}
    assert "add it to QT_SYMBOLS" in res.rejected["detail"].iloc[0]


def test_offsets_and_aware_dtypes_are_converted_to_utc():
    rows = [
        row(0, timestamp="2024-01-02T02:00:00+02:00"),
        row(0, timestamp="2024-01-01T19:01:00-05:00", symbol="ETHUSD"),
        row(0, timestamp="2024-01-02 00:02:00 UTC", symbol="SOLUSD"),
    ]
    res = run(rows)
    assert res.rejected.empty, res.messages()
    assert list(res.accepted["timestamp"]) == [
        pd.Timestamp("2024-01-02T00:00Z"),
        pd.Timestamp("2024-01-02T00:01Z"),
        pd.Timestamp("2024-01-02T00:02Z"),
    ]
    typed = frame([row(0), row(1)])
    typed["timestamp"] = pd.to_datetime(["2024-01-02T01:00", "2024-01-02T01:01"]).tz_localize("Europe/Berlin")
    res2 = run(typed)
    assert list(res2.accepted["timestamp"]) == [
        pd.Timestamp("2024-01-02T00:00Z"),
        pd.Timestamp("2024-01-02T00:01Z"),
    ]


def test_naive_timestamps_with_source_timezone_and_dst():
    # America/New_York falls back on 2023-11-05: 01:30 happens twice; springs forward on 2023-03-12: no 02:30.
    rows = [
        row(0, timestamp="2023-11-05 00:30:00"),
        row(0, timestamp="2023-11-05 01:30:00"),
        row(0, timestamp="2023-03-12 02:30:00"),
        row(0, timestamp="2023-11-05 03:00:00"),
    ]
    res = run(rows, source_timezone="America/New_York", line_numbers=[2, 3, 4, 5])
    assert reasons_by_line(res) == {
        3: [RejectReason.AMBIGUOUS_TIMESTAMP],
        4: [RejectReason.AMBIGUOUS_TIMESTAMP],
    }
    details = dict(zip(res.rejected["line"], res.rejected["detail"], strict=True))
    assert "occurs twice in America/New_York (DST fold)" in details[3]
    assert "does not exist in America/New_York (DST gap)" in details[4]
    assert list(res.accepted["timestamp"]) == [
        pd.Timestamp("2023-11-05T04:30Z"),
        pd.Timestamp("2023-11-05T08:00Z"),
    ]
    # without a zone, the same file is naive
    res2 = run(rows)
    assert set(res2.rejected["reason"]) == {RejectReason.NAIVE_TIMESTAMP}
    assert len(res2.rejected) == 4 and res2.accepted.empty


def test_unknown_timezone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        run([row(0)], source_timezone="Mars/Base")


def test_numeric_epoch_column_is_wrong_type():
    typed = frame([row(0)])
    typed["timestamp"] = np.array([1704153600], dtype=np.int64)
    res = run(typed)
    assert list(res.rejected["reason"]) == [RejectReason.WRONG_TYPE]
    assert "numeric epoch" in res.rejected["detail"].iloc[0]


def test_duplicates_identical_keep_first():
    res = run([row(0), row(1), row(0), row(0, open="100.0")], line_numbers=[2, 3, 4, 5])
    # "100.0" and "100" are the same value: the three rows for minute 0 are identical
    assert reasons_by_line(res) == {4: [RejectReason.DUPLICATE_KEY], 5: [RejectReason.DUPLICATE_KEY]}
    assert "exact duplicate of line 2; the first occurrence was kept" in res.rejected["detail"].iloc[0]
    assert list(res.accepted_line) == [2, 3]


def test_duplicates_conflicting_reject_all():
    res = run([row(0), row(1), row(0, close="100.7"), row(0, symbol=" btcusd")], line_numbers=[2, 3, 4, 5])
    assert reasons_by_line(res) == {
        2: [RejectReason.DUPLICATE_KEY],
        4: [RejectReason.DUPLICATE_KEY],
        5: [RejectReason.DUPLICATE_KEY],
    }
    assert (
        "conflicting rows for the same (symbol, timestamp) at lines 2, 4, 5; all occurrences rejected"
        in (res.rejected["detail"].iloc[0])
    )
    assert list(res.accepted_line) == [3]


def test_duplicate_offset_forms_of_same_instant_are_duplicates():
    res = run([row(0), row(0, timestamp="2024-01-02T01:00:00+01:00")])
    assert reasons_by_line(res) == {1: [RejectReason.DUPLICATE_KEY]}


def test_typed_input_nan_and_interval_grid():
    typed = pd.DataFrame(
        {
            "symbol": ["BTCUSD", "BTCUSD", "BTCUSD"],
            "timestamp": pd.to_datetime(["2024-01-02T00:00Z", "2024-01-02T00:05Z", "2024-01-02T00:07Z"]),
            "open": [1.0, np.nan, 1.0],
            "high": [2.0, 2.0, 2.0],
            "low": [0.5, 0.5, 0.5],
            "close": [1.5, 1.5, 1.5],
            "volume": [1.0, 1.0, 1.0],
            "vwap": [1.2, 1.2, 1.2],
            "trade_count": [1, 2, 3],
        }
    )
    res = validate_bars(typed, source="mem", interval="5min", now=NOW)
    assert reasons_by_line(res) == {1: [RejectReason.NOT_FINITE], 2: [RejectReason.OFF_GRID_TIMESTAMP]}
    assert "not on the 5min grid" in res.rejected.loc[res.rejected["line"] == 2, "detail"].iloc[0]
    assert len(res.accepted) == 1


def test_reject_frame_is_canonical():
    res = run([row(0, open="x")], now=NOW)
    assert list(res.rejected.columns) == list(REJECT_COLUMNS)
    assert {c: res.rejected[c].dtype for c in REJECT_COLUMNS} == REJECT_DTYPES
    assert res.rejected["rejected_at"].iloc[0] == NOW


def test_every_row_accounted_for_on_a_large_mixed_batch():
    rng = np.random.default_rng(7)
    n = 20_000
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    df = pd.DataFrame(
        {
            "symbol": "BTCUSD",
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": "100",
            "high": "101",
            "low": "99",
            "close": "100",
            "volume": "1",
            "vwap": "100",
            "trade_count": "1",
        },
        dtype="str",
    )
    bad = rng.choice(n, size=500, replace=False)
    df.loc[bad, "open"] = "x"
    res = validate_bars(df, source="big", now=NOW)
    assert len(res.accepted) == n - 500
    assert sorted(res.rejected["line"].astype(int)) == sorted(bad.tolist())


def test_sub_microsecond_and_missing_typed_timestamps_are_rejected_not_truncated():
    res = run([row(0, timestamp="2024-01-02T00:00:00.000000001Z"), row(1)])
    assert reasons_by_line(res) == {0: [RejectReason.OFF_GRID_TIMESTAMP]}
    assert "sub-microsecond precision" in res.rejected["detail"].iloc[0]
    typed = frame([row(0), row(1)])
    typed["timestamp"] = pd.to_datetime(["2024-01-02T00:00:00Z", None], utc=True)
    res2 = run(typed)
    assert reasons_by_line(res2) == {1: [RejectReason.NOT_FINITE]}
    assert res2.rejected["detail"].iloc[0] == "timestamp is missing (every bar needs its open time)"


def test_one_record_per_row_and_reason_naming_every_column():
    res = run([row(0, open="0", low="-1", close="x", volume="y"), row(1)], line_numbers=[7, 8])
    assert reasons_by_line(res) == {
        7: [RejectReason.NON_POSITIVE_PRICE, RejectReason.WRONG_TYPE],
    }
    details = dict(zip(res.rejected["reason"], res.rejected["detail"], strict=True))
    assert "open 0.0 is not positive" in details[RejectReason.NON_POSITIVE_PRICE]
    assert "low -1.0 is not positive" in details[RejectReason.NON_POSITIVE_PRICE]
    assert "column 'close' value 'x'" in details[RejectReason.WRONG_TYPE]
    assert "column 'volume' value 'y'" in details[RejectReason.WRONG_TYPE]
