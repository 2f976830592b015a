"""Real-looking exports land untouched, by configuration only (configs/landing.example.yaml): a daily
US-equity file (Date, Adj Close, symbol in the file name), an hourly FX file with European 'Gmt time'
stamps, crypto minute bars in another column order — side by side in one landing directory."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.market.calendars import get_calendar
from qt_pipeline.market.contract import REJECT_KEY, RejectReason
from qt_pipeline.market.filecheck import check_file
from qt_pipeline.market.layout import LayoutError, load_landing_config
from qt_pipeline.market.quality import expected_row_range, run_bar_quality
from qt_pipeline.market.sources import ingest_batches
from qt_pipeline.market.sources.landing import LandingDirectorySource

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "landing.example.yaml"
NOW = pd.Timestamp("2025-06-01", tz="UTC")

# Daily GOOGL as a finance site exports it (values are made up but shaped like the real thing).
GOOGL = """Date,Open,High,Low,Close,Adj Close,Volume
2024-12-20,192.21,194.42,189.84,191.41,191.20,147495300
2024-12-23,192.62,195.10,190.15,194.63,194.42,25675000
2024-12-24,194.84,196.11,193.78,196.11,195.90,10403300
2024-12-26,195.15,196.75,194.38,195.60,195.39,12057200
2024-12-27,194.95,195.32,190.65,192.76,192.55,18891400
2024-12-30,189.06,192.55,188.35,191.24,191.03,14264700
2024-12-31,191.08,191.96,188.51,189.30,189.10,17466900
2025-01-02,190.65,192.00,187.50,189.43,189.23,20370800
2025-01-03,191.37,193.21,189.97,191.79,191.59,18596200
"""

FX_HEADER = "Gmt time,Open,High,Low,Close,Volume"


def fx_rows() -> list[str]:
    out = []
    t = pd.Timestamp("2017-01-01 22:00")  # Sunday: the FX week opens
    price = 1.05165
    for i in range(30):
        o = price
        c = round(o + (0.0004 if i % 3 else -0.0003), 5)
        out.append(
            f"{t:%d.%m.%Y %H:%M:%S}.000,{o:.5f},{max(o, c) + 0.0002:.5f},{min(o, c) - 0.0002:.5f},{c:.5f},"
            f"{1234.56 + i:.2f}"
        )
        price, t = c, t + pd.Timedelta(hours=1)
    return out


CRYPTO = """Timestamp,Symbol,Close,Open,Low,High,Volume,VWAP,Trades
2024-03-01T00:00:00Z,BTCUSD,61200.5,61180.0,61150.1,61230.0,12.5,61190.2,311
2024-03-01T00:01:00Z,BTCUSD,61210.0,61200.5,61190.0,61222.2,8.25,61205.0,207
2024-03-01T00:02:00Z,BTCUSD,61195.5,61210.0,61180.0,61215.0,9.75,61199.9,254
"""


def landing(tmp_path: Path) -> Path:
    d = tmp_path / "landing"
    (d / "equities").mkdir(parents=True)
    (d / "fx").mkdir()
    (d / "crypto").mkdir()
    (d / "equities" / "GOOGL.csv").write_text(GOOGL)
    (d / "fx" / "EURUSD_Candlestick_1_Hour_BID_01.01.2017-31.12.2017.csv").write_text(
        "\n".join([FX_HEADER, *fx_rows()]) + "\n"
    )
    (d / "crypto" / "btc_minute.csv").write_text(CRYPTO)
    return d


def source(d: Path, **kw) -> LandingDirectorySource:
    return LandingDirectorySource(d, config=load_landing_config(EXAMPLE), **kw)


def ingest(src, symbol, start, end):
    res = ingest_batches(src, symbol, pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"), now=NOW)
    assert not res.rejected.duplicated(list(REJECT_KEY)).any()
    return res


def test_three_exports_side_by_side_land_untouched(tmp_path):
    d = landing(tmp_path)
    src = source(d)
    parts = src.partitions()
    assert set(parts["symbol"]) == {"GOOGL", "EURUSD", "BTCUSD"}

    # daily equity: every bar accepted, opened at the NYSE session open (14:30 UTC in winter)
    g = ingest(src, "GOOGL", "2024-12-01", "2025-02-01")
    assert g.rejected.empty, g.grouped_messages()
    assert len(g.accepted) == 9
    ts = g.accepted["timestamp"]
    assert ts.iloc[0] == pd.Timestamp("2024-12-20 14:30", tz="UTC")
    assert set(ts.dt.strftime("%H:%M")) == {"14:30"}
    file_vals = pd.read_csv(d / "equities" / "GOOGL.csv")
    np.testing.assert_array_equal(g.accepted["close"].to_numpy(), file_vals["Close"].to_numpy())
    np.testing.assert_array_equal(g.accepted["volume"].to_numpy(), file_vals["Volume"].to_numpy(float))
    # derived columns, as documented: vwap = typical price, trade_count 0 = not reported
    typical = (file_vals["High"] + file_vals["Low"] + file_vals["Close"]) / 3
    np.testing.assert_allclose(g.accepted["vwap"].to_numpy(), typical.to_numpy(), rtol=0, atol=1e-9)
    assert (g.accepted["trade_count"] == 0).all()
    assert not any("Adj Close" in w for w in g.warnings)  # listed under ignore_columns: silent
    assert any("vwap derived" in w for w in g.warnings)

    # FX with European timestamps: Sunday 22:00 GMT onwards
    fx = ingest(src, "EURUSD", "2017-01-01", "2017-01-04")
    assert fx.rejected.empty, fx.grouped_messages()
    assert len(fx.accepted) == 30
    assert fx.accepted["timestamp"].iloc[0] == pd.Timestamp("2017-01-01 22:00", tz="UTC")

    # crypto minute bars in another column order, with VWAP and Trades columns kept
    c = ingest(src, "BTCUSD", "2024-03-01", "2024-03-02")
    assert c.rejected.empty, c.grouped_messages()
    assert list(c.accepted["open"]) == [61180.0, 61200.5, 61210.0]
    assert list(c.accepted["trade_count"]) == [311, 207, 254]
    assert list(c.accepted["vwap"]) == [61190.2, 61205.0, 61199.9]


def test_extra_column_warns_once_per_file_and_holiday_bar_is_not_a_session(tmp_path):
    d = landing(tmp_path)
    cfg = load_landing_config(EXAMPLE)
    cfg.sources[0].ignore_columns = []
    text = GOOGL + "2024-12-25,191.00,192.00,190.00,191.50,191.30,1000\n"  # Christmas: NYSE closed
    (d / "equities" / "GOOGL.csv").write_text(text)
    src = LandingDirectorySource(d, config=cfg)
    res = ingest(src, "GOOGL", "2024-12-01", "2025-02-01")
    adj = [w for w in res.warnings if "['Adj Close'] ignored" in w]
    assert len(adj) == 1  # once for the file, not once per row or partition
    assert len(res.accepted) == 9
    (rec,) = res.rejected.itertuples(index=False)
    assert rec.reason == RejectReason.OFF_GRID_TIMESTAMP and int(rec.line) == 11
    assert "date '2024-12-25' is not a session of XNYS" in rec.detail


def test_symbol_from_filename_that_does_not_match_is_reported_once(tmp_path):
    d = landing(tmp_path)
    shutil.move(d / "fx" / next(p.name for p in (d / "fx").iterdir()), d / "fx" / "eurusd-hourly.csv")
    src = source(d)
    insp = src.inspect(d / "fx" / "eurusd-hourly.csv")
    assert insp.home is None
    reasons = insp.problems["reason"].value_counts().to_dict()
    assert reasons[RejectReason.MALFORMED_FILE] == 1
    assert any("does not match the symbol pattern" in x for x in insp.problems["detail"])
    report = check_file(src, d / "fx" / "eurusd-hourly.csv", interval="1h", now=NOW)
    assert report.accepted == 0 and report.rejected_rows == 30
    # 30 malformed symbols are shown 3 times, then counted
    assert any("… 27 more malformed_symbol" in m for m in report.messages), report.messages


def test_calendars_decide_which_days_need_bars():
    xnys, fx, crypto = get_calendar("XNYS"), get_calendar("fx"), get_calendar("24/7")
    assert xnys.expected_bars(date(2024, 12, 25), "1D") == 0  # holiday
    assert xnys.expected_bars(date(2024, 12, 28), "1D") == 0  # Saturday
    assert xnys.expected_bars(date(2024, 12, 24), "1min") == 210  # early close 13:00
    assert xnys.expected_bars(date(2024, 12, 23), "1min") == 390
    assert fx.expected_bars(date(2017, 1, 7), "1h") == 0  # Saturday
    assert fx.expected_bars(date(2017, 1, 1), "1h") == 2  # Sunday from 22:00 UTC (winter)
    assert fx.expected_bars(date(2017, 7, 2), "1h") == 3  # Sunday from 21:00 UTC (summer)
    assert fx.expected_bars(date(2017, 1, 6), "1h") == 22  # Friday until 22:00 UTC
    assert crypto.expected_bars(date(2024, 1, 6), "1min") == 1440
    with pytest.raises(ValueError, match="unknown market calendar 'XNOPE'"):
        get_calendar("XNOPE")


def test_quality_check_bounds_follow_the_symbol_calendar(settings, monkeypatch):
    from qt_pipeline.config import get_settings

    monkeypatch.setenv("QT_LANDING_CONFIG", str(EXAMPLE))
    monkeypatch.setenv("QT_QUALITY_MIN_BARS", "1")
    get_settings.cache_clear()
    s = get_settings()
    assert expected_row_range("GOOGL", date(2024, 12, 28), s) == (0, 1, "XNYS", "1D")  # weekend
    assert expected_row_range("GOOGL", date(2024, 12, 25), s) == (0, 1, "XNYS", "1D")  # holiday
    assert expected_row_range("GOOGL", date(2024, 12, 24), s) == (1, 1, "XNYS", "1D")  # trading day
    assert expected_row_range("EURUSD", date(2017, 1, 7), s)[0] == 0
    assert expected_row_range("BTCUSD", date(2024, 1, 6), s) == (1, 1440, "24/7", "1min")
    empty = pd.DataFrame(columns=["symbol", "timestamp"])
    from qt_pipeline.market.contract import empty_bars

    empty = empty_bars()
    assert run_bar_quality(empty, interval="1D", min_rows=0, max_rows=1).success  # weekend: fine
    missing = run_bar_quality(empty, interval="1D", min_rows=1, max_rows=1)  # trading day without bars
    assert not missing.success and any("row count in [1, 1]" in f for f in missing.describe_failures())


def test_implausible_values_truncated_last_line_and_size_limit(tmp_path):
    d = tmp_path / "landing"
    (d / "crypto").mkdir(parents=True)
    body = CRYPTO.strip().split("\n")
    body.append("2024-03-01T00:03:00Z,BTCUSD,1e308,61180.0,61150.1,1e308,12.5,61190.2,311")
    body.append("2024-03-01T00:04:00Z,BTCUSD,5e-324,5e-324,5e-324,5e-324,1,5e-324,1")
    body.append("2024-03-01T00:05:00Z,BTCUSD,61201.5,61180.0,61150.1,61230.0,12.5,61190.2,3")  # cut: '31'
    p = d / "crypto" / "cut.csv"
    p.write_text("\n".join(body))  # no final newline: the copy stopped inside the last field
    src = source(d)
    res = ingest(src, "BTCUSD", "2024-03-01", "2024-03-02")
    r = res.rejected
    assert sorted(r.loc[r["reason"] == "implausible_value", "line"].astype(int).unique()) == [5, 6]
    cut = r[r["reason"] == RejectReason.MALFORMED_FILE]
    assert list(cut["line"]) == [7] and "does not end with a line break" in cut["detail"].iloc[0]
    assert len(res.accepted) == 3
    small = source(d, max_file_mb=0.0001)
    insp = small.inspect(p)
    assert list(insp.problems["reason"]) == [RejectReason.FILE_TOO_LARGE]
    assert "above the limit of 0.0001 MiB (QT_LANDING_MAX_FILE_MB)" in insp.problems["detail"].iloc[0]


def test_streamed_chunks_keep_lines_partitions_and_cross_chunk_duplicates(tmp_path):
    d = tmp_path / "landing"
    (d / "crypto").mkdir(parents=True)
    start = pd.Timestamp("2024-03-01", tz="UTC")
    lines = ["Timestamp,Symbol,Close,Open,Low,High,Volume,VWAP,Trades"]
    for i in range(3000):  # ~2 days of minutes, ~250 KB
        t = start + pd.Timedelta(minutes=i)
        lines.append(f"{t:%Y-%m-%dT%H:%M:%SZ},BTCUSD,100.5,100.0,99.0,101.0,1.5,100.2,{i}")
    lines.append(lines[5])  # a duplicate of line 6, far away in another chunk
    (d / "crypto" / "big.csv").write_text("\n".join(lines) + "\n")
    whole = source(d)
    chunked = source(d, chunk_mb=0.01)  # ~10 KB chunks: dozens of them
    assert len(list(chunked.iter_chunks(d / "crypto" / "big.csv"))) > 10
    assert list(chunked.partitions()["rows"]) == list(whole.partitions()["rows"]) == [1441, 1440, 120]
    a = ingest(whole, "BTCUSD", "2024-03-02", "2024-03-03")
    b = ingest(chunked, "BTCUSD", "2024-03-02", "2024-03-03")
    pd.testing.assert_frame_equal(a.accepted, b.accepted)
    assert list(a.accepted_line) == list(b.accepted_line) == list(range(1442, 2882))
    report = check_file(chunked, d / "crypto" / "big.csv", interval="1min", now=NOW)
    assert report.chunks > 10 and report.accepted == 3000
    assert report.by_reason == {"duplicate_key": 1}
    assert any(m.startswith(f"{d / 'crypto' / 'big.csv'}:3002: duplicate_key") for m in report.messages)


def test_bad_config_names_the_file_and_field(tmp_path):
    p = tmp_path / "landing.yaml"
    p.write_text("sources:\n  - name: x\n    columns: {Px: price}\n")
    with pytest.raises(LayoutError, match=r"landing.yaml: sources.0.columns: columns targets \['price'\]"):
        load_landing_config(p)
    p.write_text("sources:\n  - name: x\n    calendar: XNOPE\n")
    with pytest.raises(LayoutError, match="unknown market calendar 'XNOPE'"):
        load_landing_config(p)


def test_off_grid_message_shows_the_converted_utc_time():
    from qt_pipeline.market.validation import validate_bars

    frame = pd.DataFrame(
        {
            "symbol": ["GOOGL"],
            "timestamp": ["2024-01-02 09:30:00"],  # New York local time, on no 1D grid in UTC
            **{c: ["10"] for c in ("open", "high", "low", "close", "volume", "vwap", "trade_count")},
        }
    )
    res = validate_bars(frame, source="x.csv", interval="1D", source_timezone="America/New_York", now=NOW)
    (detail,) = res.rejected["detail"]
    assert "timestamp '2024-01-02 09:30:00' (UTC 2024-01-02 14:30:00.000000) is not on the 1d grid" in detail


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_block_boundaries_change_nothing(tmp_path, newline):
    """The reader cuts files into blocks at record ends. Quoted fields spanning lines, rows with the wrong
    number of fields, blank lines and a last line without a line break are read the same way in 4 KB
    blocks (dozens of cuts) as in one block: same rows, line numbers and problems."""
    d = tmp_path / "landing"
    (d / "crypto").mkdir(parents=True)
    start = pd.Timestamp("2024-03-01", tz="UTC")
    rows = ["Timestamp,Symbol,Close,Open,Low,High,Volume,VWAP,Trades"]
    for i in range(1500):
        t = start + pd.Timedelta(minutes=i)
        sym = '"BTC\nUSD"' if i % 97 == 5 else "BTCUSD"  # a quoted value spanning two lines
        rows.append(f"{t:%Y-%m-%dT%H:%M:%SZ},{sym},100.5,100.0,99.0,101.0,1.5,100.2,{i}")
        if i % 211 == 7:
            rows.append("2024-03-01T00:00:00Z,BTCUSD,1,2")  # too few fields
        if i % 307 == 11:
            rows.append("")
    text = newline.join(rows)  # no line break after the last line: it may have been cut
    (d / "crypto" / "big.csv").write_bytes(text.encode())
    path = d / "crypto" / "big.csv"
    whole = source(d).read_file(path)
    chunked_src = source(d, chunk_mb=0.01)
    assert chunked_src.block_bytes == 4096
    chunks = list(chunked_src.iter_chunks(path))
    assert len(chunks) > 20
    blocked = chunked_src.read_file(path)
    pd.testing.assert_frame_equal(whole.frame, blocked.frame)
    assert list(whole.line_numbers) == list(blocked.line_numbers)
    cols = ["reason", "line", "detail"]
    pd.testing.assert_frame_equal(whole.problems[cols], blocked.problems[cols])
    physical = text.replace("\r\n", "\n").split("\n")
    n_quoted = sum(1 for i in range(1500) if i % 97 == 5)
    n_short = sum(1 for i in range(1500) if i % 211 == 7)
    n_blank = sum(1 for i in range(1500) if i % 307 == 11)
    assert len(physical) == 1 + 1500 + n_quoted + n_short + n_blank
    # every accepted row's line number points at its own physical line, and the short rows are named
    assert len(blocked.frame) == 1500 - 1  # the last (unterminated) line is rejected as possibly cut
    for ln, ts in zip(blocked.line_numbers, blocked.frame["timestamp"], strict=True):
        assert physical[ln - 1].startswith(ts), (ln, ts)
    prob = blocked.problems
    short = prob[prob["detail"].str.startswith("line has 4 fields")]
    assert len(short) == n_short
    assert all(physical[int(ln) - 1] == "2024-03-01T00:00:00Z,BTCUSD,1,2" for ln in short["line"])
    cut = prob[prob["detail"].str.contains("does not end with a line break")]
    assert list(cut["line"]) == [len(physical)]


def test_seen_keys_hold_runs_not_bars():
    from qt_pipeline.market.filecheck import SeenKeys

    step = 60 * 10**9
    seen = SeenKeys("1min")
    ts = np.arange(100_000, dtype=np.int64) * step
    for part in np.array_split(ts, 10):  # in order, chunk by chunk: one run in all
        assert not seen.add(np.full(len(part), "BTC", dtype=object), part).any()
    assert seen.n_runs == 1
    again = seen.add(
        np.array(["BTC", "BTC", "ETH"], dtype=object), np.array([5 * step, 10**6 * step, 5 * step])
    )
    assert list(again) == [True, False, False]  # a repeat; a new bar after a gap; another symbol
    assert seen.n_runs == 3
    off = seen.add(np.array(["BTC"], dtype=object), np.array([5 * step + 1]))  # another phase: not a repeat
    assert list(off) == [False]
    rng = np.random.default_rng(0)
    ref: set[tuple[str, int]] = set()
    keys = SeenKeys("1min")
    for _ in range(40):  # random order, symbols and phases against a plain set
        n = int(rng.integers(1, 60))
        batch = {
            (str(s), int(t))
            for s, t in zip(
                rng.choice(["A", "B"], n), rng.integers(0, 50, n) * step + rng.choice([0, 7], n), strict=True
            )
        }
        sy = np.array([k[0] for k in batch], dtype=object)
        t = np.array([k[1] for k in batch], dtype=np.int64)
        assert list(keys.add(sy, t)) == [k in ref for k in batch]
        ref |= batch


def test_blocks_of_only_malformed_records_keep_every_line(tmp_path):
    """Blocks in which no record parses still report each record with its physical line (quoted line
    breaks counted), and the file is not called empty."""
    d = tmp_path / "landing"
    (d / "crypto").mkdir(parents=True)
    rows = ["Timestamp,Symbol,Close,Open,Low,High,Volume,VWAP,Trades", *['"a\nb",1,2'] * 3000]
    path = d / "crypto" / "bad.csv"
    path.write_text("\n".join(rows) + "\n")
    chunks = list(source(d, chunk_mb=0.01).iter_chunks(path))
    assert len(chunks) > 5 and sum(len(c.frame) for c in chunks) == 0
    problems = pd.concat([c.problems for c in chunks], ignore_index=True)
    assert set(problems["reason"]) == {RejectReason.MALFORMED_FILE}
    assert list(problems["line"]) == list(range(2, 6001, 2))
