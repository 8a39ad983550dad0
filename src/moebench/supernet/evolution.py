"""HAT's evolutionary search under a latency limit, and random search at equal evaluations.

The procedure of HAT (``fairseq/evolution.py``, ``Evolution.run_evo_search``):

1. the first population: ``population`` random architectures, each resampled until its
   latency is within the limit (rejection);
2. each of ``iterations`` generations: score the population (fitness = the supernet's
   validation loss; lower is better), keep the ``parents`` best, then add ``mutations``
   mutants of random parents (each gene resampled with probability ``mutation_prob``) and
   ``crossovers`` children of two random parents (each gene from either), every new
   candidate regenerated until it is within the limit;
3. the answer: the best scored architecture.

Latency comes from any function (the predictor or a gold measurement); fitness and latency
are cached by the architecture's canonical key, so a fitness *evaluation* is a distinct
architecture scored. With a :class:`~moebench.runs.RunState` the search writes one record
per generation and a checkpoint of its state (population, random generator, caches), and a
killed search resumes at the last finished generation with the same records.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np

from moebench.errors import ParamsError, RunError
from moebench.runs import RunState
from moebench.supernet.space import Arch, Space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvoSpec:
    """HAT's search parameters (``configs/*/evo_search/*_titanxp.yml``)."""

    population: int = 125
    parents: int = 25
    mutations: int = 50
    crossovers: int = 50
    mutation_prob: float = 0.3
    iterations: int = 30
    max_tries: int = 10_000
    dedup: bool = False

    @classmethod
    def from_params(cls, d: Mapping[str, Any],
                    where: str = "supernet.search.evolution") -> "EvoSpec":
        """From params; a one-line :class:`ParamsError` names a bad key."""
        names = list(cls.__dataclass_fields__)
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ParamsError(f"{where}.{unknown[0]}: unknown key; valid: {', '.join(names)}")
        v = {**asdict(cls()), **d}
        for key in ("population", "parents", "iterations", "max_tries"):
            if not _int(v[key]) or v[key] < 1:
                raise ParamsError(f"{where}.{key}: {v[key]!r} must be a positive integer")
        for key in ("mutations", "crossovers"):
            if not _int(v[key]) or v[key] < 0:
                raise ParamsError(f"{where}.{key}: {v[key]!r} must be an integer >= 0")
        if v["parents"] > v["population"]:
            raise ParamsError(f"{where}.parents: {v['parents']} is above population = "
                              f"{v['population']}")
        p = v["mutation_prob"]
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
            raise ParamsError(f"{where}.mutation_prob: {p!r} must be a number in [0, 1]")
        if not isinstance(v["dedup"], bool):
            raise ParamsError(f"{where}.dedup: {v['dedup']!r} must be true or false")
        return cls(**{**v, "mutation_prob": float(p)})


