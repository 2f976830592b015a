"""LandingDirectorySource on real files in a temp directory: CSV, CSV.gz, Parquet; every problem is
reported with its file name and physical line."""

from __future__ import annotations

import gzip
import os
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qt_pipeline.market.contract import REJECT_KEY, RejectReason
from qt_pipeline.market.sources import ingest_batches, source_from_settings
from qt_pipeline.market.sources.landing import LandingDirectorySource

HEADER = "symbol,timestamp,open,high,low,close,volume,vwap,trade_count"
DAY = pd.Timestamp("2024-01-02", tz="UTC")
NEXT = DAY + pd.Timedelta(days=1)
NOW = pd.Timestamp("2024-06-01", tz="UTC")


def line(
    sym="BTCUSD", ts="2024-01-02T00:00:00Z", o="100", h="101", lo="99", c="100.5", v="3", vw="100.1", n="4"
):
    return ",".join([sym, ts, o, h, lo, c, v, vw, n])


def write(d: Path, name: str, *lines: str) -> Path:
    p = d / name
    p.write_text("\n".join(lines) + "\n")
    return p


def ingest(src, symbol="BTCUSD", start=DAY, end=NEXT, **kw):
    kw.setdefault("now", NOW)
    res = ingest_batches(src, symbol, start, end, **kw)
    assert not res.rejected.duplicated(list(REJECT_KEY)).any(), res.messages()  # store key stays unique
    assert len(res.accepted_line) == len(res.accepted) == len(res.accepted_source)
    return res


def lines_of(res, reason) -> list[int]:
    r = res.rejected
    return sorted(int(x) for x in r.loc[r["reason"] == reason, "line"].dropna())


def test_good_csv_with_bad_number_and_wrong_field_count(tmp_path):
    write(
        tmp_path,
        "bars.csv",
        HEADER,
        line(ts="2024-01-02T00:00:00Z"),
        line(ts="2024-01-02T00:01:00Z", o="1O0"),  # letter O: unparsable
        "BTCUSD,2024-01-02T00:02:00Z,100,101",  # 4 fields
        "",
        line(ts="2024-01-02T00:03:00Z"),
    )
    src = LandingDirectorySource(tmp_path)
    res = ingest(src)
    assert len(res.accepted) == 2
    assert list(res.accepted_line) == [2, 6]  # physical lines (blank line 5 counted)
    assert lines_of(res, RejectReason.WRONG_TYPE) == [3]
    assert lines_of(res, RejectReason.MALFORMED_FILE) == [4]
    msgs = res.messages()
    assert any(
        m.endswith(
            "bars.csv:3: wrong_type: column 'open' value '1O0' is not a number (write a plain decimal number)"
        )
        for m in msgs
    ), msgs
    assert any(
        "bars.csv:4: malformed_file: line has 4 fields; the header (line 1) has 9" in m for m in msgs
    ), msgs


def test_bad_header_is_missing_column_for_each_row(tmp_path):
    write(tmp_path, "nohead.csv", HEADER.replace("open", "opn"), line(), line(ts="2024-01-02T00:01:00Z"))
    src = LandingDirectorySource(tmp_path)
    res = ingest(src)
    assert res.accepted.empty
    assert lines_of(res, RejectReason.MISSING_COLUMN) == [2, 3]
    m = res.messages()
    assert any("nohead.csv:2: missing_column: required column(s) ['open'] missing; found [" in x for x in m)
    # opn is an extra column: one warning for the file, not a reject
    assert [w for w in res.warnings if "extra column(s) ['opn'] ignored" in w] and len(res.warnings) == 1
    assert not (res.rejected["reason"] == RejectReason.EXTRA_COLUMN).any()
    # the same problem on every row is printed once with its count
    grouped = res.grouped_messages(per_group=1)
    assert grouped[-1].endswith("… 1 more missing_column like the above (lines 3–3)"), grouped


