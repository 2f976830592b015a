"""GA operators, hall of fame, diversity and determinism (real backtester on synthetic bars)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qt_pipeline.evolution import LOWER, N_GENES, UPPER, Costs, FitnessConfig, MarketData, repair
from qt_pipeline.evolution.fitness import fitness
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
        m = ev.evaluate(pop)[:, 0]
        return m, fitness(m, cfg)

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


def test_hall_of_fame_keeps_one_strategy_per_behaviour():
    pop = _pop(12, 5)
    fit = np.array([2.0, 2.0, 1.5, 2.0, 0.1])
    met = np.arange(5 * 9, dtype=float).reshape(5, 9)
    met[1] = met[0]  # genome 1 behaves exactly like genome 0 (same fitness, same metrics)
    hof = HallOfFame.empty(N_GENES, 9).update(pop, fit, met, 0, 4)
    assert [g.tobytes() for g in hof.genomes] == [pop[i].tobytes() for i in (0, 3, 2, 4)]
    # a clone arriving later does not displace the earlier one either
    later = HallOfFame.empty(N_GENES, 9).update(pop[[3]], fit[[3]], met[[3]], 0, 4)
    later = later.update(_pop(13, 1), fit[[3]], met[[3]], 1, 4)
    assert len(later) == 1 and later.generation[0] == 0
    # same metrics but a different fitness is a different behaviour claim and is kept
    other = HallOfFame.empty(N_GENES, 9).update(pop[:2], np.array([2.0, 1.0]), met[:2], 0, 4)
    assert len(other) == 2


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


def test_hall_of_fame_keeps_the_fittest_of_each_phenotype():
    pop = _pop(14, 6)
    pop[:, 0] = [1.0, 1.0, 2.0, 1.0, 3.0, 2.0]  # phenotype = first gene
    fit = np.array([1.0, 5.0, 2.0, 0.5, 0.1, 4.0])
    met = np.arange(6 * 9, dtype=float).reshape(6, 9)
    hof = HallOfFame.empty(N_GENES, 9).update(pop, fit, met, 0, 5, phenotype=lambda g: g[0])
    assert list(hof.fitness) == [5.0, 4.0, 0.1]  # best of phenotype 1, 2, 3
    assert [g.tobytes() for g in hof.genomes] == [pop[i].tobytes() for i in (1, 5, 4)]
    # a fitter near-clone arriving later replaces the member with its phenotype
    clone = pop[[4]].copy()
    clone[0, 1] += 0.5
    hof2 = hof.update(clone, np.array([9.0]), met[:1], 3, 5, phenotype=lambda g: g[0])
    assert list(hof2.fitness) == [9.0, 5.0, 4.0] and hof2.generation[0] == 3


def test_ga_hall_of_fame_drops_near_clones_of_a_strategy():
    from qt_pipeline.evolution.ga import _strategy_text
    from qt_pipeline.evolution.genome import GENE_INDEX, decode, random_population

    base = repair(random_population(np.random.default_rng(3), 1))[0]
    base[GENE_INDEX["position_size"]] = 0.5
    near = base.copy()
    near[GENE_INDEX["position_size"]] = 0.501  # reads "50% of equity" too
    other = base.copy()
    other[GENE_INDEX["position_size"]] = 0.6
    pop = np.stack([base, near, other])
    assert decode(base).describe() == decode(near).describe() != decode(other).describe()
    met = np.arange(3 * 9, dtype=float).reshape(3, 9)  # three different behaviours
    fit = np.array([1.0, 2.0, 0.5])
    hof = HallOfFame.empty(N_GENES, 9).update(pop, fit, met, 0, 5, phenotype=_strategy_text)
    assert [g.tobytes() for g in hof.genomes] == [near.tobytes(), other.tobytes()]

    def evaluate(p: np.ndarray):
        return np.ascontiguousarray(p[:, :9]), np.round(p[:, 0]) + np.round(p[:, 1])

    ga = GeneticAlgorithm(GAParams(population_size=30, elite=2, hall_of_fame_size=8), evaluate)
    state = ga.initial(5)
    for _ in range(4):
        state = ga.step(state)
    texts = [decode(g).describe() for g in state.hall_of_fame.genomes]
    assert len(texts) == len(set(texts)) == len(state.hall_of_fame) == 8
    assert list(state.hall_of_fame.fitness) == sorted(state.hall_of_fame.fitness, reverse=True)