def _peak_rss_gb() -> float:
    """Peak resident memory of the process (GiB; the records' ``mem_gb`` on CPU)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 4)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class Evaluator:
    """Fitness and latency of architectures, cached by canonical key.

    ``fitness(arch) -> float`` (lower is better), ``latency(arch) -> float`` (ms);
    ``evaluations`` counts the distinct architectures whose fitness was computed.
    """

    space: Space
    fitness_fn: Callable[[Arch], float]
    latency_fn: Callable[[Arch], float]
    limit: float
    fitness_cache: dict[str, float] = field(default_factory=dict)
    latency_cache: dict[str, float] = field(default_factory=dict)
    archs: dict[str, Arch] = field(default_factory=dict)

    def latency(self, arch: Arch) -> float:
        key = self.space.arch_key(arch)
        if key not in self.latency_cache:
            self.latency_cache[key] = float(self.latency_fn(arch))
        return self.latency_cache[key]

    def feasible(self, arch: Arch) -> bool:
        return self.latency(arch) <= self.limit

    def fitness(self, arch: Arch) -> float:
        key = self.space.arch_key(arch)
        if key not in self.fitness_cache:
            self.fitness_cache[key] = float(self.fitness_fn(arch))
            self.archs[key] = self.space.canonical(arch)
        return self.fitness_cache[key]

    def ranked(self) -> list[tuple[float, Arch]]:
        """Every scored architecture as (fitness, arch), best first."""
        return sorted(((f, self.archs[k]) for k, f in self.fitness_cache.items()),
                      key=lambda t: t[0])

    @property
    def evaluations(self) -> int:
        return len(self.fitness_cache)

    def state_dict(self) -> dict[str, Any]:
        return {"fitness": dict(self.fitness_cache), "latency": dict(self.latency_cache),
                "archs": dict(self.archs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.fitness_cache = dict(state["fitness"])
        self.latency_cache = dict(state["latency"])
        self.archs = dict(state["archs"])


@dataclass
class SearchResult:
    """The best architecture, its fitness and latency, and one dict per generation."""

    arch: Arch
    fitness: float
    latency: float
    evaluations: int
    history: list[dict[str, Any]]


class _Sampler:
    """Rejection sampling of feasible candidates (counts what it tried)."""

    def __init__(self, space: Space, ev: Evaluator, max_tries: int, dedup: bool) -> None:
        self.space, self.ev, self.max_tries, self.dedup = space, ev, max_tries, dedup
        self.tried = 0

    def draw(self, make: Callable[[], Arch], taken: set[str], what: str) -> Arch:
        for _ in range(self.max_tries):
            self.tried += 1
            arch = make()
            if self.dedup and self.space.arch_key(arch) in taken:
                continue
            if self.ev.feasible(arch):
                taken.add(self.space.arch_key(arch))
                return arch
        raise RunError(f"no {what} within the latency limit {self.ev.limit:g} ms after "
                       f"{self.max_tries} tries (raise the limit or max_tries)")


def _next_population(space: Space, spec: EvoSpec, parents: list[Arch], sampler: _Sampler,
                     rng: np.random.Generator) -> list[Arch]:
    """Parents + feasible mutants + feasible crossover children (HAT's order)."""
    taken = {space.arch_key(a) for a in parents}
    pick = lambda: parents[int(rng.integers(len(parents)))]  # noqa: E731
    mutants = [sampler.draw(lambda: space.mutate(pick(), rng, spec.mutation_prob), taken,
                            "mutant") for _ in range(spec.mutations)]
    children = [sampler.draw(lambda: space.crossover(pick(), pick(), rng), taken,
                             "crossover child") for _ in range(spec.crossovers)]
    return list(parents) + mutants + children


def _ranked(population: list[Arch], ev: Evaluator) -> list[tuple[float, Arch]]:
    """(fitness, arch), best first; ties keep population order (a stable sort)."""
    scores = [ev.fitness(a) for a in population]
    order = np.argsort(np.asarray(scores), kind="stable")
    return [(scores[i], population[i]) for i in order]


def _start(space: Space, spec: EvoSpec, ev: Evaluator, rng: np.random.Generator,
           sampler: _Sampler, run: Optional[RunState]) -> tuple[list[Arch], list, int, tuple]:
    """(population, history, first generation, best) from the checkpoint or a fresh start."""
    state = run.load() if run is not None else None
    if state is not None:
        rng.bit_generator.state = state["rng"]
        ev.load_state_dict(state["evaluator"])
        return (state["population"], state["history"], state["step"],
                (state["best_fitness"], state["best_arch"]))
    taken: set[str] = set()
    population = [sampler.draw(lambda: space.sample(rng), taken, "random architecture")
                  for _ in range(spec.population)]
    return population, [], 0, (float("inf"), population[0])


def evolution_search(space: Space, spec: EvoSpec, ev: Evaluator, rng: np.random.Generator,
                     run: Optional[RunState] = None, base: Optional[Mapping[str, Any]] = None
                     ) -> SearchResult:
    """HAT's evolutionary search (see the module docstring). With ``run`` the state after each
    generation is checkpointed and a record appended (``base`` merged into each record)."""
    sampler = _Sampler(space, ev, spec.max_tries, spec.dedup)
    population, history, start, best = _start(space, spec, ev, rng, sampler, run)
    for gen in range(start, spec.iterations):
        t0, tried0 = time.perf_counter(), sampler.tried
        ranked = _ranked(population, ev)
        if ranked[0][0] < best[0]:
            best = ranked[0]
        parents = [a for _, a in ranked[:spec.parents]]
        entry = {"generation": gen + 1, "best_fitness": best[0], "generation_best": ranked[0][0],
                 "best_latency": ev.latency(best[1]), "population": len(population),
                 "evaluations": ev.evaluations, "feasible": len(population)}
        if gen + 1 < spec.iterations:
            population = _next_population(space, spec, parents, sampler, rng)
        entry["tried"] = sampler.tried - tried0
        history.append(entry)
        log.info("generation %d/%d: best valid loss %.4f (%.2f ms), %d evaluations, "
                 "%d new feasible candidates of %d tried", gen + 1, spec.iterations, best[0],
                 entry["best_latency"], ev.evaluations,
                 len(population) - len(parents) if entry["tried"] else 0, entry["tried"])
        if run is not None:
            run.append({**(base or {}), **entry, "step": gen + 1, "epoch": gen + 1,
                        "loss": best[0], "step_time": time.perf_counter() - t0,
                        "mem_gb": _peak_rss_gb()})
            run.save({"rng": rng.bit_generator.state, "evaluator": ev.state_dict(),
                      "population": population, "history": history,
                      "best_fitness": best[0], "best_arch": best[1]}, gen + 1)
    return SearchResult(arch=best[1], fitness=best[0], latency=ev.latency(best[1]),
                        evaluations=ev.evaluations, history=history)


def random_search(space: Space, ev: Evaluator, evaluations: int, rng: np.random.Generator,
                  max_tries: int = 10_000) -> SearchResult:
    """The baseline: feasible random architectures until ``evaluations`` distinct ones are
    scored; the best of them."""
    sampler = _Sampler(space, ev, max_tries, dedup=True)
    taken: set[str] = set()
    best: tuple[float, Optional[Arch]] = (float("inf"), None)
    history = []
    for i in range(evaluations):
        arch = sampler.draw(lambda: space.sample(rng), taken, "random architecture")
        score = ev.fitness(arch)
        if score < best[0]:
            best = (score, arch)
        history.append({"evaluations": i + 1, "best_fitness": best[0]})
    if best[1] is None:
        raise RunError("random search needs at least one evaluation")
    return SearchResult(arch=best[1], fitness=best[0], latency=ev.latency(best[1]),
                        evaluations=evaluations, history=history)
