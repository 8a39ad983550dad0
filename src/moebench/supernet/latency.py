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
"""
from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import asdict
from functools import lru_cache
from typing import Any, Callable, Iterator, Sequence

import torch

from moebench.supernet.search_params import LatencySpec

__all__ = ["LatencySpec", "measure_latency", "trimmed_mean", "pinned_threads", "device_name",
           "machine_info"]


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


def measure_latency(model: torch.nn.Module, spec: LatencySpec) -> dict[str, Any]:
    """Time ``model`` under ``spec``; returns ``latency_ms`` (= encoder + decoder trimmed
    means), ``encoder_ms``, ``decoder_ms``, the raw timed runs, the device, threads and torch
    version. The model is put in eval mode (and restored)."""
    device = _model_device(model)
    timed = _timer(device)
    was_training = model.training
    model.eval()
    try:
        with pinned_threads(spec.threads), torch.inference_mode():
            src = torch.full((1, spec.src_len), spec.token, dtype=torch.long, device=device)
            src[0, 0] = 2  # HAT's dummy source: [2] + [7] * (len - 1)
            enc_runs = [timed(lambda: model.encode(src)) for _ in range(spec.warmup + spec.runs)]
            enc = model.encode(src).index_select(
                torch.zeros(spec.beam, dtype=torch.long, device=device))
            tokens = torch.full((spec.beam, 1), spec.token, dtype=torch.long, device=device)

            def decode() -> None:
                cache: dict = {}
                for _ in range(spec.decode_steps):
                    model.decode_step(tokens, enc, cache)

            dec_runs = [timed(decode) for _ in range(spec.warmup + spec.runs)]
    finally:
        model.train(was_training)
    enc_runs, dec_runs = enc_runs[spec.warmup:], dec_runs[spec.warmup:]
    encoder_ms, decoder_ms = trimmed_mean(enc_runs, spec.trim), trimmed_mean(dec_runs, spec.trim)
    return {"latency_ms": encoder_ms + decoder_ms, "encoder_ms": encoder_ms,
            "decoder_ms": decoder_ms, "encoder_runs": enc_runs, "decoder_runs": dec_runs,
            **machine_info(device, spec.threads), "spec": asdict(spec)}


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    """``device`` (name), ``threads`` and ``torch`` (version) of a measurement."""
    return {"device": device_name(device), "threads": int(threads), "torch": torch.__version__}
