"""One supernet variant's searches: every latency limit, resumable, with a gold-latency check;
and evolution against random search at equal fitness evaluations over several seeds.

Fitness is the supernet's validation loss of the subnet (inherited weights, eval mode), shared
by every search of the variant (a memo keyed by the canonical architecture). During the search
latency comes from the predictor (or a gold measurement per candidate, ``latency: gold``).
After it, the *gold check*: the scored candidates are taken best fitness first and measured
by gold latency until one is within the limit (at most ``gold_check``), so a reported subnet
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


def gold_check(ctx: SearchContext, ev: Evaluator, limit_ms: float, n: int) -> dict[str, Any]:
    """The best-fitness scored candidate within ``limit_ms`` by gold latency (at most ``n``
    measured); with ``latency: gold`` the search's own measurement is the gold one."""
    checked = []
    for rank, (fit, arch) in enumerate(ev.ranked()[:n]):
        gold = ev.latency(arch) if ctx.source == "gold" else float(ctx.gold(arch))
        checked.append({"rank": rank, "gold_ms": gold, "predicted_ms": ctx.predicted(arch)})
        if gold <= limit_ms:
            return {"arch": arch, "valid_loss": fit, "gold_ms": gold, "gold_rank": rank,
                    "within_limit": True, "gold_checked": checked}
    rank = min(range(len(checked)), key=lambda i: checked[i]["gold_ms"])
    fit, arch = ev.ranked()[rank]
    log.warning("no candidate of the %d best is within %.3f ms by gold latency; reporting the "
                "fastest of them (%.3f ms), marked over the limit", len(checked), limit_ms,
                checked[rank]["gold_ms"])
    return {"arch": arch, "valid_loss": fit, "gold_ms": checked[rank]["gold_ms"],
            "gold_rank": rank, "within_limit": False, "gold_checked": checked}


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
    chosen = gold_check(ctx, ev, limit_ms, gold_n)
    result = {**{k: ident[k] for k in ("variant", "run", "limit", "limit_ms", "latency", "seed")
                 if k in ident},
              "limit_quantile": limit.quantile, **chosen,
              "predicted_ms": ctx.predicted(chosen["arch"]),
              "arch_key": ctx.space.arch_key(chosen["arch"]),
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
                     "random_latency_ms": r.latency, "evolution_wins": bool(e.fitness <= r.fitness)})
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
