"""HAT's design space of machine-translation Transformers (Wang et al., ACL 2020, "HAT").

An architecture (``Arch``) is a plain dict with HAT's keys::

    encoder_embed_dim: int            encoder_layer_num: int
    encoder_ffn_embed_dim: [int] * Le encoder_self_attention_heads: [int] * Le
    decoder_embed_dim: int            decoder_layer_num: int
    decoder_ffn_embed_dim: [int] * Ld decoder_self_attention_heads: [int] * Ld
    decoder_ende_attention_heads: [int] * Ld
    decoder_arbitrary_ende_attn: [int] * Ld   (-1 / 1 / 2: attend to the last 1 / 2 / 3
                                               encoder layers)

where Le / Ld are the space's *maximum* layer counts; entries past ``*_layer_num`` are
ignored. A :class:`Space` holds the choices of every key (HAT's ``space0``: embed {640, 512},
FFN {3072, 2048, 1024}, heads {8, 4}, decoder layers 1-6, arbitrary attention {-1, 1, 2}),
the fixed ``qkv_dim`` and the feature norm. It samples architectures the way HAT's
``get_random_config`` does (every gene i.i.d. uniform), gives HAT's 10 architecture features
(the latency predictor's and the MoS routers' input), the gene layout of HAT's evolutionary
search with its mutation and crossover, and enumerates spaces small enough for brute force.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from moebench.errors import ParamsError

Arch = dict[str, Any]

SCALAR_KEYS = ("encoder_embed_dim", "encoder_layer_num", "decoder_embed_dim",
               "decoder_layer_num")
ENCODER_LAYER_KEYS = ("encoder_ffn_embed_dim", "encoder_self_attention_heads")
DECODER_LAYER_KEYS = ("decoder_ffn_embed_dim", "decoder_self_attention_heads",
                      "decoder_ende_attention_heads", "decoder_arbitrary_ende_attn")
LAYER_KEYS = ENCODER_LAYER_KEYS + DECODER_LAYER_KEYS
ARCH_KEYS = ("encoder_embed_dim", "encoder_layer_num", *ENCODER_LAYER_KEYS,
             "decoder_embed_dim", "decoder_layer_num", *DECODER_LAYER_KEYS)
FEATURE_NAMES = ("encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_mean",
                 "encoder_self_attention_heads_mean", "decoder_embed_dim",
                 "decoder_layer_num", "decoder_ffn_embed_dim_mean",
                 "decoder_self_attention_heads_mean", "decoder_ende_attention_heads_mean",
                 "decoder_arbitrary_ende_attn_mean")
ARBITRARY_VALUES = (-1, 1, 2)
# HAT's utils.get_config_features maps arbitrary attention -1 / 1 / 2 to 1 / 2 / 3
ARBITRARY_LAYERS = {-1: 1, 1: 2, 2: 3}
# HAT's feature norm for space0 (also MoS's router-input norm)
SPACE0_FEATURE_NORM = (640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2)


def _side(key: str) -> str:
    return "encoder" if key.startswith("encoder") else "decoder"


@dataclass(frozen=True)
class Space:
    """Choices per architecture key, ``qkv_dim`` and the 10-value feature norm."""

    choices: Mapping[str, tuple[int, ...]]
    qkv_dim: int
    feature_norm: tuple[float, ...]

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_params(cls, d: Mapping[str, Any], where: str = "supernet.space") -> "Space":
        """Build from a params section (one-line :class:`ParamsError` naming the key)."""
        if not isinstance(d, Mapping):
            raise ParamsError(f"{where}: must be a mapping of architecture keys to choices")
        allowed = set(ARCH_KEYS) | {"qkv_dim", "feature_norm"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ParamsError(f"{where}.{unknown[0]}: unknown key; valid: "
                              f"{', '.join(sorted(allowed))}")
        choices = {key: _choice_list(d, key, where) for key in ARCH_KEYS}
        qkv = d.get("qkv_dim")
        if not _is_pos_int(qkv):
            raise ParamsError(f"{where}.qkv_dim: {qkv!r} must be a positive integer")
        _check_heads(choices, qkv, where)
        _check_arbitrary(choices, where)
        norm = d.get("feature_norm")
        if norm is None:
            norm = _default_norm(choices)
        elif (not isinstance(norm, list) or len(norm) != len(FEATURE_NAMES) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in norm)):
            raise ParamsError(f"{where}.feature_norm: {norm!r} must be a list of "
                              f"{len(FEATURE_NAMES)} positive numbers ({', '.join(FEATURE_NAMES)})")
        return cls(choices=choices, qkv_dim=int(qkv), feature_norm=tuple(float(v) for v in norm))

    def to_params(self) -> dict[str, Any]:
        """The params form (``Space.from_params(s.to_params()) == s``)."""
        out: dict[str, Any] = {k: list(v) for k, v in self.choices.items()}
        out["qkv_dim"] = self.qkv_dim
        out["feature_norm"] = list(self.feature_norm)
        return out

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_params(), sort_keys=True))

    # ---------------------------------------------------------------- sizes
    def max_layers(self, side: str) -> int:
        """Length of the per-layer lists of ``side`` ("encoder" | "decoder")."""
        return max(self.choices[f"{side}_layer_num"])

    def super_dims(self) -> dict[str, int]:
        """Maximum of every key (the SuperTransformer's shapes) plus ``qkv_dim``."""
        dims = {k: max(v) for k, v in self.choices.items() if k != "decoder_arbitrary_ende_attn"}
        dims["qkv_dim"] = self.qkv_dim
        return dims

    # ---------------------------------------------------------------- special archs
    def largest(self) -> Arch:
        """Max of each choice, arbitrary attention 1 everywhere (as HAT's largest subnet;
        the largest choice when 1 is not one)."""
        arch = self._uniform(max)
        arb = self.choices["decoder_arbitrary_ende_attn"]
        arch["decoder_arbitrary_ende_attn"] = [1 if 1 in arb else max(arb)] * self.max_layers(
            "decoder")
        return arch

    def smallest(self) -> Arch:
        """Min of each choice (arbitrary attention: the smallest choice)."""
        return self._uniform(min)

    def _uniform(self, pick) -> Arch:
        arch: Arch = {}
        for key in ARCH_KEYS:
            value = int(pick(self.choices[key]))
            arch[key] = [value] * self.max_layers(_side(key)) if key in LAYER_KEYS else value
        return arch

    # ---------------------------------------------------------------- genes
    def gene_keys(self) -> list[tuple[str, Optional[int]]]:
        """(key, layer or None) of every gene, in HAT's layout: encoder embed, encoder
        layers, encoder FFN x Le, encoder heads x Le, decoder embed, decoder layers, decoder
        FFN x Ld, decoder self heads x Ld, enc-dec heads x Ld, arbitrary attention x Ld."""
        out: list[tuple[str, Optional[int]]] = []
        for side, keys in (("encoder", ENCODER_LAYER_KEYS), ("decoder", DECODER_LAYER_KEYS)):
            out += [(f"{side}_embed_dim", None), (f"{side}_layer_num", None)]
            out += [(k, i) for k in keys for i in range(self.max_layers(side))]
        return out

    def gene_choices(self) -> list[tuple[int, ...]]:
        return [self.choices[key] for key, _ in self.gene_keys()]

    def genes(self, arch: Arch) -> list[int]:
        """The architecture as HAT's gene (a flat list of values)."""
        return [int(arch[k] if i is None else arch[k][i]) for k, i in self.gene_keys()]

    def from_genes(self, genes: Sequence[int]) -> Arch:
        """Inverse of :meth:`genes`."""
        keys = self.gene_keys()
        if len(genes) != len(keys):
            raise ValueError(f"a gene of this space has {len(keys)} values, got {len(genes)}")
        arch: Arch = {k: ([0] * self.max_layers(_side(k)) if k in LAYER_KEYS else 0)
                      for k in ARCH_KEYS}
        for (key, layer), value in zip(keys, genes):
            if layer is None:
                arch[key] = int(value)
            else:
                arch[key][layer] = int(value)
        return arch

    def sample(self, rng: np.random.Generator) -> Arch:
        """A random architecture: every gene uniform over its choices, independently."""
        return self.from_genes([c[int(rng.integers(len(c)))] for c in self.gene_choices()])

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float) -> Arch:
        """HAT's mutation: each gene resampled uniformly with probability ``prob``."""
        genes = self.genes(arch)
        for i, c in enumerate(self.gene_choices()):
            if rng.random() < prob:
                genes[i] = c[int(rng.integers(len(c)))]
        return self.from_genes(genes)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """HAT's uniform crossover: each gene from ``a`` or ``b`` with probability 1/2."""
        ga, gb = self.genes(a), self.genes(b)
        return self.from_genes([x if rng.random() < 0.5 else y for x, y in zip(ga, gb)])

    # ---------------------------------------------------------------- identity
    def canonical(self, arch: Arch) -> Arch:
        """``arch`` with the ignored entries (past ``*_layer_num``) set to the largest's."""
        big = self.largest()
        out = {k: (list(v) if isinstance(v, list) else v) for k, v in arch.items()}
        for key in LAYER_KEYS:
            n = int(arch[f"{_side(key)}_layer_num"])
            out[key] = [int(v) for v in arch[key][:n]] + big[key][n:]
        return out

    def arch_key(self, arch: Arch) -> str:
        """A canonical string of the network (ignored entries dropped): equal keys = equal
        networks."""
        parts = []
        for key in ARCH_KEYS:
            v = arch[key]
            if key in LAYER_KEYS:
                v = [int(x) for x in v[:int(arch[f"{_side(key)}_layer_num"])]]
            parts.append(f"{key}={json.dumps(v if isinstance(v, list) else int(v))}")
        return ";".join(parts).replace(" ", "")

    def enumerate(self, limit: int = 100_000) -> list[Arch]:
        """Every distinct network (canonical form); refuses spaces above ``limit``."""
        n = self.count()
        if n > limit:
            raise ValueError(f"the space has {n} networks, more than the enumeration limit "
                             f"{limit}")
        return list(self._iter_all())

    def count(self) -> int:
        """Number of distinct networks (computed, not enumerated)."""
        c = self.choices
        total = 0
        for le in c["encoder_layer_num"]:
            enc = len(c["encoder_embed_dim"]) * (len(c["encoder_ffn_embed_dim"]) * len(
                c["encoder_self_attention_heads"])) ** le
            for ld in c["decoder_layer_num"]:
                arb = sum(1 for a in c["decoder_arbitrary_ende_attn"] if ARBITRARY_LAYERS[a] <= le)
                per = (len(c["decoder_ffn_embed_dim"]) * len(c["decoder_self_attention_heads"])
                       * len(c["decoder_ende_attention_heads"]) * arb)
                total += enc * len(c["decoder_embed_dim"]) * per ** ld
        return total

    def _iter_all(self) -> Iterator[Arch]:
        c, big = self.choices, self.largest()
        for le, ld in itertools.product(c["encoder_layer_num"], c["decoder_layer_num"]):
            per_enc = [c[k] for k in ENCODER_LAYER_KEYS for _ in range(le)]
            arb = tuple(a for a in c["decoder_arbitrary_ende_attn"] if ARBITRARY_LAYERS[a] <= le)
            per_dec = [c[k] if k != "decoder_arbitrary_ende_attn" else arb
                       for k in DECODER_LAYER_KEYS for _ in range(ld)]
            for ee, de, enc, dec in itertools.product(
                    c["encoder_embed_dim"], c["decoder_embed_dim"], itertools.product(*per_enc),
                    itertools.product(*per_dec)):
                arch: Arch = {"encoder_embed_dim": ee, "encoder_layer_num": le,
                              "decoder_embed_dim": de, "decoder_layer_num": ld}
                for j, key in enumerate(ENCODER_LAYER_KEYS):
                    arch[key] = list(enc[j * le:(j + 1) * le]) + big[key][le:]
                for j, key in enumerate(DECODER_LAYER_KEYS):
                    arch[key] = list(dec[j * ld:(j + 1) * ld]) + big[key][ld:]
                yield {k: arch[k] for k in ARCH_KEYS}

    # ---------------------------------------------------------------- checks
    def validate(self, arch: Any, where: str = "architecture") -> Arch:
        """``arch`` itself when it lies in the space; else a one-line ParamsError naming the
        key, layer and value."""
        if not isinstance(arch, Mapping):
            raise ParamsError(f"{where}: must be a mapping with keys {', '.join(ARCH_KEYS)}")
        missing = [k for k in ARCH_KEYS if k not in arch]
        if missing:
            raise ParamsError(f"{where}: key {missing[0]!r} is missing")
        unknown = sorted(set(arch) - set(ARCH_KEYS))
        if unknown:
            raise ParamsError(f"{where}: unknown key {unknown[0]!r}")
        for key in SCALAR_KEYS:
            self._check_value(arch[key], key, None, where)
        for key in LAYER_KEYS:
            self._check_layers(arch, key, where)
        enc = int(arch["encoder_layer_num"])
        for i, a in enumerate(arch["decoder_arbitrary_ende_attn"][:arch["decoder_layer_num"]]):
            if ARBITRARY_LAYERS[a] > enc:
                raise ParamsError(f"{where}: decoder_arbitrary_ende_attn[{i}] = {a} attends to "
                                  f"{ARBITRARY_LAYERS[a]} encoder layers but the encoder has {enc}")
        return dict(arch)

    def _check_value(self, value: Any, key: str, layer: Optional[int], where: str) -> None:
        name = key if layer is None else f"{key}[{layer}]"
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not ok or int(value) not in self.choices[key]:
            raise ParamsError(f"{where}: {name} = {value!r} is not in the space "
                              f"({', '.join(map(str, self.choices[key]))})")

    def _check_layers(self, arch: Mapping[str, Any], key: str, where: str) -> None:
        side = _side(key)
        value, n = arch[key], self.max_layers(side)
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise ParamsError(f"{where}: {key} must be a list of {n} values (one per layer of "
                              f"the largest {side}), got {value!r}")
        for i in range(int(arch[f"{side}_layer_num"])):
            self._check_value(value[i], key, i, where)

    # ---------------------------------------------------------------- features
    def raw_features(self, arch: Arch) -> np.ndarray:
        """HAT's 10 architecture features (``utils.get_config_features``), unnormalised:
        embed dims and layer counts, and per-layer values averaged over the active layers
        (arbitrary attention -1 / 1 / 2 counted as 1 / 2 / 3). Shape [10]."""
        le, ld = int(arch["encoder_layer_num"]), int(arch["decoder_layer_num"])
        mean = lambda key, n: float(np.mean(arch[key][:n]))  # noqa: E731
        arb = float(np.mean([ARBITRARY_LAYERS[a]
                             for a in arch["decoder_arbitrary_ende_attn"][:ld]]))
        return np.array([arch["encoder_embed_dim"], le, mean("encoder_ffn_embed_dim", le),
                         mean("encoder_self_attention_heads", le), arch["decoder_embed_dim"], ld,
                         mean("decoder_ffn_embed_dim", ld),
                         mean("decoder_self_attention_heads", ld),
                         mean("decoder_ende_attention_heads", ld), arb], dtype=np.float64)

    def features(self, arch: Arch) -> np.ndarray:
        """:meth:`raw_features` divided by the feature norm. Shape [10]."""
        return self.raw_features(arch) / np.asarray(self.feature_norm)

    def features_matrix(self, archs: Sequence[Arch]) -> np.ndarray:
        """Normalised features of many architectures. Shape [N, 10]."""
        if not archs:
            return np.zeros((0, len(FEATURE_NAMES)))
        return np.stack([self.features(a) for a in archs])