def test_wrong_delimiter_and_empty_files(tmp_path):
    write(tmp_path, "semi.csv", HEADER.replace(",", ";"), line().replace(",", ";"))
    (tmp_path / "zero.csv").write_bytes(b"")
    write(tmp_path, "header_only.csv", HEADER)
    src = LandingDirectorySource(tmp_path)
    insp = {p.name: src.inspect(p.path) for p in src.scan()}
    assert set(insp) == {"semi.csv", "zero.csv", "header_only.csv"}
    semi = insp["semi.csv"]
    assert semi.home is None and semi.partitions.empty
    assert list(semi.problems["reason"]) == [RejectReason.MALFORMED_FILE]
    assert "file uses ';' as delimiter; expected ','" in semi.problems["detail"].iloc[0]
    assert semi.problems["source"].iloc[0].endswith("semi.csv")
    assert list(insp["zero.csv"].problems["reason"]) == [RejectReason.EMPTY_FILE]
    assert "0 bytes" in insp["zero.csv"].problems["detail"].iloc[0]
    assert list(insp["header_only.csv"].problems["reason"]) == [RejectReason.EMPTY_FILE]
    assert "header but no data rows" in insp["header_only.csv"].problems["detail"].iloc[0]
    # none of them yields rows for any partition
    assert ingest(src).accepted.empty
    assert src.symbols() == []


def test_unknown_symbol_file(tmp_path):
    write(tmp_path, "doge.csv", HEADER, line(sym="DOGEUSD"), line(sym="DOGEUSD", ts="2024-01-02T00:01:00Z"))
    src = LandingDirectorySource(tmp_path)
    assert src.symbols() == ["DOGEUSD"]
    res = ingest(src, "DOGEUSD", known_symbols=["BTCUSD", "ETHUSD"])
    assert res.accepted.empty
    assert lines_of(res, RejectReason.UNKNOWN_SYMBOL) == [2, 3]
    assert res.messages()[0].endswith(
        "doge.csv:2: unknown_symbol: symbol 'DOGEUSD' is not configured (add it to QT_SYMBOLS)"
    )


def test_naive_timestamps_rejected_without_zone_accepted_with_zone(tmp_path):
    write(
        tmp_path,
        "ny.csv",
        HEADER,
        line(ts="2024-01-01 19:00:00"),
        line(ts="2024-01-01 19:01:00"),
    )
    plain = LandingDirectorySource(tmp_path)
    insp = plain.inspect(tmp_path / "ny.csv")
    assert insp.home is None and insp.unplaced_rows == 2  # cannot be placed without a zone
    assert list(insp.problems["reason"]) == [RejectReason.NAIVE_TIMESTAMP] * 2
    assert list(insp.problems["line"]) == [2, 3]
    assert "set the time zone of this source (QT_LANDING_TIMEZONE" in insp.problems["detail"].iloc[0]

    ny = LandingDirectorySource(tmp_path, timezone="America/New_York")
    insp2 = ny.inspect(tmp_path / "ny.csv")
    assert insp2.partition_keys == [("BTCUSD", date(2024, 1, 2))]
    res = ingest(ny)
    assert res.rejected.empty
    assert list(res.accepted["timestamp"]) == [
        pd.Timestamp("2024-01-02T00:00Z"),
        pd.Timestamp("2024-01-02T00:01Z"),
    ]


def test_duplicates_within_and_across_files(tmp_path):
    write(tmp_path, "a.csv", HEADER, line(), line(), line(ts="2024-01-02T00:01:00Z"))
    write(
        tmp_path,
        "b.csv",
        HEADER,
        line(),  # identical to a.csv:2 -> dropped, a.csv:2 kept
        line(ts="2024-01-02T00:01:00Z", c="100.7"),  # conflicts with a.csv:4 -> both rejected
        line(ts="2024-01-02T00:02:00Z"),
    )
    src = LandingDirectorySource(tmp_path)
    batch = src.fetch("BTCUSD", DAY, NEXT)  # one composite batch, one part per file
    assert [Path(p.source).name for p in batch.leaves()] == ["a.csv", "b.csv"]
    assert [Path(x).name for x in batch.row_sources] == ["a.csv"] * 3 + ["b.csv"] * 3
    assert list(batch.line_numbers) == [2, 3, 4, 2, 3, 4]
    res = ingest(src)
    acc = res.accepted
    assert list(acc["timestamp"].dt.minute) == [0, 2]
    assert dict(zip(acc["timestamp"].dt.minute, res.accepted_line, strict=True)) == {0: 2, 2: 4}
    assert list(res.accepted_source) == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    dup = res.rejected[res.rejected["reason"] == RejectReason.DUPLICATE_KEY]
    where = sorted((Path(s).name, int(ln)) for s, ln in zip(dup["source"], dup["line"], strict=True))
    assert where == [("a.csv", 3), ("a.csv", 4), ("b.csv", 2), ("b.csv", 3)]
    msgs = "\n".join(res.messages())
    assert "a.csv:3: duplicate_key: exact duplicate of line 2" in msgs
    assert (
        "b.csv:2: duplicate_key: exact duplicate of " in msgs
        and "a.csv:2; the first occurrence was kept" in msgs
    )
    assert "conflicting rows for the same (symbol, timestamp) at " in msgs


