"""Hyperparameter resolution and DomainBed-style random draws.

All values live in params (the ``hparams`` section); this module only combines them:
defaults -> dataset -> algorithm -> (dataset, algorithm), then, for ``hparams_seed > 0``,
random draws from per-algorithm ranges seeded by the run identity exactly as DomainBed does
(each hparam gets its own ``RandomState(seed_hash(seed_hash(hparams_seed, trial_seed), name))``).
Unknown keys are errors.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np


class HparamsError(ValueError):
    """A bad key or value in the hparams section of params (message is one line)."""


def seed_hash(*args: Any) -> int:
    """DomainBed's seed_hash: an integer in [0, 2^31) from the md5 of ``str(args)``."""
    digest = hashlib.md5(str(args).encode("utf-8")).hexdigest()
    return int(digest, 16) % (2**31)


DISTRIBUTIONS = ("uniform", "log10_uniform", "pow2_int", "choice")


def draw(dist: Mapping[str, Any], rng: np.random.RandomState, name: str) -> Any:
    """Draw one value from a range spec such as ``{"log10_uniform": [-4, -2]}``."""
    if len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise HparamsError(
            f"hparam range for {name!r} must be one of {', '.join(DISTRIBUTIONS)}, got {dict(dist)}"
        )
    kind, arg = next(iter(dist.items()))
    if kind == "choice":
        return arg[int(rng.randint(len(arg)))]
    low, high = float(arg[0]), float(arg[1])
    value = rng.uniform(low, high)
    if kind == "log10_uniform":
        return float(10**value)
    if kind == "pow2_int":
        return int(2**value)
    return float(value)


def known_keys(section: Mapping[str, Any], algorithm: str) -> set[str]:
    """Keys an algorithm accepts: the defaults plus its own algorithm section."""
    return set(section.get("defaults", {})) | set(section.get("algorithms", {}).get(algorithm) or {})


def _check(keys: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise HparamsError(f"unknown hparam {unknown[0]!r} in hparams.{where}")


def resolve_hparams(
    section: Mapping[str, Any],
    dataset: str,
    algorithm: str,
    hparams_seed: int = 0,
    trial_seed: int = 0,
) -> dict[str, Any]:
    """Resolve the full hparams dict for one run.

    ``section`` is the ``hparams`` part of params with keys ``defaults``, ``datasets``,
    ``algorithms``, ``dataset_algorithm`` ({dataset: {algorithm: {...}}}) and ``ranges``
    ({"defaults" | algorithm: {name: distribution}}).
    """
    algorithms = section.get("algorithms", {})
    if algorithm not in algorithms:
        raise HparamsError(f"no hparams.algorithms entry for algorithm {algorithm!r}")
    allowed = known_keys(section, algorithm)
    every_key = set(section.get("defaults", {})).union(*[set(v or {}) for v in algorithms.values()])
    ds_over = (section.get("datasets") or {}).get(dataset) or {}
    _check(ds_over, every_key, f"datasets.{dataset}")
    pair = ((section.get("dataset_algorithm") or {}).get(dataset) or {}).get(algorithm) or {}
    _check(pair, allowed, f"dataset_algorithm.{dataset}.{algorithm}")

    hparams: dict[str, Any] = dict(section.get("defaults", {}))
    hparams.update(algorithms[algorithm] or {})
    hparams.update({k: v for k, v in ds_over.items() if k in allowed})
    hparams.update(pair)
    if hparams_seed:
        hparams.update(random_hparams(section, algorithm, hparams_seed, trial_seed))
    return hparams


def random_hparams(
    section: Mapping[str, Any], algorithm: str, hparams_seed: int, trial_seed: int
) -> dict[str, Any]:
    """The random-search draws for one (hparams_seed, trial_seed), DomainBed's scheme."""
    ranges = section.get("ranges") or {}
    allowed = known_keys(section, algorithm)
    spec = dict(ranges.get("defaults") or {})
    spec.update(ranges.get(algorithm) or {})
    _check(spec, allowed, f"ranges ({algorithm})")
    random_seed = seed_hash(hparams_seed, trial_seed)
    return {
        name: draw(dist, np.random.RandomState(seed_hash(random_seed, name)), name)
        for name, dist in sorted(spec.items())
    }
