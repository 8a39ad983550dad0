"""Hyperparameter resolution, value checks against declarations, and DomainBed-style draws.

All values live in params; this module only combines and checks them. Resolution (one
function for every study): ``defaults`` -> group (dataset or task) -> algorithm ->
(group, algorithm); then, for ``hparams_seed > 0``, random draws from per-algorithm ranges
seeded by the run identity exactly as DomainBed does (each hparam gets its own
``RandomState(seed_hash(seed_hash(hparams_seed, trial_seed), name))``). With the algorithm's
declared hyperparameters (:mod:`moebench.declare`) unknown keys, missing values and values
outside a declared type, bound or choice are errors naming the key path.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from moebench import errors
from moebench.declare import Hp


class HparamsError(errors.HparamsError):
    """A bad key or value; ``key_path`` locates it in params, ``str()`` is one line."""

    def __init__(self, message: str, key_path: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.key_path = tuple(key_path)

    @classmethod
    def at(cls, path: Sequence[Any], reason: str) -> "HparamsError":
        return cls(f"{'.'.join(map(str, path))}: {reason}", path)


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


def range_values(dist: Mapping[str, Any]) -> list[Any]:
    """The values a range can reach at its ends (every value for ``choice``)."""
    kind, arg = next(iter(dist.items()))
    if kind == "choice":
        return list(arg)
    low, high = float(arg[0]), float(arg[1])
    if kind == "log10_uniform":
        return [10**low, 10**high]
    if kind == "pow2_int":
        return [int(2**low), int(2 ** math.nextafter(high, low))]
    return [low, high]


@dataclass(frozen=True)
class Layout:
    """Key names of one study's hparams section (DomainBed: datasets / algorithms)."""

    group: str = "datasets"
    algorithms: str = "algorithms"
    pair: str = "dataset_algorithm"
    root: str = "hparams"


DG_LAYOUT = Layout()


def check_values(values: Mapping[str, Any], table: Mapping[str, Hp], path: Sequence[Any],
                 context: Optional[Mapping[str, Any]] = None, known: Optional[set] = None) -> None:
    """Every key of ``values`` must be in ``table`` (or ``known``) and valid there."""
    for key, value in values.items():
        if key not in table:
            if known is not None and key in known:
                continue
            raise HparamsError.at([*path, key], f"unknown hparam {key!r}")
        problem = table[key].problem(value, context if context is not None else values)
        if problem:
            raise HparamsError.at([*path, key], problem)


def known_keys(section: Mapping[str, Any], algorithm: str, layout: Layout = DG_LAYOUT) -> set[str]:
    """Keys an algorithm accepts without declarations: the defaults plus its own section."""
    return set(section.get("defaults", {})) | set(
        (section.get(layout.algorithms) or {}).get(algorithm) or {})


def _check(keys: Mapping[str, Any], allowed: set[str], path: Sequence[Any]) -> None:
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise HparamsError.at([*path, unknown[0]], f"unknown hparam {unknown[0]!r}")


def resolve_hparams(section: Mapping[str, Any], dataset: str, algorithm: str,
                    hparams_seed: int = 0, trial_seed: int = 0,
                    table: Optional[Mapping[str, Hp]] = None,
                    study_keys: Optional[set[str]] = None,
                    layout: Layout = DG_LAYOUT) -> dict[str, Any]:
    """The full hparams dict of one run.

    ``section`` has ``defaults``, ``datasets``, ``algorithms``, ``dataset_algorithm``
    ({dataset: {algorithm: {...}}}) and ``ranges`` ({"defaults" | algorithm: {name: dist}})
    (the group / algorithm key names come from ``layout``). With ``table`` (the algorithm's
    declared hparams) keys of ``defaults`` and group overrides must be declared by the study
    (``study_keys``) and reach the algorithm when it declares them; every declared hparam
    needs a value; every value is checked.
    """
    lay = layout
    algorithms = section.get(lay.algorithms) or {}
    if table is None and algorithm not in algorithms:
        raise HparamsError(f"no {lay.root}.{lay.algorithms} entry for algorithm {algorithm!r}",
                           [lay.root, lay.algorithms])
    own = algorithms.get(algorithm) or {}
    defaults = section.get("defaults") or {}
    group = (section.get(lay.group) or {}).get(dataset) or {}
    pair = ((section.get(lay.pair) or {}).get(dataset) or {}).get(algorithm) or {}
    if table is None:
        allowed = known_keys(section, algorithm, lay)
        every = set(defaults).union(*[set(v or {}) for v in algorithms.values()])
        _check(group, every, [lay.root, lay.group, dataset])
        _check(pair, allowed, [lay.root, lay.pair, dataset, algorithm])
        take = lambda d: {k: v for k, v in d.items() if k in allowed}  # noqa: E731
    else:
        study = set(study_keys or ()) | set(table)
        _check(defaults, study, [lay.root, "defaults"])
        _check(group, study, [lay.root, lay.group, dataset])
        _check(own, set(table), [lay.root, lay.algorithms, algorithm])
        _check(pair, set(table), [lay.root, lay.pair, dataset, algorithm])
        take = lambda d: {k: v for k, v in d.items() if k in table}  # noqa: E731
    hparams: dict[str, Any] = dict(defaults if table is None else take(defaults))
    hparams.update(own)
    hparams.update(take(group))
    hparams.update(pair)
    if table is not None:
        _check_layers(table, hparams, defaults, group, own, pair, dataset, algorithm, lay)
    if hparams_seed:
        draws = random_hparams(section, algorithm, hparams_seed, trial_seed,
                               set(table) if table is not None else None, lay)
        hparams.update(draws)
        if table is not None:
            _check_draws(table, hparams, draws, algorithm, hparams_seed, trial_seed, lay)
    return hparams


