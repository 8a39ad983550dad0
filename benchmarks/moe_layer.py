"""Benchmark of the MoE layer against dense FFN baselines (forward + backward).

One process, same inputs for every variant; a ViT-S MoE layer (model_dim 384, hidden 1536,
32 images x 197 tokens). Per case it times the median of ``--iters`` iterations after
``--warmup``, the variants taking turns (so load drift on a shared machine hits every
column alike) of one untimed and ``--block`` (1) timed steps (so each timed step follows
one of its own, as in training; see ``time_round_robin``):
  ours      MoELayer (train mode, gate noise 1.0, batch-prioritised routing)
  dense     the dense FFN on every token
  dense_k   the time floor of the routed expert FLOPs: the faster of the dense FFN run once
            on k * T rows (mean-k for MinTau; JSON ``dense_kT_ms``) and k times its time on
            the T rows (``dense`` x k; a single call on k * T rows can pay page faults for
            its >32 MB activations that k separate calls do not); for Soft-MoE the floor of
            its slot GEMMs: the router's logits GEMM x Φ, the dispatch and combine bmm's
            and the dense FFN on the B * slots rows, forward and backward, without the
            softmaxes (``_soft_floor``)
  naive     a per-expert Python loop over boolean masks (moebench.moe.reference)
  gemms     the six expert GEMMs alone (fc1, fc2 forward; their weight and input gradients)
            on the rows each expert actually ran, into preallocated buffers: one MKL/cuBLAS
            call per expert (one batched call per run of equal-sized experts), no routing,
            activation, gather or autograd. What the BLAS alone costs on these shapes: for
            many small experts it is far above the dense FLOP floor (each expert's weights
            serve few rows), and no dispatch can go below it.
plus ratios, achieved GFLOP/s of the expert GEMMs vs a measured GEMM peak, and the peak
extra memory of one fwd+bwd (activations and temporaries: the variant's own parameter
gradients are subtracted, since E experts inherently have E x the gradient bytes; gradient
buffers the layer keeps across steps count as allocated in the step)
relative to the dense FFN once on k * T rows. CPU memory comes from the profiler's
allocation events.

  python benchmarks/moe_layer.py [--quick] [--json out.json] [--device cuda --dtype bf16]
                                 [--batch 2]   (smoke size)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Callable, Optional

import torch
from timm.layers import Mlp

from moebench.io import atomic_write_json
from moebench.moe import MoELayer
from moebench.moe.grouped import linear_block, linear_block_backward, segments
from moebench.moe.reference import naive_moe_forward, naive_soft_forward

D, H, B, M = 384, 1536, 32, 197
TARGETS = {"topk_cf0": 1.08, "topk_cf1.25": 1.10, "mintau": 1.10, "soft": 1.10}
MEM_TARGET = 1.3
# torch's CPU allocator backs blocks >= 2 MB with transparent huge pages when this is set
# (read once, at its first allocation: set it in the environment, not here)
THP = os.environ.get("THP_MEM_ALLOC_ENABLE")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--batch", type=int, default=B,
                   help=f"images of {M} tokens per step (ViT-S: {B}; fewer for a smoke run)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--block", type=int, default=1,
                   help="timed steps per turn of a variant (each turn starts with an untimed "
                        "one); 1 spreads bursts of host load over all columns alike")
    p.add_argument("--quick", action="store_true", help="E=8 only, fewer iterations")
    p.add_argument("--only", default="", help="run only cases whose name contains this")
    p.add_argument("--no-naive", action="store_true", help="skip the naive loop column")
    p.add_argument("--json", default=None, help="write the table as JSON to this path")
    return p.parse_args(argv)


def build_cases(quick: bool) -> list[dict]:
    experts = (8,) if quick else (4, 8, 16)
    cases = [{"name": f"topk E{e} k{k} cf{cf:g}", "router": "topk", "E": e, "k": k, "cf": cf,
              "kind": "topk_cf0" if cf == 0 else "topk_cf1.25"}
             for e in experts for k in (1, 2) for cf in (1.25, 0.0)]
    cases += [{"name": f"mintau E8 tau{tau}", "router": "mintau", "E": 8, "k": 1, "cf": 0.0,
               "tau": tau, "kind": "mintau"} for tau in ((0.5,) if quick else (0.5, 0.9))]
    soft = ((197, 1),) if quick else ((197, 1), (1, 197))
    cases += [{"name": f"soft E{e}x{s}", "router": "soft", "E": e, "k": 1, "cf": 0.0,
               "slots": s, "kind": "soft"} for e, s in soft]
    return cases


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Best measured GFLOP/s over square and FFN-shaped matmuls."""
    best = 0.0
    sq = min(2048, B * M)             # the square probe shrinks with a smoke-sized batch
    for m, k, n in ((sq, sq, sq), (B * M, D, H), (B * M, H, D), (H, B * M, D)):
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(2):
            torch.mm(a, b)
        times = []
        for _ in range(10):
            sync(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            times.append(time.perf_counter() - t0)
        best = max(best, 2 * m * k * n / min(times) / 1e9)
    return best


def clear_grads(params: list) -> None:
    for p in params:
        p.grad = None


def step(fn: Callable[[], Optional[torch.Tensor]], grad: dict, params: list) -> None:
    """One fwd+bwd of fn (gradients cleared first)."""
    clear_grads(params)
    y = fn()
    if y is None:                     # fn did its own backward work (the gemms column)
        return
    g = grad.get("g")
    if g is None or g.shape != y.shape:
        g = grad["g"] = torch.randn_like(y)
    y.backward(g)


def time_round_robin(fns: dict, params: list, iters: int, warmup: int, device: torch.device,
                     block: int = 1) -> dict[str, float]:
    """Median milliseconds per fwd+bwd of each fn over ``iters`` timed steps.

    The fns take turns (so load drift on a shared machine hits every column alike): each
    turn runs one untimed step, then ``block`` timed ones. Every timed step thus follows a
    step of the same fn, as in training; otherwise each column pays for the allocator state
    the previous column left (measured here: after the naive loop's ~430k page faults the
    next column's step faults ~30k pages afresh, +10-25 %). ``warmup`` untimed steps per fn
    come first. The previous step's gradients are freed before the clock starts (freeing
    two 464 MB expert gradients is not part of a fwd+bwd). Short turns (``block`` 1) matter
    here: host load comes in bursts of seconds, and with four timed steps per turn a burst
    fell on one column only (measured: the same dense FFN in three columns, ratio of
    medians 0.99-1.14 with ``block`` 4, 0.99-1.03 with 1, four runs each)."""
    grads = {name: {} for name in fns}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        for _ in range(warmup):
            step(fn, grads[name], params)
    while min(len(v) for v in times.values()) < iters:
        for name, fn in fns.items():
            step(fn, grads[name], params)
            for _ in range(min(block, iters - len(times[name]))):
                clear_grads(params)
                sync(device)
                t0 = time.perf_counter()
                step(fn, grads[name], params)
                sync(device)
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (kineto prints profiler_start/stop and CUDA-probe lines
    from C++ on every CPU profile, which would bury the table)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn: Callable, params: list, device: torch.device) -> float:
    """Peak bytes allocated above the starting point during one fwd+bwd."""
    grad: dict = {}
    step(fn, grad, params)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(fn, grad, params)
        sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(fn, grad, params)
    deltas = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    cur = peak = 0
    for _, nbytes in deltas:
        cur += nbytes
        peak = max(peak, cur)
    return float(peak)


