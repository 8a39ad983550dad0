"""Gold latency of a standalone subnet on this machine (HAT's protocol, done right).

HAT (``fairseq/utils.py::measure_latency``) times batch 1 with a dummy source of 30 tokens
(``[2] + [7] * 29``), beam 5 folded into the batch, the encoder once and the decoder as 30
incremental steps, 5 warm-up runs each, then ``latiter`` timed runs, sorted and trimmed to the
10-90 % part; latency = mean(encoder) + mean(decoder). HAT times without ``model.eval()`` and
without ``no_grad`` on CPU (dropout and autograd active) and on all cores; here the model is
in eval mode under :func:`torch.inference_mode`, the thread count is pinned, the trim is
symmetric and never empty, CPU time is ``time.perf_counter`` and CUDA time comes from CUDA
events. The model is anything with ``encode(src [B, S]) -> enc`` (``enc.index_select(idx)``
expands the batch) and ``decode_step(tokens [B, 1], enc, cache) -> log-probs [B, V]``, such
as :class:`moebench.supernet.model_plain.Transformer`.

Drift correction (``LatencySpec.reference``, not in HAT): on a shared or virtual machine the
speed itself wanders by tens of per cent over seconds, so two measurements of one subnet
differ more than neighbouring subnets do. With a reference model, every timed (and warm-up)
run of the measured model is followed by the same run of the reference, and the latency is
scaled by ``calibration_ms / reference_ms`` (:func:`drift_corrected`): the latency at the
machine speed at which the reference takes ``calibration_ms``. The latency dataset fixes the
calibration (the median of its rows' reference times) and the gold check and the final models
use it, so limits, predictor and gold checks speak of one machine speed.
"""
from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import asdict
from functools import lru_cache
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch

from moebench.supernet.search_params import LatencySpec

__all__ = ["LatencySpec", "measure_latency", "drift_corrected", "trimmed_mean", "pinned_threads",
           "device_name", "machine_info"]


def trimmed_mean(values: Sequence[float], trim: float = 0.1) -> float:
    """Mean of the sorted values without the lowest and highest ``floor(trim * n)`` (never
    empty)."""
    if not values:
        raise ValueError("trimmed_mean of no values")
    ordered = sorted(values)
    k = int(math.floor(trim * len(ordered)))
    kept = ordered[k:len(ordered) - k] or ordered
    return float(sum(kept) / len(kept))


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=None)
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A readable name of the device timed on (CPU model or CUDA device name)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {_cpu_name()}"


def _timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    """A function timing one call in ms (CUDA events on CUDA, perf_counter on CPU)."""
    if device.type == "cuda":
        def timed(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return float(start.elapsed_time(end))
        return timed

    def timed_cpu(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1000.0
    return timed_cpu


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _interleaved(models: Sequence[torch.nn.Module], spec: LatencySpec,
                 timed: Callable[[Callable[[], Any]], float]
                 ) -> tuple[list[list[float]], list[list[float]]]:
    """Per model, the encoder runs and the decoder runs (warm-up included), taken model by
    model in turn: run r of every model before run r + 1 of any."""
    device = _model_device(models[0])
    src = torch.full((1, spec.src_len), spec.token, dtype=torch.long, device=device)
    src[0, 0] = 2  # HAT's dummy source: [2] + [7] * (len - 1)
    n = spec.warmup + spec.runs
    enc_runs: list[list[float]] = [[] for _ in models]
    for _ in range(n):
        for i, m in enumerate(models):
            enc_runs[i].append(timed(lambda: m.encode(src)))
    beam = torch.zeros(spec.beam, dtype=torch.long, device=device)
    encs = [m.encode(src).index_select(beam) for m in models]
    tokens = torch.full((spec.beam, 1), spec.token, dtype=torch.long, device=device)

    def decode(m: torch.nn.Module, enc: Any) -> None:
        cache: dict = {}
        for _ in range(spec.decode_steps):
            m.decode_step(tokens, enc, cache)

    dec_runs: list[list[float]] = [[] for _ in models]
    for _ in range(n):
        for i, (m, enc) in enumerate(zip(models, encs)):
            dec_runs[i].append(timed(lambda: decode(m, enc)))
    return enc_runs, dec_runs


def measure_latency(model: torch.nn.Module, spec: LatencySpec,
                    reference: Optional[torch.nn.Module] = None) -> dict[str, Any]:
    """Time ``model`` under ``spec``; returns ``latency_ms`` (= encoder + decoder trimmed
    means), ``encoder_ms``, ``decoder_ms``, the raw timed runs, the device, threads and torch
    version. The models are put in eval mode (and restored). With ``reference``, each run of
    ``model`` is followed by the same run of ``reference``, whose trimmed means come back as
    ``reference_ms`` (and its runs as ``reference_runs``); the latencies stay uncorrected
    (see :func:`drift_corrected`)."""
    models = [model] if reference is None else [model, reference]
    timed = _timer(_model_device(model))
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with pinned_threads(spec.threads), torch.inference_mode():
            enc_runs, dec_runs = _interleaved(models, spec, timed)
    finally:
        for m, was in zip(models, was_training):
            m.train(was)
    means = [(trimmed_mean(e[spec.warmup:], spec.trim), trimmed_mean(d[spec.warmup:], spec.trim))
             for e, d in zip(enc_runs, dec_runs)]
    (encoder_ms, decoder_ms) = means[0]
    out = {"latency_ms": encoder_ms + decoder_ms, "encoder_ms": encoder_ms,
           "decoder_ms": decoder_ms, "encoder_runs": enc_runs[0][spec.warmup:],
           "decoder_runs": dec_runs[0][spec.warmup:],
           **machine_info(_model_device(model), spec.threads), "spec": asdict(spec)}
    if reference is not None:
        out["reference_ms"] = sum(means[1])
        out["reference_runs"] = [e + d for e, d in zip(enc_runs[1][spec.warmup:],
                                                       dec_runs[1][spec.warmup:])]
    return out


def drift_corrected(measured: Mapping[str, Any], calibration_ms: float) -> dict[str, Any]:
    """``measured`` (with ``reference_ms``) with ``latency_ms``, ``encoder_ms`` and
    ``decoder_ms`` scaled by ``calibration_ms / reference_ms``; the uncorrected latency is
    kept as ``raw_ms``."""
    ref = float(measured["reference_ms"])
    if not ref > 0 or not calibration_ms > 0:
        raise ValueError(f"drift correction needs positive times (reference {ref} ms, "
                         f"calibration {calibration_ms} ms)")
    scale = calibration_ms / ref
    return {**measured, "raw_ms": measured["latency_ms"],
            **{k: measured[k] * scale for k in ("latency_ms", "encoder_ms", "decoder_ms")}}


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    """``device`` (name), ``threads`` and ``torch`` (version) of a measurement."""
    return {"device": device_name(device), "threads": int(threads), "torch": torch.__version__}