def _check_layers(table: Mapping[str, Hp], hparams: Mapping[str, Any], defaults, group, own,
                  pair, dataset: str, algorithm: str, lay: Layout) -> None:
    """Missing values, then each value where it is written (the path names the layer)."""
    missing = [k for k in table if k not in hparams]
    if missing:
        hp = table[missing[0]]
        raise HparamsError.at([lay.root, lay.algorithms, algorithm, missing[0]],
                              f"is missing ({hp.help or hp.range_text()}; {hp.range_text()})")
    layers = (([lay.root, lay.pair, dataset, algorithm], pair),
              ([lay.root, lay.algorithms, algorithm], own),
              ([lay.root, lay.group, dataset], group),
              ([lay.root, "defaults"], defaults))
    # each value alone first, then bounds that name another hparam (so the key at fault is
    # the one reported: mass_max_experts: 0, not num_experts: 6 > 0)
    for context in ({}, hparams):
        for path, layer in layers:
            for key, value in layer.items():
                if key in table:
                    problem = table[key].problem(value, context)
                    if problem:
                        raise HparamsError.at([*path, key], problem)


def _check_draws(table: Mapping[str, Hp], hparams: Mapping[str, Any], draws: Mapping[str, Any],
                 algorithm: str, hparams_seed: int, trial_seed: int, lay: Layout) -> None:
    for key, value in draws.items():
        problem = table[key].problem(value, hparams)
        if problem:
            raise HparamsError.at(
                [lay.root, "ranges", algorithm, key],
                f"the draw of hparams seed {hparams_seed}, trial seed {trial_seed}: {problem}")


def range_spec(section: Mapping[str, Any], algorithm: str) -> dict[str, tuple[str, Any]]:
    """{hparam: (where, distribution)} of an algorithm: ``ranges.defaults`` then its own."""
    ranges = section.get("ranges") or {}
    spec = {k: ("defaults", v) for k, v in (ranges.get("defaults") or {}).items()}
    spec.update({k: (algorithm, v) for k, v in (ranges.get(algorithm) or {}).items()})
    return spec


def random_hparams(section: Mapping[str, Any], algorithm: str, hparams_seed: int,
                   trial_seed: int, allowed: Optional[set[str]] = None,
                   layout: Layout = DG_LAYOUT) -> dict[str, Any]:
    """The random-search draws for one (hparams_seed, trial_seed), DomainBed's scheme.

    ``ranges.defaults`` entries an algorithm does not declare (``allowed``) are skipped for it.
    """
    spec = range_spec(section, algorithm)
    if allowed is None:
        _check({k: v for k, v in spec.items()}, known_keys(section, algorithm, layout),
               [layout.root, "ranges", algorithm])
    else:
        _check({k: v for k, (w, v) in spec.items() if w != "defaults"}, allowed,
               [layout.root, "ranges", algorithm])
        spec = {k: v for k, v in spec.items() if k in allowed}
    random_seed = seed_hash(hparams_seed, trial_seed)
    return {
        name: draw(dist, np.random.RandomState(seed_hash(random_seed, name)), name)
        for name, (_, dist) in sorted(spec.items())
    }


def check_ranges(section: Mapping[str, Any], tables: Mapping[str, Mapping[str, Hp]],
                 layout: Layout = DG_LAYOUT) -> None:
    """Every random-search range lies within the declared bounds / choices of its hparam
    (``ranges.defaults`` against every algorithm that declares the key)."""
    ranges = section.get("ranges") or {}
    for owner, entries in ranges.items():
        if owner != "defaults" and owner not in tables:
            raise HparamsError.at([layout.root, "ranges", owner],
                                  f"unknown algorithm {owner!r}; valid: {', '.join(sorted(tables))}")
        for key, dist in (entries or {}).items():
            holders = [t for name, t in tables.items() if key in t and owner in ("defaults", name)]
            if not holders:
                raise HparamsError.at([layout.root, "ranges", owner, key], f"unknown hparam {key!r}")
            for value in range_values(dist):
                for table in holders:
                    hp = table[key]
                    if isinstance(value, float) and hp.types == (int,) and value.is_integer():
                        value = int(value)
                    problem = hp.problem(value, {})  # bounds naming an hparam: checked per run
                    if problem:
                        raise HparamsError.at([layout.root, "ranges", owner, key],
                                              f"the range {dict(dist)} reaches {problem}")
