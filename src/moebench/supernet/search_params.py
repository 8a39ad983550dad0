"""The search half of the ``supernet`` params section, checked with one-line errors.

Keys (``params/supernet/search.yaml``; docs/supernet.md explains each)::

    supernet.space       choices per architecture key (moebench.supernet.space)
    supernet.latency     device, measure (LatencySpec; src_len / decode_steps may be "mean"),
                         dataset {size, repeats, seed}
    supernet.predictor   PredictorSpec
    supernet.search      variants, limits [{quantile: q} | {ms: x}], latency (predictor |
                         gold), evolution (EvoSpec), fitness {valid_sentences, max_tokens},
                         gold_check, compare {variant, limit, seeds}, seed
    supernet.retrain     modes, test_sentences, inherited {steps, ...}, scratch {steps, ...}

Torch-free: the workflow checks these while it parses.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

from moebench.errors import ParamsError

VARIANTS = ("hat", "mos_layer", "mos_neuron")
RETRAIN_MODES = ("inherited", "scratch")
MEASURE_KEYS = ("src_len", "decode_steps", "beam", "warmup", "runs", "trim", "threads", "token",
                "reference")
REFERENCES = ("smallest", "largest")


@dataclass(frozen=True)
class LatencySpec:
    """The measurement protocol (HAT's values except ``threads``, which HAT leaves at all
    cores). ``reference``: None (HAT) or the space's ``smallest`` / ``largest`` subnet, timed
    run for run beside every measured model to correct for the machine's speed drift."""

    src_len: int = 30
    decode_steps: int = 30
    beam: int = 5
    warmup: int = 5
    runs: int = 20
    trim: float = 0.1
    threads: int = 1
    token: int = 7
    reference: Optional[str] = None

    @classmethod
    def from_params(cls, d: Mapping[str, Any], where: str = "supernet.latency") -> "LatencySpec":
        """From params (``src_len`` must be resolved to a number first)."""
        names = list(cls.__dataclass_fields__)
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ParamsError(f"{where}.{unknown[0]}: unknown key; valid: {', '.join(names)}")
        v = {**asdict(cls()), **d}
        for key in ("src_len", "decode_steps", "beam", "runs", "threads", "token"):
            if not isinstance(v[key], int) or isinstance(v[key], bool) or v[key] < 1:
                raise ParamsError(f"{where}.{key}: {v[key]!r} must be a positive integer")
        if not isinstance(v["warmup"], int) or isinstance(v["warmup"], bool) or v["warmup"] < 0:
            raise ParamsError(f"{where}.warmup: {v['warmup']!r} must be an integer >= 0")
        t = v["trim"]
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 0.5:
            raise ParamsError(f"{where}.trim: {t!r} must be a number in [0, 0.5)")
        if v["reference"] is not None and v["reference"] not in REFERENCES:
            raise ParamsError(f"{where}.reference: {v['reference']!r} must be null or one of "
                              f"{', '.join(REFERENCES)}")
        return cls(**{**v, "trim": float(t)})


