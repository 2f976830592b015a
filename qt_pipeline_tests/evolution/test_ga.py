"""GA operators, hall of fame, diversity and determinism (real backtester on synthetic bars)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qt_pipeline.evolution import LOWER, N_GENES, UPPER, Costs, FitnessConfig, MarketData, repair
from qt_pipeline.evolution.ga import (
    GAParams,
    GeneticAlgorithm,
    HallOfFame,
    diversity,
    polynomial_mutation,
    sbx_bounded,
    tournament_select,
)
from qt_pipeline.evolution.ray_eval import SerialEvaluator
from qt_pipeline.evolution.report import symbol_fitness
from qt_pipeline_tests.evolution.evo_helpers import synthetic_bars

LOW = np.asarray(LOWER, float)
UP = np.asarray(UPPER, float)


@pytest.fixture(scope="module")
def evaluate():
    data = MarketData.from_frame(synthetic_bars("BTCUSD", 2000, seed=3))
    ev = SerialEvaluator()
    ev.set_data([data], Costs(), 525_960.0)
    cfg = FitnessConfig(min_trades=3)

    def fn(pop):
        m3 = ev.evaluate(pop)
        return m3.mean(axis=1), symbol_fitness(m3, cfg)

    return fn


def _pop(seed: int, n: int = 20) -> np.ndarray:
    from qt_pipeline.evolution import random_population

    return repair(random_population(np.random.default_rng(seed), n))


def test_tournament_with_whole_population_always_picks_the_best():
    rng = np.random.default_rng(0)
    fit = np.array([0.1, 5.0, -3.0, 2.0])
    # k much larger than n: every tournament almost surely contains index 1
    idx = tournament_select(rng, fit, 50, 40)
    assert (idx == 1).all()
    idx1 = tournament_select(np.random.default_rng(0), fit, 1000, 1)
    assert set(np.unique(idx1)) == {0, 1, 2, 3}  # k=1 is uniform random selection


def test_sbx_and_mutation_stay_in_bounds_and_respect_probabilities():
    rng = np.random.default_rng(1)
    a, b = _pop(1, 30), _pop(2, 30)
    c1, c2 = sbx_bounded(rng, a, b, 15.0, LOW, UP, 1.0)
    assert ((c1 >= LOW) & (c1 <= UP)).all() and ((c2 >= LOW) & (c2 <= UP)).all()
    assert not np.array_equal(c1, a)  # crossover happened
    # per gene, the two children hold values spread around the parents' (SBX preserves the mean when
    # no bound is hit): children differ from parents only where parents differ
    same = a == b
    assert np.array_equal(c1[same], a[same]) and np.array_equal(c2[same], b[same])
    n0, m0 = sbx_bounded(rng, a, b, 15.0, LOW, UP, 0.0)
    assert np.array_equal(n0, a) and np.array_equal(m0, b)
    m = polynomial_mutation(rng, a, 20.0, LOW, UP, 1.0, 1.0)
    assert ((m >= LOW) & (m <= UP)).all() and not np.array_equal(m, a)
    assert np.array_equal(polynomial_mutation(rng, a, 20.0, LOW, UP, 0.0, 1.0), a)
    assert np.array_equal(polynomial_mutation(rng, a, 20.0, LOW, UP, 1.0, 0.0), a)


def test_diversity_matches_brute_force_and_is_zero_for_clones():
    pop = _pop(5, 15)
    width = np.where(UP > LOW, UP - LOW, 1.0)
    z = (pop - LOW) / width
    brute = np.mean([np.mean(np.abs(z[i] - z[j])) for i, j in itertools.combinations(range(len(z)), 2)])
    assert diversity(pop, LOW, UP) == pytest.approx(brute, rel=1e-12)
    clones = np.repeat(pop[:1], 10, axis=0)
    assert diversity(clones, LOW, UP) == 0.0


def test_hall_of_fame_keeps_best_unique_genomes_earliest_first():
    pop = _pop(9, 6)
    fit = np.array([1.0, 3.0, 2.0, 3.0, 0.5, -1.0])
    met = np.arange(6 * 9, dtype=float).reshape(6, 9)
    hof = HallOfFame.empty(N_GENES, 9).update(pop, fit, met, 0, 4)
    assert list(hof.fitness) == [3.0, 3.0, 2.0, 1.0]
    assert np.array_equal(hof.genomes[0], pop[1]) and np.array_equal(hof.genomes[1], pop[3])  # stable ties
    # the same genomes again (later generation, better fitness claim) do not create duplicates
    hof2 = hof.update(pop[[1, 2]], np.array([3.0, 2.0]), met[[1, 2]], 5, 4)
    assert len({g.tobytes() for g in hof2.genomes}) == 4
    assert list(hof2.generation) == [0, 0, 0, 0]
    new = _pop(10, 1)
    hof3 = hof2.update(new, np.array([10.0]), met[:1], 7, 4)
    assert np.array_equal(hof3.genomes[0], new[0]) and hof3.generation[0] == 7 and len(hof3) == 4


def _run(ga: GeneticAlgorithm, seed: int, gens: int):
    state = ga.initial(seed)
    history = [state]
    for _ in range(gens):
        state = ga.step(state)
        history.append(state)
    return history


def test_ga_is_deterministic_for_a_seed_and_elitist(evaluate):
    params = GAParams(population_size=14, elite=2, hall_of_fame_size=5)
    h1 = _run(GeneticAlgorithm(params, evaluate), 123, 4)
    h2 = _run(GeneticAlgorithm(params, evaluate), 123, 4)
    for a, b in zip(h1, h2, strict=True):
        assert a.population.tobytes() == b.population.tobytes()
        assert a.fitness.tobytes() == b.fitness.tobytes()
        assert a.hall_of_fame.genomes.tobytes() == b.hall_of_fame.genomes.tobytes()
        assert a.rng_state == b.rng_state
    h3 = _run(GeneticAlgorithm(params, evaluate), 124, 1)
    assert h3[0].population.tobytes() != h1[0].population.tobytes()
    best = [s.stats.best_fitness for s in h1]
    assert best == sorted(best)  # elitism: the best never gets worse
    assert [s.evaluations for s in h1] == [14, 26, 38, 50, 62]  # elites are not re-evaluated
    assert all(((s.population >= LOW) & (s.population <= UP)).all() for s in h1)
    assert all(np.array_equal(repair(s.population), s.population) for s in h1)
    assert h1[-1].stats.diversity < h1[0].stats.diversity  # selection pressure concentrates the population


def test_restored_rng_state_continues_exactly(evaluate):
    params = GAParams(population_size=10, elite=1, hall_of_fame_size=3)
    ga = GeneticAlgorithm(params, evaluate)
    h = _run(ga, 5, 3)
    # rebuild generation 1 from copies of its parts (as a checkpoint would) and continue
    s1 = h[1]
    from dataclasses import replace

    restored = replace(
        s1,
        population=s1.population.copy(),
        fitness=s1.fitness.copy(),
        metrics=s1.metrics.copy(),
        rng_state=dict(s1.rng_state),
    )
    s3 = ga.step(ga.step(restored))
    assert s3.population.tobytes() == h[3].population.tobytes()
    assert s3.fitness.tobytes() == h[3].fitness.tobytes()