def test_parquet_file_typed_with_mapping_and_zone(tmp_path):
    table = pa.table(
        {
            "ticker": ["ethusd", "ethusd", "ethusd"],
            "ts": pa.array(
                [
                    pd.Timestamp("2024-01-02 09:00"),
                    pd.Timestamp("2024-01-02 09:01"),
                    pd.Timestamp("2024-01-02 09:02"),
                ],
                type=pa.timestamp("us"),
            ),
            "open": [10.0, 10.0, 10.0],
            "high": [11.0, 11.0, 9.0],
            "low": [9.0, 9.0, 9.5],
            "close": [10.5, 10.5, 10.5],
            "volume": [1.0, 2.0, 3.0],
            "vwap": [10.2, 10.2, 10.2],
            "trade_count": pa.array([1, 2, 3], type=pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "eth.parquet")
    src = LandingDirectorySource(
        tmp_path, column_mapping={"ticker": "symbol", "ts": "timestamp"}, timezone="Europe/Berlin"
    )
    insp = src.inspect(tmp_path / "eth.parquet")
    assert insp.partition_keys == [("ETHUSD", date(2024, 1, 2))] and insp.rows == 3
    res = ingest(src, "ETHUSD")
    assert list(res.accepted["timestamp"]) == [
        pd.Timestamp("2024-01-02T08:00Z"),
        pd.Timestamp("2024-01-02T08:01Z"),
    ]
    assert list(res.accepted["trade_count"]) == [1, 2]
    # Parquet rows are addressed by their 1-based row number (the third row is row 3)
    assert lines_of(res, RejectReason.HIGH_BELOW_LOW) == [3]
    assert any(m.startswith(f"{tmp_path / 'eth.parquet'}:3: ") for m in res.messages())


def test_column_mapping_csv_gz_and_case_insensitive_header(tmp_path):
    text = "\n".join(
        [
            "Ticker,TS,Open,High,Low,Close,Volume,VWAP,Trades",
            "btcusd,2024-01-02T00:00:00+00:00,1,2,0.5,1.5,10,1.2,3",
            "btcusd,2024-01-02T00:01:00+00:00,1,2,0.5,1.5,10,1.2,3",
        ]
    )
    with gzip.open(tmp_path / "mapped.csv.gz", "wt") as f:
        f.write(text + "\n")
    src = LandingDirectorySource(
        tmp_path, column_mapping={"ticker": "symbol", "ts": "timestamp", "Trades": "trade_count"}
    )
    res = ingest(src)
    assert res.rejected.empty, res.messages()
    assert len(res.accepted) == 2 and set(res.accepted["symbol"]) == {"BTCUSD"}
    with pytest.raises(ValueError, match="column mapping targets \\['price'\\] are not bar columns"):
        LandingDirectorySource(tmp_path, column_mapping={"px": "price"})


def test_partitions_home_and_unplaced_rows(tmp_path):
    write(
        tmp_path,
        "multi.csv",
        HEADER,
        line(sym="ETHUSD", ts="2024-01-03T00:00:00Z"),
        line(sym="BTCUSD", ts="2024-01-02T23:59:00Z"),
        line(sym="BTCUSD", ts="not a time"),
        line(sym="BTCUSD", ts="2024-01-03T00:00:00Z"),
        "too,few",
    )
    src = LandingDirectorySource(tmp_path)
    insp = src.inspect(tmp_path / "multi.csv")
    assert insp.partition_keys == [
        ("BTCUSD", date(2024, 1, 2)),
        ("BTCUSD", date(2024, 1, 3)),
        ("ETHUSD", date(2024, 1, 3)),
    ]
    assert list(insp.partitions["rows"]) == [1, 1, 1]
    assert insp.home == ("BTCUSD", date(2024, 1, 2)) and insp.unplaced_rows == 1 and insp.rows == 4
    # the home partition carries the unplaceable row and the file-level problem ...
    home = ingest(src, "BTCUSD", DAY, NEXT)
    assert list(home.accepted_line) == [3]
    assert lines_of(home, RejectReason.WRONG_TYPE) == [4]
    assert lines_of(home, RejectReason.MALFORMED_FILE) == [6]
    # ... and the other partitions do not repeat them
    other = ingest(src, "BTCUSD", NEXT, NEXT + pd.Timedelta(days=1))
    assert list(other.accepted_line) == [5] and other.rejected.empty
    eth = ingest(src, "ETHUSD", NEXT, NEXT + pd.Timedelta(days=1))
    assert list(eth.accepted_line) == [2] and eth.rejected.empty
    assert src.partitions()["rows"].sum() == 3


def test_scan_fingerprint_changes_with_content_and_ignores_temp_files(tmp_path):
    p = write(tmp_path, "a.csv", HEADER, line())
    write(tmp_path, ".hidden.csv", HEADER, line())
    write(tmp_path, "_incoming.csv", HEADER, line())
    write(tmp_path, "notes.txt", "hello")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "b.parquet.part", "x")
    src = LandingDirectorySource(tmp_path)
    files = src.scan()
    assert [f.name for f in files] == ["a.csv"]
    first = files[0]
    assert first.size == p.stat().st_size and len(first.fingerprint) == 64
    assert src.scan()[0].fingerprint == first.fingerprint
    assert float(ingest(src).accepted["close"].iloc[0]) == 100.5  # loads (and caches) the file
    # same size, same mtime, different content: the fingerprint still changes (content hash)
    p.write_text(p.read_text().replace("100.5", "100.4"))
    os.utime(p, ns=(first.mtime_ns, first.mtime_ns))
    changed = src.scan()[0]  # the same (long-lived) source: its hash cache must not hide the change
    assert changed.size == first.size and changed.mtime_ns == first.mtime_ns
    assert changed.fingerprint != first.fingerprint
    assert changed.fingerprint == LandingDirectorySource(tmp_path).scan()[0].fingerprint
    assert float(ingest(src).accepted["close"].iloc[0]) == 100.4


def test_source_from_settings_landing(settings, monkeypatch, tmp_path):
    land = tmp_path / "land"
    land.mkdir()
    write(
        land, "x.csv", "sym,when,open,high,low,close,volume,vwap,trade_count", line(ts="2024-01-01 19:00:00")
    )
    s = settings.model_copy(
        update={
            "market_source": "landing",
            "landing_dir": land,
            "landing_timezone": "America/New_York",
            "landing_column_map": {"sym": "symbol", "when": "timestamp"},
        }
    )
    src = source_from_settings(s)
    assert isinstance(src, LandingDirectorySource)
    res = ingest(src)
    assert res.rejected.empty and list(res.accepted["timestamp"]) == [pd.Timestamp("2024-01-02T00:00Z")]


def test_unreadable_files_and_lines_are_malformed_and_good_lines_kept(tmp_path):
    body = [HEADER, line(), line(sym="CAFÉ", ts="2024-01-02T00:01:00Z"), line(ts="2024-01-02T00:02:00Z")]
    (tmp_path / "latin1.csv").write_bytes(("\n".join(body) + "\n").encode("latin-1"))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    src = LandingDirectorySource(tmp_path)
    latin = src.inspect(tmp_path / "latin1.csv")
    assert latin.rows == 2 and latin.home == ("BTCUSD", date(2024, 1, 2))
    assert list(latin.problems["reason"]) == [RejectReason.MALFORMED_FILE]
    assert list(latin.problems["line"]) == [3]
    res = ingest(src)
    assert list(res.accepted_line) == [2, 4]
    assert any(
        "latin1.csv:3: malformed_file: byte 0xc9 at position 4 is not UTF-8" in m for m in res.messages()
    )
    for name in ("broken.parquet", "broken.csv.gz"):
        insp = src.inspect(tmp_path / name)
        assert insp.home is None and list(insp.problems["reason"]) == [RejectReason.MALFORMED_FILE], name
        assert insp.problems["source"].iloc[0].endswith(name)
