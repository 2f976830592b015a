from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from qt_pipeline.evolution import genome as G
from qt_pipeline.evolution.genome import (
    GENES,
    LOWER,
    N_GENES,
    UPPER,
    Gene,
    Strategy,
    always_long,
    decode,
    decode_population,
    genome_from_dict,
    genome_to_dict,
    random_population,
    repair,
)

ROUNDED = np.array([g.kind != "float" for g in GENES])


def test_gene_table_is_consistent():
    assert N_GENES == len(GENES) == LOWER.shape[0] == UPPER.shape[0]
    assert len({g.name for g in GENES}) == N_GENES
    assert (LOWER <= UPPER).all()
    for g in GENES:
        if g.kind == "choice":
            assert (g.low, g.high) == (0, len(g.choices) - 1)
    with pytest.raises(ValueError, match="choice bounds"):
        Gene("x", "choice", 0, 5, ("a", "b"))
    with pytest.raises(ValueError, match="kind must be"):
        Gene("x", "bool", 0, 1)  # type: ignore[arg-type]


def test_random_population_is_bounded_repaired_and_seeded():
    pop = random_population(np.random.default_rng(7), 500)
    assert pop.shape == (500, N_GENES) and pop.dtype == np.float64
    assert (pop >= LOWER).all() and (pop <= UPPER).all()
    assert np.array_equal(pop[:, ROUNDED], np.rint(pop[:, ROUNDED]))
    assert np.array_equal(repair(pop), pop)
    assert np.array_equal(pop, random_population(np.random.default_rng(7), 500))
    assert not np.array_equal(pop, random_population(np.random.default_rng(8), 500))
    # every choice (including both end points) is reachable
    for j, g in enumerate(GENES):
        if g.kind == "choice":
            assert set(np.unique(pop[:, j]).astype(int)) == set(range(len(g.choices))), g.name


def test_repair_clips_rounds_and_is_idempotent():
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 50, (200, N_GENES))
    once = repair(raw)
    assert (once >= LOWER).all() and (once <= UPPER).all()
    assert np.array_equal(once[:, ROUNDED], np.rint(once[:, ROUNDED]))
    assert np.array_equal(repair(once), once)
    # in-range float genes are untouched, the input is not modified
    inside = random_population(rng, 5)
    inside_copy = inside.copy()
    assert np.array_equal(repair(inside), inside)
    assert np.array_equal(inside, inside_copy)
    # one genome in, one genome out
    assert repair(raw[0]).shape == (N_GENES,)
    with pytest.raises(ValueError, match=f"shape \\(n, {N_GENES}\\)"):
        repair(np.zeros((3, N_GENES + 1)))
    with pytest.raises(ValueError, match="non-finite"):
        repair(np.full(N_GENES, np.nan))


def test_decode_every_random_genome_to_a_valid_strategy():
    pop = random_population(np.random.default_rng(3), 300)
    kinds = set()
    for vec in pop:
        s = decode(vec)
        kinds.add(s.entry.kind)
        assert s.entry.kind in G.ENTRY_KINDS
        assert s.direction in G.DIRECTIONS
        assert 0 < s.position_size <= 1 and s.stop_loss >= 0 and s.take_profit >= 0
        if s.entry.kind in G.CROSS_KINDS:
            assert s.entry.period < s.entry.period2
        assert s.entry.period in G.PERIODS
        text = s.describe()
        assert "Orders act on the bar after the signal" in text and len(text) > 80
        assert Strategy.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert kinds == set(G.ENTRY_KINDS)


def test_a_population_decodes_as_each_genome_reads_gene_by_gene():
    """decode_population repairs the population once and reads Python floats; every strategy must be
    the one the genes give one by one (Gene.decode clips and rounds each gene itself), for genomes far
    outside the bounds and between whole values too."""
    rng = np.random.default_rng(11)
    raw = LOWER - 2.0 + rng.random((400, N_GENES)) * (UPPER - LOWER + 4.0)
    raw[::7, ROUNDED] = np.floor(raw[::7, ROUNDED]) + 0.5  # exactly between two choices: round half even
    raw[::5, G.GENE_INDEX["stop_loss"]] = -0.0
    got = decode_population(raw)
    assert len(got) == len(raw)
    for vec, s in zip(raw, got, strict=True):
        assert s == decode(vec)
        native = {g.name: g.decode(x) for g, x in zip(GENES, vec, strict=True)}
        assert s.direction == native["direction"] and s.entry.kind == native["entry_kind"]
        assert s.position_size == native["position_size"] and s.atr_period == native["atr_period"]
        assert s.regime_mask == native["regime_mask"] and type(s.regime_mask) is int
        assert s.stop_loss == max(0.0, native["stop_loss"])
        assert (s.exit is None) == (native["exit_kind"] == "opposite")
        if s.entry.kind not in G.CROSS_KINDS and s.entry.kind != "always":
            assert s.entry.period == native["entry_period"]
            assert s.entry.level == native["entry_level"]
    assert decode_population(np.empty((0, N_GENES))) == []
    with pytest.raises(ValueError, match="non-finite"):
        decode_population(np.full((2, N_GENES), np.inf))