def _soft_floor(mlp: Mlp, x: torch.Tensor, n_slots: int) -> tuple[Callable, list]:
    """GEMM floor of Soft-MoE: its four products with the softmaxes and normalisation left
    out. logits L = x Φ (the router's [B*m, D] x [D, S] GEMM), slots = Lᵀ x, the dense FFN
    on the slot rows, y = L ys; L serves as dispatch and combine weights, so the backward
    runs every product's two gradient GEMMs, as the layer does."""
    b, m, d = x.shape
    phi = (torch.randn(d, n_slots, device=x.device) * d ** -0.5).to(x.dtype).requires_grad_()

    def fn() -> torch.Tensor:
        logits = torch.mm(x.reshape(b * m, d), phi).view(b, m, n_slots)
        slots = torch.bmm(logits.transpose(1, 2), x)
        ys = mlp(slots.reshape(-1, d)).view(b, n_slots, -1)
        return torch.bmm(logits, ys)
    return fn, [phi]


def _gemms_only(layer: MoELayer, counts: list[int]) -> Callable[[], None]:
    """The expert FFN's six GEMMs on grouped rows, all outputs preallocated."""
    members = list(segments(tuple(counts)))
    ex = layer.experts
    w1, w2 = ex.fc1_weight.detach(), ex.fc2_weight.detach()
    n = sum(counts)
    dd = {"device": w1.device, "dtype": w1.dtype}
    xg, gy = torch.randn(n, D, **dd), torch.randn(n, D, **dd)
    h, y, gh = (torch.empty(n, c, **dd) for c in (H, D, H))
    gx, gw1, gw2 = torch.empty_like(xg), torch.empty_like(w1), torch.empty_like(w2)

    def fn() -> None:
        linear_block(xg, members, w1, None, out=h)
        linear_block(h, members, w2, None, out=y)
        linear_block_backward(gy, h, members, w2, gw2, None, gh)
        linear_block_backward(gh, xg, members, w1, gw1, None, gx)
    return fn


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def make_layer(case: dict, device, dtype) -> MoELayer:
    kwargs = {"tau": case["tau"]} if "tau" in case else \
        {"slots_per_expert": case["slots"]} if "slots" in case else None
    torch.manual_seed(0)
    return MoELayer(D, H, num_experts=case["E"], router=case["router"], k=case["k"],
                    capacity_factor=case["cf"], gate_noise=1.0, batch_prioritized=True,
                    router_kwargs=kwargs, device=device, dtype=dtype).train()


