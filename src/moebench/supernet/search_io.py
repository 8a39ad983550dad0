"""Plumbing shared by the supernet command lines: JSON arguments, the supernet file, the
corpus, the standalone model of an architecture and its gold latency."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from moebench.errors import UsageError

log = logging.getLogger(__name__)


def json_arg(text: str, what: str) -> Any:
    """A JSON command-line value (``@FILE`` reads it from a file)."""
    try:
        if text.startswith("@"):
            return json.loads(Path(text[1:]).read_text(encoding="utf-8"))
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{what}: not valid JSON ({exc})") from None


def file_digest(path: str | Path, length: int = 16) -> str:
    """sha256 of a file's bytes, first ``length`` hex digits (a path-free identity)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def add_supernet_args(p: argparse.ArgumentParser) -> None:
    """``--marker`` (the training rule's marker JSON) or ``--supernet`` (a model.pt)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--marker", help="the supernet training marker JSON (names its run dir)")
    src.add_argument("--supernet", help="a trained supernet's model.pt")


def supernet_path(args: argparse.Namespace) -> Path:
    """The model.pt that ``--marker`` / ``--supernet`` names."""
    if getattr(args, "supernet", None):
        return Path(args.supernet)
    marker = json_arg(f"@{args.marker}", "--marker")
    return Path(marker["run_dir"]) / "model.pt"


def add_corpus_args(p: argparse.ArgumentParser) -> None:
    """``--corpus-kind / --data-dir / --spm-model`` (as the training command line)."""
    p.add_argument("--corpus-kind", default="ding", choices=("ding", "fairseq"))
    p.add_argument("--data-dir", help="the corpus folder (text splits or HAT's binary data)")
    p.add_argument("--spm-model", help="SentencePiece model (the ding corpus)")


def load_corpus_args(args: argparse.Namespace):
    """The corpus the arguments name (moebench.supernet.load.load_corpus)."""
    from moebench.supernet.load import load_corpus

    if not args.data_dir:
        raise UsageError("--data-dir is needed here")
    return load_corpus(args.corpus_kind, args.data_dir, args.spm_model)


def mean_lengths(corpus, split: str = "test") -> tuple[float, float]:
    """Mean source and target length (tokens, eos counted) of a split."""
    part = corpus.splits[split]
    if len(part) == 0:
        raise UsageError(f"the corpus' {split} split is empty")
    return (sum(len(s) for s in part.src) / len(part), sum(len(t) for t in part.tgt) / len(part))


def standalone(arch: dict, space, vocab_size: int, device=None, qkv_dim=None):
    """A freshly initialised standalone Transformer of ``arch`` (the exported model's class
    and shapes; latency does not depend on the weights' values). ``qkv_dim``: instead of the
    space's (then ``space`` may be None)."""
    from moebench.supernet.model_plain import PlainConfig, Transformer

    qkv = space.qkv_dim if qkv_dim is None else qkv_dim
    model = Transformer(PlainConfig.from_arch(arch, vocab_size=vocab_size, qkv_dim=qkv))
    return model.to(device) if device is not None else model


def reference_arch(space, which: str) -> dict:
    """The drift-correction reference subnet ``which`` (``smallest`` | ``largest``)."""
    return space.canonical(space.smallest() if which == "smallest" else space.largest())


class GoldLatency:
    """Gold latency under the latency dataset's protocol (``summary.json``): HAT's measurement
    of :func:`moebench.supernet.latency.measure_latency`, drift-corrected to the dataset's
    calibration when the dataset was measured beside a reference subnet."""

    def __init__(self, spec, reference=None, calibration_ms=None) -> None:
        self.spec, self.reference, self.calibration_ms = spec, reference, calibration_ms

    @classmethod
    def from_summary(cls, summary: dict, device=None) -> "GoldLatency":
        from moebench.supernet.search_params import LatencySpec

        spec = LatencySpec(**summary["protocol"])
        ref = summary.get("reference")
        if (ref is None) != (spec.reference is None):
            raise UsageError("latency summary: protocol.reference and reference disagree "
                             "(measure the dataset again)")
        if ref is None:
            return cls(spec)
        model = standalone(ref["arch"], None, summary["vocab_size"], device,
                           qkv_dim=summary["qkv_dim"])
        return cls(spec, model, float(ref["calibration_ms"]))

    def measure(self, model) -> dict:
        """measure_latency's result; corrected (``raw_ms`` = uncorrected) with a reference."""
        from moebench.supernet.latency import drift_corrected, measure_latency

        m = measure_latency(model, self.spec, self.reference)
        return m if self.reference is None else drift_corrected(m, self.calibration_ms)