def arch_from_json(text: str) -> Arch:
    """An architecture from its JSON text (lists kept, values as ints)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in json.loads(text).items()}


def _is_pos_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _choice_list(d: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = d.get(key)
    if value is None:
        raise ParamsError(f"{where}.{key}: is missing (a list of choices)")
    ok_int = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if \
        key == "decoder_arbitrary_ende_attn" else _is_pos_int
    if not isinstance(value, list) or not value or not all(ok_int(v) for v in value):
        kind = "integers" if key == "decoder_arbitrary_ende_attn" else "positive integers"
        raise ParamsError(f"{where}.{key}: {value!r} must be a non-empty list of {kind}")
    if len(set(value)) != len(value):
        raise ParamsError(f"{where}.{key}: {value!r} lists a choice twice")
    return tuple(int(v) for v in value)


def _check_heads(choices: Mapping[str, tuple[int, ...]], qkv: int, where: str) -> None:
    for key in ("encoder_self_attention_heads", "decoder_self_attention_heads",
                "decoder_ende_attention_heads"):
        for h in choices[key]:
            if qkv % h:
                raise ParamsError(f"{where}.{key}: {h} heads do not divide qkv_dim = {qkv}")


def _check_arbitrary(choices: Mapping[str, tuple[int, ...]], where: str) -> None:
    fewest = min(choices["encoder_layer_num"])
    for a in choices["decoder_arbitrary_ende_attn"]:
        if a not in ARBITRARY_LAYERS:
            raise ParamsError(f"{where}.decoder_arbitrary_ende_attn: {a} is not one of -1, 1, 2 "
                              f"(attend to the last 1, 2 or 3 encoder layers)")
        if ARBITRARY_LAYERS[a] > fewest:
            raise ParamsError(f"{where}.decoder_arbitrary_ende_attn: {a} attends to "
                              f"{ARBITRARY_LAYERS[a]} encoder layers but encoder_layer_num "
                              f"allows {fewest}")


def _default_norm(choices: Mapping[str, tuple[int, ...]]) -> list[float]:
    """Without ``feature_norm``: the largest value each feature can take."""
    top = {k: max(v) for k, v in choices.items()}
    arb = max(ARBITRARY_LAYERS[a] for a in choices["decoder_arbitrary_ende_attn"])
    return [top["encoder_embed_dim"], top["encoder_layer_num"], top["encoder_ffn_embed_dim"],
            top["encoder_self_attention_heads"], top["decoder_embed_dim"],
            top["decoder_layer_num"], top["decoder_ffn_embed_dim"],
            top["decoder_self_attention_heads"], top["decoder_ende_attention_heads"], arb]