def routed_rows(case: dict, layer: MoELayer, x: torch.Tensor) -> tuple[float, list[int]]:
    """(rows of the one-call dense floor dense_kT: the router's choices before capacity, rows each
    expert actually runs after capacity), from one routing of x."""
    if case["router"] == "soft":
        return float(B * case["E"] * case["slots"]), [B * case["slots"]] * case["E"]
    with torch.no_grad():
        _, plan = layer.route(x.reshape(-1, D))
    return float(plan.num_choices), plan.counts


def run_case(case: dict, args, device, dtype, peak: float) -> dict:
    layer = make_layer(case, device, dtype)
    mlp = Mlp(D, H, device=device, dtype=dtype)
    x = torch.randn(B, M, D, device=device, dtype=dtype, requires_grad=True)
    floor_rows, counts = routed_rows(case, layer, x)
    xk = torch.randn(int(round(floor_rows)), D, device=device, dtype=dtype, requires_grad=True)
    naive = naive_soft_forward if case["router"] == "soft" else naive_moe_forward
    fns = {"ours": lambda: layer(x), "dense": lambda: mlp(x), "dense_kT": lambda: mlp(xk)}
    extra = []
    if case["router"] == "soft":
        fns["dense_kT"], extra = _soft_floor(mlp, x, case["E"] * case["slots"])
    if not args.no_naive:
        fns["naive"] = lambda: naive(layer, x)
    fns["gemms"] = _gemms_only(layer, counts)
    params = [x, xk, *extra, *layer.parameters(), *mlp.parameters()]
    ms = time_round_robin(fns, params, args.iters, args.warmup, device, args.block)
    # gradient buffers the layer reuses across steps (grad_cache.py) are allocated before
    # the measured step: count them as if allocated in it, then subtract all gradients
    mem_ours = (peak_memory(fns["ours"], params, device) + layer.experts.grad_cache.nbytes()
                - _param_bytes(layer))
    mem_dense_k = peak_memory(fns["dense_kT"], params, device) - _param_bytes(mlp)
    k_eff = floor_rows / (B * M)
    ms["dense_k"] = ms["dense_kT"] if case["router"] == "soft" else \
        min(ms["dense_kT"], k_eff * ms["dense"])
    flops = 12.0 * sum(counts) * D * H
    if case["router"] == "soft":
        flops += 9 * 2.0 * B * M * case["E"] * case["slots"] * D   # logits, dispatch, combine
    row = {"case": case["name"], "kind": case["kind"], "k_eff": k_eff,
           **{f"{n}_ms": v for n, v in ms.items()},
           "ours_vs_dense_k": ms["ours"] / ms["dense_k"],
           "naive_vs_dense_k": ms["naive"] / ms["dense_k"] if "naive" in ms else None,
           "ours_vs_gemms": ms["ours"] / ms["gemms"],
           "ours_gflops": flops / ms["ours"] / 1e6, "peak_gflops": peak,
           "mem_ours_mb": mem_ours / 2**20, "mem_dense_k_mb": mem_dense_k / 2**20,
           "mem_ratio": mem_ours / mem_dense_k if mem_dense_k else None,
           "target": TARGETS[case["kind"]]}
    row["pct_peak"] = 100.0 * row["ours_gflops"] / peak
    row["meets_target"] = bool(row["ours_vs_dense_k"] <= row["target"])
    return row