def _genome(**native) -> np.ndarray:
    base = genome_to_dict(random_population(np.random.default_rng(0), 1)[0])
    base.update(native)
    return genome_from_dict(base)


def test_decode_maps_off_ranges_and_degenerate_crosses():
    v = _genome(entry_kind="sma_cross", entry_period=20, entry_period2=20, exit_kind="opposite",
                stop_loss=-0.01, take_profit=-0.05, atr_stop=-1.0, correlation_max=1.0, regime_mask=0,
                direction="both", position_size=0.5, entry_level=0.0)  # fmt: skip
    s = decode(v)
    assert (s.entry.period, s.entry.period2) == (20, 25)  # next longer slow period
    assert s.exit is None
    assert s.stop_loss == 0.0 and s.take_profit == 0.0 and s.atr_stop == 0.0
    assert s.correlation_max == 0.0 and s.regime_mask == 0
    assert s.entry.threshold == 0.0 and s.position_size == 0.5
    assert "no fixed stop-loss" in s.describe() and "no take-profit" in s.describe()
    s2 = decode(_genome(entry_kind="ema_cross", entry_period=400, entry_period2=400))
    assert (s2.entry.period, s2.entry.period2) == (300, 400)
    s3 = decode(_genome(entry_kind="rsi", entry_period=14, entry_level=0.5, entry_comparison="below",
                        stop_loss=0.02, correlation_max=0.4, regime_mask=5))  # fmt: skip
    assert s3.entry.threshold == pytest.approx(20.0)
    assert "RSI(14) is below 30.0" in s3.describe() if s3.direction != "short" else True
    assert s3.stop_loss == 0.02 and s3.correlation_max == 0.4 and s3.regime_mask == 5
    # mask 5 = codes 0 and 2: named, not numbered
    assert (
        "enters only in trend_up / range regimes" in s3.describe()
        and "|correlation| <= 0.40" in s3.describe()
    )
    # without the series the filters are inactive in the backtester, and the description says so
    bare = s3.describe(regime_data=False, correlation_data=False)
    assert "regimes" not in bare and "|correlation|" not in bare
    assert "no regime or correlation filter (the data has no regime or correlation series)" in bare
    only_corr = s3.describe(regime_data=False)
    assert "trend_up" not in only_corr and "|correlation| <= 0.40" in only_corr


def test_genome_dict_round_trip_is_exact_and_json_friendly():
    pop = random_population(np.random.default_rng(11), 50)
    for vec in pop:
        d = genome_to_dict(vec)
        assert list(d) == [g.name for g in GENES]
        back = genome_from_dict(json.loads(json.dumps(d)))
        assert np.array_equal(back, vec)
        assert decode(back) == decode(vec)


def test_genome_from_dict_rejects_bad_input_precisely():
    d = genome_to_dict(random_population(np.random.default_rng(0), 1)[0])
    bad = dict(d)
    del bad["direction"]
    bad["colour"] = "red"
    with pytest.raises(ValueError, match=r"missing \['direction'\], unknown \['colour'\]"):
        genome_from_dict(bad)
    with pytest.raises(ValueError, match="'direction': 'sideways' is not one of the choices"):
        genome_from_dict({**d, "direction": "sideways"})
    with pytest.raises(ValueError, match="'position_size': 2.0 is outside"):
        genome_from_dict({**d, "position_size": 2.0})
    with pytest.raises(ValueError, match="'regime_mask': expected an integer"):
        genome_from_dict({**d, "regime_mask": 1.5})


def test_strategy_validation_and_always_long():
    s = always_long()
    assert s.entry.kind == "always" and s.direction == "long" and s.position_size == 1.0
    assert "from the first bar's close" in s.describe()
    with pytest.raises(ValueError, match="position_size must be in"):
        always_long(position_size=0.0)
    with pytest.raises(ValueError, match="direction must be one of"):
        Strategy(entry=s.entry, exit=None, direction="up")
    with pytest.raises(ValueError, match="needs two different periods"):
        G.make_rule("sma_cross", 10, 10)


def test_importing_the_package_or_the_genome_does_not_import_numba():
    """Dagster definitions and config code import evolution submodules: they must stay light."""
    code = (
        "import sys, qt_pipeline.evolution, qt_pipeline.evolution.genome as g; "
        "assert 'numba' not in sys.modules, 'numba imported'; "
        "from qt_pipeline.evolution import N_GENES; assert N_GENES == g.N_GENES"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
