"""One supernet variant's searches: every latency limit, resumable, with a gold-latency check;
and evolution against random search at equal fitness evaluations over several seeds.

Fitness is the supernet's validation loss of the subnet (inherited weights, eval mode), shared
by every search of the variant (a memo keyed by the canonical architecture). During the search
latency comes from the predictor (or a gold measurement per candidate, ``latency: gold``).
A search's result keeps its ``gold_check`` best candidates; the *gold check*
(:func:`gold_select`, run where the latency dataset was measured) takes them best fitness
first and measures them by gold latency until one is within the limit, so a reported subnet
is within its limit on this machine even where the predictor under-estimates; a search whose
checked candidates all exceed the limit says so (``within_limit: false``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from moebench.hparams import seed_hash
from moebench.io import atomic_write_json
from moebench.runs import RunState, run_hash
from moebench.supernet.evolution import (EvoSpec, Evaluator, evolution_search, random_search)
from moebench.supernet.search_params import Limit
from moebench.supernet.space import Arch, Space

log = logging.getLogger(__name__)
RESULT = "result.json"


def memoised(space: Space, fn: Callable[[Arch], float]) -> Callable[[Arch], float]:
    """``fn`` computed once per distinct network."""
    memo: dict[str, float] = {}

    def call(arch: Arch) -> float:
        key = space.arch_key(arch)
        if key not in memo:
            memo[key] = float(fn(arch))
        return memo[key]

    call.memo = memo  # type: ignore[attr-defined]
    return call


@dataclass
class SearchContext:
    """What every search of one variant shares."""

    space: Space
    fitness: Callable[[Arch], float]
    predicted: Callable[[Arch], float]
    gold: Callable[[Arch], float]
    latencies: np.ndarray
    source: str = "predictor"

    def latency_fn(self) -> Callable[[Arch], float]:
        return self.predicted if self.source == "predictor" else self.gold

    def limit_ms(self, limit: Limit) -> float:
        return limit.resolve(lambda q: float(np.quantile(self.latencies, q)))


def candidates(ctx: SearchContext, ev: Evaluator, n: int) -> list[dict[str, Any]]:
    """The ``n`` best scored architectures (fitness order) with their predicted latency and
    the latency the search used."""
    return [{"arch": arch, "valid_loss": fit, "predicted_ms": float(ctx.predicted(arch)),
             "search_latency_ms": ev.latency(arch)} for fit, arch in ev.ranked()[:n]]


def gold_select(found: Mapping[str, Any], gold: Callable[[Arch], float],
                source: str = "predictor") -> dict[str, Any]:
    """The best-fitness candidate of a search result within its limit by gold latency
    (candidates measured in order until one fits; with ``latency: gold`` the search's own
    measurement is the gold one). None fits: the fastest checked, ``within_limit: false``."""
    limit, checked = found["limit_ms"], []
    for rank, c in enumerate(found["candidates"]):
        ms = c["search_latency_ms"] if source == "gold" else float(gold(c["arch"]))
        checked.append({"rank": rank, "gold_ms": ms, "predicted_ms": c["predicted_ms"]})
        if ms <= limit:
            break
    else:
        log.warning("%s %s: none of the %d best candidates is within %.3f ms by gold latency; "
                    "reporting the fastest, marked over the limit", found.get("run"),
                    found.get("limit"), len(checked), limit)
    rank = len(checked) - 1 if checked[-1]["gold_ms"] <= limit else min(
        range(len(checked)), key=lambda i: checked[i]["gold_ms"])
    c = found["candidates"][rank]
    return {**{k: v for k, v in found.items() if k != "candidates"},
            "arch": c["arch"], "valid_loss": c["valid_loss"], "predicted_ms": c["predicted_ms"],
            "gold_ms": checked[rank]["gold_ms"], "gold_rank": rank,
            "within_limit": bool(checked[rank]["gold_ms"] <= limit), "gold_checked": checked}


def search_limit(ctx: SearchContext, limit: Limit, evo: EvoSpec, seed: int, gold_n: int,
                 state_root: str | Path, base: Mapping[str, Any]) -> dict[str, Any]:
    """One resumable search under ``limit`` (run state under ``state_root/<limit>/``)."""
    limit_ms = ctx.limit_ms(limit)
    ident = {**base, "stage": "search", "limit": limit.name, "limit_ms": limit_ms,
             "evolution": asdict(evo), "seed": seed, "latency": ctx.source, "gold_check": gold_n}
    run = RunState(Path(state_root) / limit.name / run_hash(ident))
    if run.is_done() and (run.dir / RESULT).exists():
        log.info("%s: search done before; reusing its result", run.dir)
        return json.loads((run.dir / RESULT).read_text(encoding="utf-8"))
    run.start(ident)
    log.info("search %s under %s = %.3f ms (%s latency)", base.get("variant"), limit.name,
             limit_ms, ctx.source)
    ev = Evaluator(ctx.space, ctx.fitness, ctx.latency_fn(), limit_ms)
    rng = np.random.default_rng(seed_hash(seed, limit.name))
    record = {"args": {k: ident[k] for k in ("variant", "run", "limit", "limit_ms") if k in ident},
              "hparams": {"evolution": asdict(evo), "seed": seed}, "moe_backend": "torch",
              "routing": {}}
    res = evolution_search(ctx.space, evo, ev, rng, run=run, base=record)
    result = {**{k: ident[k] for k in ("variant", "run", "limit", "limit_ms", "latency", "seed")
                 if k in ident},
              "limit_quantile": limit.quantile, "candidates": candidates(ctx, ev, gold_n),
              "search_best": {"arch": res.arch, "valid_loss": res.fitness,
                              "latency_ms": res.latency},
              "evaluations": res.evaluations, "generations": res.history}
    run.finish(save=lambda d: atomic_write_json(d / RESULT, result))
    return result


def compare_with_random(ctx: SearchContext, limit: Limit, evo: EvoSpec,
                        seeds: Sequence[int]) -> dict[str, Any]:
    """Evolution and random search at the same number of fitness evaluations, per seed."""
    limit_ms, rows = ctx.limit_ms(limit), []
    for s in seeds:
        e = evolution_search(ctx.space, evo, Evaluator(ctx.space, ctx.fitness, ctx.latency_fn(),
                                                       limit_ms), np.random.default_rng([s, 0]))
        r = random_search(ctx.space, Evaluator(ctx.space, ctx.fitness, ctx.latency_fn(), limit_ms),
                          e.evaluations, np.random.default_rng([s, 1]), evo.max_tries)
        rows.append({"seed": s, "evaluations": e.evaluations, "evolution": e.fitness,
                     "random": r.fitness, "evolution_latency_ms": e.latency,
                     "random_latency_ms": r.latency,
                     "evolution_wins": bool(e.fitness <= r.fitness)})
        log.info("seed %d, %d evaluations: evolution %.4f, random %.4f", s, e.evaluations,
                 e.fitness, r.fitness)
    return {"limit": limit.name, "limit_ms": limit_ms, "latency": ctx.source,
            "evolution_spec": asdict(evo), "seeds": rows,
            "wins": sum(r["evolution_wins"] for r in rows), "of": len(rows)}


def check_machine(summary: Mapping[str, Any], machine: Mapping[str, Any], where: str) -> None:
    """Gold latencies must come from the machine the dataset was measured on."""
    from moebench.errors import RunError

    for key in ("device", "threads", "torch"):
        if str(summary.get(key)) != str(machine[key]):
            raise RunError(f"{where}: the latency dataset was measured with {key} = "
                           f"{summary.get(key)}, this run has {machine[key]}; gold latencies "
                           f"would not be comparable (measure the dataset here again)")


def valid_subset(corpus, n: Optional[int]):
    """The first ``n`` valid pairs (all when None)."""
    return corpus.splits["valid"].subset(n)