def format_table(rows: list[dict]) -> str:
    head = (f"{'case':<22}{'k':>5}{'ours':>9}{'dense':>9}{'dense_k':>9}{'naive':>9}{'gemms':>9}"
            f"{'ours/dk':>9}{'naive/dk':>9}{'ours/gm':>9}{'GFLOP/s':>9}{'%peak':>7}"
            f"{'mem/dk':>8}{'target':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        naive = f"{r['naive_ms']:9.1f}" if "naive_ms" in r else f"{'-':>9}"
        nratio = f"{r['naive_vs_dense_k']:9.3f}" if r["naive_vs_dense_k"] else f"{'-':>9}"
        ok = "ok" if r["meets_target"] else "MISS"
        lines.append(f"{r['case']:<22}{r['k_eff']:5.2f}{r['ours_ms']:9.1f}{r['dense_ms']:9.1f}"
                     f"{r['dense_k_ms']:9.1f}{naive}{r['gemms_ms']:9.1f}"
                     f"{r['ours_vs_dense_k']:9.3f}{nratio}{r['ours_vs_gemms']:9.3f}"
                     f"{r['ours_gflops']:9.1f}{r['pct_peak']:7.1f}{r['mem_ratio']:8.2f}"
                     f"{r['target']:>6.2f} {ok}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    global B
    args = parse_args(argv)
    B = args.batch                    # every shape below reads the module's B
    if args.quick:
        args.iters, args.warmup = min(args.iters, 5), min(args.warmup, 1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    load0 = os.getloadavg()
    peak = gemm_peak(device, dtype)
    print(f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} "
          f"iters={args.iters} warmup={args.warmup} block={args.block} "
          f"GEMM peak {peak:.1f} GFLOP/s loadavg={load0[0]:.2f} "
          f"THP_MEM_ALLOC_ENABLE={THP or '-'}", flush=True)
    rows = []
    for case in build_cases(args.quick):
        if args.only and args.only not in case["name"]:
            continue
        rows.append(run_case(case, args, device, dtype, peak))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    peak = max(peak, gemm_peak(device, dtype))      # re-probe: keep the best of both
    for row in rows:
        row["peak_gflops"] = peak
        row["pct_peak"] = 100.0 * row["ours_gflops"] / peak
    print(f"\nGEMM peak (best of start/end probes) {peak:.1f} GFLOP/s\n" + format_table(rows)
          + f"\nloadavg start {load0[0]:.2f} end {os.getloadavg()[0]:.2f}")
    if args.json:
        meta = {"device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
                "iters": args.iters, "warmup": args.warmup, "block": args.block,
                "gemm_peak_gflops": peak,
                "torch": torch.__version__, "thp_mem_alloc_enable": THP,
                "loadavg_start": load0[0],
                "loadavg_end": os.getloadavg()[0], "shape": {"D": D, "H": H, "B": B, "M": M}}
        atomic_write_json(args.json, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
