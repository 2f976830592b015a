"""The genetic algorithm: tournament selection, bounded SBX crossover, bounded polynomial mutation,
elitism, a hall of fame and a diversity measure — deterministic for a seed and exactly resumable.

Why our own vectorised operators instead of ``deap.tools``
-----------------------------------------------------------
The operators are the ones DEAP ships (``selTournament``, ``cxSimulatedBinaryBounded``,
``mutPolynomialBounded``, Deb's formulas, same parameters ``eta``/``indpb``), re-written over the
whole population with NumPy. We decided against calling DEAP itself because:

* DEAP draws from the *process-global* :mod:`random` module. In a Dagster step or next to a Ray driver
  other code (threads included) may draw from it too, so "same seed → same result" and "resume →
  bit-identical result" could not be guaranteed; patching DEAP's module globals would be worse.
* All randomness here comes from one dedicated :class:`numpy.random.Generator` (PCG64). Its state
  (``bit_generator.state``, a small JSON-safe dict) is checkpointed after every generation and restored
  exactly on resume.
* Every random draw has a fixed shape per generation (no data-dependent number of draws), which keeps
  the stream aligned; and the vectorised code is shorter than wrapping genomes in DEAP ``creator``
  classes (population 200 × ~20 genes: microseconds either way — the backtest dominates).

Genomes are float64 rows (see :mod:`qt_pipeline.evolution.genome`): ``repair`` clips to bounds and rounds
integer/choice genes after every variation step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# evaluate(pop) -> (metrics (n, m) float64, fitness (n,) float64)
EvaluateFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class GAParams:
    population_size: int = 50
    tournament_size: int = 3
    crossover_prob: float = 0.9
    mutation_prob: float = 0.3
    gene_mutation_prob: float = 0.2
    sbx_eta: float = 15.0
    mutation_eta: float = 20.0
    elite: int = 2
    hall_of_fame_size: int = 10

    @classmethod
    def from_config(cls, cfg: Any) -> GAParams:
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class HallOfFame:
    """The best ``size`` genomes ever evaluated, best first (ties: the earlier one first), one per genome,
    one per behaviour (genomes with bit-identical fitness and metrics count once) and, with a
    ``phenotype`` function, one per phenotype (near-clones that differ only below the precision a
    researcher reads, e.g. a position size of 77.2% vs 77.4%, count once)."""

    genomes: np.ndarray  # (k, G)
    fitness: np.ndarray  # (k,)
    metrics: np.ndarray  # (k, m)
    generation: np.ndarray  # (k,) int64: generation in which the genome was first evaluated

    @classmethod
    def empty(cls, n_genes: int, n_metrics: int) -> HallOfFame:
        return cls(np.empty((0, n_genes)), np.empty(0), np.empty((0, n_metrics)), np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.fitness)

    def update(
        self,
        pop: np.ndarray,
        fitness: np.ndarray,
        metrics: np.ndarray,
        generation: int,
        size: int,
        phenotype: Callable[[np.ndarray], object] | None = None,
        behaviour_column: int | None = None,
    ) -> HallOfFame:
        """The hall of fame after seeing ``pop``. ``phenotype(genome)`` (optional) names what a genome
        looks like to a researcher (the GA passes the strategy's plain-English description): of several
        genomes with the same phenotype only the fittest (earliest on ties) is kept. ``behaviour_column``
        (optional) is a metric column that identifies a behaviour (the backtester's trade fingerprint):
        near-duplicates that make the same trades (e.g. with another position size) count once."""
        genomes = np.concatenate([self.genomes, pop])
        fit = np.concatenate([self.fitness, fitness])
        met = np.concatenate([self.metrics, metrics])
        gen = np.concatenate([self.generation, np.full(len(pop), generation, dtype=np.int64)])
        _, first = np.unique(
            np.ascontiguousarray(genomes).view(np.dtype((np.void, genomes.shape[1] * 8))), return_index=True
        )
        first = np.sort(first)  # keep the earliest occurrence of each genome, in insertion order
        ranked = first[np.argsort(-fit[first], kind="stable")]
        # Different genomes can behave identically (a gene that does not act, e.g. an ATR period while the
        # ATR stop is off): the same fitness and metric row bit for bit. A hall of fame of clones tells a
        # researcher nothing, so keep one strategy per behaviour, the earliest found.
        if behaviour_column is None:
            behaviour = np.ascontiguousarray(np.column_stack([fit[ranked], met[ranked]]))
        else:
            behaviour = np.ascontiguousarray(met[ranked][:, [behaviour_column]])
        _, distinct = np.unique(
            behaviour.view(np.dtype((np.void, behaviour.shape[1] * 8))), return_index=True
        )
        order = ranked[np.sort(distinct)]
        if phenotype is None:
            order = order[:size]
        else:
            seen: set[object] = set()
            keep: list[int] = []
            for i in order:
                key = phenotype(genomes[i])
                if key not in seen:
                    seen.add(key)
                    keep.append(int(i))
                    if len(keep) == size:
                        break
            order = np.asarray(keep, dtype=np.int64)
        return HallOfFame(
            np.ascontiguousarray(genomes[order]),
            fit[order].copy(),
            np.ascontiguousarray(met[order]),
            gen[order].copy(),
        )


@dataclass(frozen=True)
class GenerationStats:
    generation: int
    best_fitness: float
    mean_fitness: float
    std_fitness: float
    diversity: float
    evaluations: int  # genomes evaluated in this generation
    seconds: float  # wall time of this generation (breeding + evaluation)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class GAState:
    """Everything needed to continue the GA exactly: what a checkpoint holds."""

    generation: int
    population: np.ndarray  # (n, G)
    fitness: np.ndarray  # (n,)
    metrics: np.ndarray  # (n, m)
    rng_state: dict[str, Any]
    hall_of_fame: HallOfFame
    evaluations: int  # total genomes evaluated so far in the run
    stats: GenerationStats | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.fitness))


# --- operators (vectorised DEAP equivalents) ---------------------------------------------------------
def tournament_select(rng: np.random.Generator, fitness: np.ndarray, n_select: int, k: int) -> np.ndarray:
    """Indices of ``n_select`` tournament winners (``k`` aspirants each, drawn with replacement;
    ties go to the first aspirant) — ``deap.tools.selTournament``."""
    aspirants = rng.integers(0, len(fitness), size=(n_select, k))
    return aspirants[np.arange(n_select), np.argmax(fitness[aspirants], axis=1)]


def sbx_bounded(
    rng: np.random.Generator,
    a: np.ndarray,
    b: np.ndarray,
    eta: float,
    low: np.ndarray,
    up: np.ndarray,
    pair_prob: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated binary crossover with bounds (Deb) for pairs of rows ``a[i]``/``b[i]``, each pair
    crossed with probability ``pair_prob`` and each gene of a crossed pair with probability 0.5 —
    ``deap.tools.cxSimulatedBinaryBounded`` vectorised. Fixed-shape draws: 3 arrays per call."""
    n, g = a.shape
    pair_draw = rng.random((n,))
    gene_draw = rng.random((n, g))
    rand = rng.random((n, g))
    c1, c2 = a.copy(), b.copy()
    x1 = np.minimum(a, b)
    x2 = np.maximum(a, b)
    span = x2 - x1
    mask = (pair_draw[:, None] < pair_prob) & (gene_draw <= 0.5) & (span > 1e-14) & (up > low)
    if not mask.any():
        return c1, c2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        safe_span = np.where(mask, span, 1.0)
        ex = eta + 1.0

        def beta_q(beta: np.ndarray) -> np.ndarray:
            alpha = 2.0 - beta ** (-ex)
            lo_branch = (rand * alpha) ** (1.0 / ex)
            hi_branch = (1.0 / (2.0 - rand * alpha)) ** (1.0 / ex)
            return np.where(rand <= 1.0 / alpha, lo_branch, hi_branch)

        beta1 = 1.0 + 2.0 * (x1 - low) / safe_span
        y1 = 0.5 * (x1 + x2 - beta_q(beta1) * span)
        beta2 = 1.0 + 2.0 * (up - x2) / safe_span
        y2 = 0.5 * (x1 + x2 + beta_q(beta2) * span)
    y1 = np.clip(y1, low, up)
    y2 = np.clip(y2, low, up)
    swap = rng.random((n, g)) <= 0.5  # which child gets which value (fixed-shape draw)
    c1 = np.where(mask, np.where(swap, y2, y1), c1)
    c2 = np.where(mask, np.where(swap, y1, y2), c2)
    return c1, c2


def polynomial_mutation(
    rng: np.random.Generator,
    x: np.ndarray,
    eta: float,
    low: np.ndarray,
    up: np.ndarray,
    ind_prob: float,
    gene_prob: float,
) -> np.ndarray:
    """Bounded polynomial mutation (Deb): each row mutates with probability ``ind_prob``, then each of
    its genes with ``gene_prob`` — ``deap.tools.mutPolynomialBounded`` vectorised."""
    n, g = x.shape
    ind_draw = rng.random((n,))
    gene_draw = rng.random((n, g))
    rand = rng.random((n, g))
    width = up - low
    mask = (ind_draw[:, None] < ind_prob) & (gene_draw < gene_prob) & (width > 0)
    if not mask.any():
        return x.copy()
    safe_w = np.where(width > 0, width, 1.0)
    d1 = (x - low) / safe_w
    d2 = (up - x) / safe_w
    mut_pow = 1.0 / (eta + 1.0)
    with np.errstate(invalid="ignore"):
        val_lo = 2.0 * rand + (1.0 - 2.0 * rand) * (1.0 - d1) ** (eta + 1.0)
        val_hi = 2.0 * (1.0 - rand) + 2.0 * (rand - 0.5) * (1.0 - d2) ** (eta + 1.0)
        dq = np.where(rand < 0.5, val_lo**mut_pow - 1.0, 1.0 - val_hi**mut_pow)
    y = np.clip(x + dq * width, low, up)
    return np.where(mask, y, x)


def diversity(pop: np.ndarray, low: np.ndarray, up: np.ndarray) -> float:
    """Mean pairwise distance of genomes with every gene normalised to [0, 1] (mean absolute gene
    difference, so 0 = all identical, 1/3 ≈ uniform random population)."""
    n = len(pop)
    if n < 2:
        return 0.0
    width = np.where(up > low, up - low, 1.0)
    z = (pop - low) / width
    total = 0.0
    k = np.arange(1, n)
    weight = k * (n - k)  # gap j of the sorted values lies between k=j+1 values below and n-k above
    for j in range(z.shape[1]):  # sum_{i<k} |z_i - z_k| per gene via sorting: O(n log n), never < 0
        total += float(np.sum(np.diff(np.sort(z[:, j])) * weight))
    return total / (n * (n - 1) / 2) / z.shape[1]


def generation_stats(
    generation: int, pop: np.ndarray, fitness: np.ndarray, evaluations: int, seconds: float
) -> GenerationStats:
    from qt_pipeline.evolution.genome import LOWER, UPPER

    return GenerationStats(
        generation=generation,
        best_fitness=float(np.max(fitness)),
        mean_fitness=float(np.mean(fitness)),
        std_fitness=float(np.std(fitness)),
        diversity=diversity(pop, np.asarray(LOWER, float), np.asarray(UPPER, float)),
        evaluations=evaluations,
        seconds=seconds,
    )


def _strategy_text(g: np.ndarray) -> str:
    """A genome's phenotype as the researcher sees it: the decoded strategy's description."""
    from qt_pipeline.evolution.genome import decode

    return decode(g).describe()


class GeneticAlgorithm:
    """Generational GA over genome vectors; ``evaluate`` maps a population to (metrics, fitness).

    ``initial(seed)`` builds and evaluates generation 0; ``step(state)`` breeds and evaluates the next
    one. Both are pure functions of their inputs plus ``evaluate`` (itself pure), so a state restored from
    a checkpoint continues exactly as the uninterrupted run would.
    """

    def __init__(self, params: GAParams, evaluate: EvaluateFn, *, behaviour_column: int | None = None):
        from qt_pipeline.evolution import genome

        self.params = params
        self.behaviour_column = behaviour_column
        self.evaluate = evaluate
        self._genome = genome
        self.low = np.asarray(genome.LOWER, dtype=np.float64)
        self.up = np.asarray(genome.UPPER, dtype=np.float64)

    def _eval(self, pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        metrics, fitness = self.evaluate(pop)
        metrics = np.asarray(metrics, dtype=np.float64)
        fitness = np.asarray(fitness, dtype=np.float64)
        if fitness.shape != (len(pop),) or len(metrics) != len(pop):
            raise RuntimeError(
                f"evaluator returned fitness {fitness.shape} / metrics {metrics.shape} for {len(pop)} genomes"
            )
        if not np.isfinite(fitness).all():
            raise RuntimeError(
                "fitness returned non-finite values; FitnessConfig must map them to a finite penalty"
            )
        return metrics, fitness

    def initial(self, seed: int) -> GAState:
        t0 = time.perf_counter()
        rng = np.random.Generator(np.random.PCG64(seed))
        pop = np.ascontiguousarray(
            self._genome.repair(self._genome.random_population(rng, self.params.population_size)),
            dtype=np.float64,
        )
        metrics, fitness = self._eval(pop)
        hof = HallOfFame.empty(pop.shape[1], metrics.shape[1]).update(
            pop, fitness, metrics, 0, self.params.hall_of_fame_size, _strategy_text, self.behaviour_column
        )
        stats = generation_stats(0, pop, fitness, len(pop), time.perf_counter() - t0)
        return GAState(0, pop, fitness, metrics, dict(rng.bit_generator.state), hof, len(pop), stats)

    def breed(
        self, rng: np.random.Generator, pop: np.ndarray, fitness: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Offspring for the next generation (not evaluated) and the indices of the elites kept."""
        p = self.params
        n = len(pop)
        elite_idx = np.argsort(-fitness, kind="stable")[: p.elite]
        n_off = n - len(elite_idx)
        n_par = n_off + (n_off % 2)
        parents = pop[tournament_select(rng, fitness, n_par, p.tournament_size)]
        a, b = parents[0::2], parents[1::2]
        c1, c2 = sbx_bounded(rng, a, b, p.sbx_eta, self.low, self.up, p.crossover_prob)
        children = np.empty_like(parents)
        children[0::2], children[1::2] = c1, c2
        children = polynomial_mutation(
            rng, children, p.mutation_eta, self.low, self.up, p.mutation_prob, p.gene_mutation_prob
        )
        children = np.ascontiguousarray(self._genome.repair(children)[:n_off], dtype=np.float64)
        return children, elite_idx

    def step(self, state: GAState) -> GAState:
        t0 = time.perf_counter()
        rng = np.random.Generator(np.random.PCG64(0))  # state replaced below
        rng.bit_generator.state = state.rng_state
        children, elite_idx = self.breed(rng, state.population, state.fitness)
        c_metrics, c_fitness = self._eval(children)
        pop = np.concatenate([state.population[elite_idx], children])
        fitness = np.concatenate([state.fitness[elite_idx], c_fitness])
        metrics = np.concatenate([state.metrics[elite_idx], c_metrics])
        gen = state.generation + 1
        hof = state.hall_of_fame.update(
            children,
            c_fitness,
            c_metrics,
            gen,
            self.params.hall_of_fame_size,
            _strategy_text,
            self.behaviour_column,
        )
        stats = generation_stats(gen, pop, fitness, len(children), time.perf_counter() - t0)
        return replace(
            state,
            generation=gen,
            population=pop,
            fitness=fitness,
            metrics=metrics,
            rng_state=rng.bit_generator.state,
            hall_of_fame=hof,
            evaluations=state.evaluations + len(children),
            stats=stats,
        )