@dataclass(frozen=True)
class PredictorSpec:
    """Predictor shape and training (HAT's values: 400 wide, 4 ReLU layers, lr 1e-5, batch
    128, 5000 steps, lat_norm 200 ms)."""

    hidden: int = 400
    layers: int = 4
    lr: float = 1e-5
    batch_size: int = 128
    steps: int = 5000
    lat_norm: float = 200.0
    eval_every: int = 100
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    @classmethod
    def from_params(cls, d: Mapping[str, Any],
                    where: str = "supernet.predictor") -> "PredictorSpec":
        """From a params mapping; one-line :class:`ParamsError` naming a bad key."""
        fields = cls.__dataclass_fields__
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ParamsError(f"{where}.{unknown[0]}: unknown key; valid: {', '.join(fields)}")
        values = {**asdict(cls()), **d}
        for key in ("hidden", "layers", "batch_size", "steps", "eval_every"):
            v = values[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ParamsError(f"{where}.{key}: {v!r} must be a positive integer")
        for key in ("lr", "lat_norm"):
            v = values[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                hint = " (YAML reads 1e-5 as a string: write 1.0e-5)" if isinstance(v, str) else ""
                raise ParamsError(f"{where}.{key}: {v!r} must be a positive number{hint}")
        split = values["split"]
        if (not isinstance(split, (list, tuple)) or len(split) != 3
                or not all(isinstance(s, (int, float)) and s > 0 for s in split)
                or abs(sum(split) - 1) > 1e-6):
            raise ParamsError(f"{where}.split: {split!r} must be three positive fractions "
                              f"summing to 1 (train, valid, test)")
        if not isinstance(values["seed"], int):
            raise ParamsError(f"{where}.seed: {values['seed']!r} must be an integer")
        values["split"] = tuple(float(s) for s in split)
        values["lr"], values["lat_norm"] = float(values["lr"]), float(values["lat_norm"])
        return cls(**values)


def _keys(d: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(d, Mapping):
        raise ParamsError(f"{where}: must be a mapping")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ParamsError(f"{where}.{unknown[0]}: unknown key; valid: {', '.join(allowed)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise ParamsError(f"{where}.{missing[0]}: is missing")
    return dict(d)


def _pos_int(v: Any, where: str, zero: bool = False) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < (0 if zero else 1):
        what = "an integer >= 0" if zero else "a positive integer"
        raise ParamsError(f"{where}: {v!r} must be {what}")
    return v


def _number(v: Any, where: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
        hint = " (YAML reads 1e-3 as a string: write 1.0e-3)" if isinstance(v, str) else ""
        raise ParamsError(f"{where}: {v!r} must be a positive number{hint}")
    return float(v)


@dataclass(frozen=True)
class Limit:
    """A latency limit: a quantile of the measured latencies or a value in ms."""

    quantile: Optional[float] = None
    ms: Optional[float] = None

    @property
    def name(self) -> str:
        """File-name form: ``q25`` for the 0.25 quantile, ``200ms`` for 200 ms."""
        if self.quantile is not None:
            return f"q{round(self.quantile * 100):02d}"
        return f"{self.ms:g}ms"

    def resolve(self, quantile_ms: Any) -> float:
        """The limit in ms (``quantile_ms(q)`` gives a quantile of the measured latencies)."""
        return float(self.ms) if self.ms is not None else float(quantile_ms(self.quantile))


def parse_limit(d: Any, where: str) -> Limit:
    d = _keys(d, where, ("quantile", "ms"))
    if len(d) != 1:
        raise ParamsError(f"{where}: give exactly one of quantile (0-1) or ms")
    if "quantile" in d:
        q = d["quantile"]
        if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 < q < 1:
            raise ParamsError(f"{where}.quantile: {q!r} must be a number in (0, 1)")
        if abs(q * 100 - round(q * 100)) > 1e-9:
            raise ParamsError(f"{where}.quantile: {q!r} must be a whole percentile "
                              f"(0.25, not 0.255)")
        return Limit(quantile=float(q))
    return Limit(ms=_number(d["ms"], f"{where}.ms"))


def check_measure(d: Any, where: str = "supernet.latency.measure") -> dict[str, Any]:
    """The measurement protocol with ``src_len`` / ``decode_steps`` possibly ``"mean"`` (the
    corpus' mean source / target length); everything else checked by :class:`LatencySpec`."""
    d = _keys(d, where, tuple(LatencySpec.__dataclass_fields__))
    probe = {k: (1 if d.get(k) == "mean" else v) for k, v in d.items()}
    LatencySpec.from_params(probe, where)
    return d


def resolve_measure(d: Mapping[str, Any], src_mean: Optional[float] = None,
                    tgt_mean: Optional[float] = None) -> LatencySpec:
    """The :class:`LatencySpec` with ``"mean"`` replaced by the rounded corpus means."""
    values = dict(d)
    for key, mean in (("src_len", src_mean), ("decode_steps", tgt_mean)):
        if values.get(key) == "mean":
            if mean is None:
                raise ParamsError(f"supernet.latency.measure.{key}: 'mean' needs the corpus")
            values[key] = max(1, int(round(mean)))
    return LatencySpec.from_params(values)


def check_latency(d: Any, where: str = "supernet.latency") -> dict[str, Any]:
    """``device``, ``measure`` and ``dataset`` of the latency section."""
    d = _keys(d, where, ("device", "measure", "dataset"), ("measure", "dataset"))
    device = d.get("device", "cpu")
    if device not in ("cpu", "cuda", "auto"):
        raise ParamsError(f"{where}.device: {device!r} is not one of cpu, cuda, auto")
    ds = _keys(d["dataset"], f"{where}.dataset", ("size", "repeats", "seed"), ("size",))
    size = _pos_int(ds["size"], f"{where}.dataset.size")
    if size < 10:
        raise ParamsError(f"{where}.dataset.size: {size} is too few rows for an 80/10/10 split "
                          f"(at least 10)")
    repeats = _pos_int(ds.get("repeats", 0), f"{where}.dataset.repeats", zero=True)
    if repeats > size:
        raise ParamsError(f"{where}.dataset.repeats: {repeats} is above size = {size}")
    seed = ds.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParamsError(f"{where}.dataset.seed: {seed!r} must be an integer")
    return {"device": device, "measure": check_measure(d["measure"], f"{where}.measure"),
            "dataset": {"size": size, "repeats": repeats, "seed": seed}}


SEARCH_KEYS = ("variants", "task", "limits", "latency", "evolution", "fitness", "gold_check",
               "compare", "seed", "published")


def check_search(d: Any, where: str = "supernet.search") -> dict[str, Any]:
    """The search section with limits parsed and the evolution spec checked."""
    from moebench.supernet.evolution import EvoSpec

    d = _keys(d, where, SEARCH_KEYS, ("variants", "limits", "evolution"))
    variants = d["variants"]
    if not isinstance(variants, list) or not variants or any(v not in VARIANTS for v in variants):
        raise ParamsError(f"{where}.variants: {variants!r} must be a non-empty list of "
                          f"{', '.join(VARIANTS)}")
    if not isinstance(d["limits"], list) or not d["limits"]:
        raise ParamsError(f"{where}.limits: must be a non-empty list of {{quantile: q}} or "
                          f"{{ms: x}}")
    limits = [parse_limit(x, f"{where}.limits[{i}]") for i, x in enumerate(d["limits"])]
    names = [lim.name for lim in limits]
    if len(set(names)) != len(names):
        raise ParamsError(f"{where}.limits: {names} names a limit twice")
    source = d.get("latency", "predictor")
    if source not in ("predictor", "gold"):
        raise ParamsError(f"{where}.latency: {source!r} is not one of predictor, gold")
    evo = EvoSpec.from_params(d["evolution"], f"{where}.evolution")
    fit = _keys(d.get("fitness", {}), f"{where}.fitness", ("valid_sentences", "max_tokens"))
    if fit.get("valid_sentences") is not None:
        _pos_int(fit["valid_sentences"], f"{where}.fitness.valid_sentences")
    _pos_int(fit.setdefault("max_tokens", 4096), f"{where}.fitness.max_tokens")
    fit.setdefault("valid_sentences", None)
    gold_check = _pos_int(d.get("gold_check", 20), f"{where}.gold_check")
    compare = _check_compare(d.get("compare"), variants, names, f"{where}.compare")
    seed = d.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParamsError(f"{where}.seed: {seed!r} must be an integer")
    check_published(d.get("published", {}), f"{where}.published")
    task = d.get("task", "")
    if not isinstance(task, str):
        raise ParamsError(f"{where}.task: {task!r} must be a string (e.g. wmt14.en-de)")
    return {"variants": list(variants), "task": task, "limits": limits, "limit_names": names,
            "latency": source, "evolution": evo, "fitness": fit, "gold_check": gold_check,
            "compare": compare, "seed": seed}


def _check_compare(d: Any, variants: list[str], names: list[str], where: str) -> Optional[dict]:
    if d is None:
        return None
    d = _keys(d, where, ("variant", "limit", "seeds"), ("variant", "limit", "seeds"))
    if d["variant"] not in variants:
        raise ParamsError(f"{where}.variant: {d['variant']!r} is not a searched variant "
                          f"({', '.join(variants)})")
    limit = parse_limit(d["limit"], f"{where}.limit").name
    if limit not in names:
        raise ParamsError(f"{where}.limit: {limit} is not one of the search limits "
                          f"({', '.join(names)})")
    seeds = d["seeds"]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise ParamsError(f"{where}.seeds: {seeds!r} must be a non-empty list of distinct integers")
    return {"variant": d["variant"], "limit": limit, "seeds": list(seeds)}


TRAIN_KEYS = ("steps", "lr", "warmup", "max_tokens", "update_freq", "eval_every")


def check_retrain(d: Any, where: str = "supernet.retrain") -> dict[str, Any]:
    """``modes`` (inherited, scratch) and each mode's step budget and optimiser values."""
    d = _keys(d, where, ("modes", "test_sentences", *RETRAIN_MODES), ("modes",))
    modes = d["modes"]
    if not isinstance(modes, list) or not modes or any(m not in RETRAIN_MODES for m in modes):
        raise ParamsError(f"{where}.modes: {modes!r} must be a non-empty list of "
                          f"{', '.join(RETRAIN_MODES)}")
    n = d.get("test_sentences")
    if n is not None:
        _pos_int(n, f"{where}.test_sentences")
    out: dict[str, Any] = {"modes": list(modes), "test_sentences": n}
    for mode in modes:
        m = _keys(d.get(mode), f"{where}.{mode}", TRAIN_KEYS, ("steps", "lr"))
        _pos_int(m["steps"], f"{where}.{mode}.steps", zero=True)
        _number(m["lr"], f"{where}.{mode}.lr")
        for key in ("warmup", "max_tokens", "update_freq", "eval_every"):
            if key in m:
                _pos_int(m[key], f"{where}.{mode}.{key}", zero=key == "warmup")
        out[mode] = m
    return out


def check_published(d: Any, where: str = "supernet.search.published") -> None:
    """``hat``: a list of {task, hardware, points: [[latency ms, BLEU(, SacreBLEU)], ...]};
    ``mos``: a note (its numbers were not retrieved)."""
    d = _keys(d, where, ("hat", "mos"))
    entries = d.get("hat", [])
    if not isinstance(entries, list):
        raise ParamsError(f"{where}.hat: must be a list of {{task, hardware, points}}")
    for i, e in enumerate(entries):
        e = _keys(e, f"{where}.hat[{i}]", ("task", "hardware", "points", "note"),
                  ("task", "hardware", "points"))
        pts = e["points"]
        ok = isinstance(pts, list) and pts and all(
            isinstance(p, list) and len(p) in (2, 3) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in p) for p in pts)
        if not ok:
            raise ParamsError(f"{where}.hat[{i}].points: must be a list of [latency ms, BLEU] "
                              f"or [latency ms, BLEU, SacreBLEU]")
    if not isinstance(d.get("mos", ""), str):
        raise ParamsError(f"{where}.mos: must be a note (MoS's numbers were not retrieved)")


def check_search_params(section: Mapping[str, Any]) -> dict[str, Any]:
    """Every search-side key of the ``supernet`` section (``space``, ``latency``,
    ``predictor``, ``search``, ``retrain``); the first problem is one ParamsError line."""
    from moebench.supernet.space import Space

    for key in ("space", "latency", "predictor", "search", "retrain"):
        if key not in section:
            raise ParamsError(f"supernet.{key}: is missing")
    return {"space": Space.from_params(section["space"]),
            "latency": check_latency(section["latency"]),
            "predictor": PredictorSpec.from_params(section["predictor"]),
            "search": check_search(section["search"]),
            "retrain": check_retrain(section["retrain"])}
