"""Grouped expert linear layers with fused gather / weighted scatter (custom autograd).

Rows are grouped by expert: ``counts[e]`` contiguous rows each. Each GEMM is written into
one preallocated buffer, forward and backward (no per-expert autograd nodes, no
full-size zero gradient per expert slice, no ``cat``), so an expert FFN costs the dense
FFN's GEMMs on the routed rows plus one gather and one scatter. The activation and
dropout between the two layers run as ordinary autograd ops on the whole [N, H] block,
so memory is released node by node exactly as for a dense ``Mlp``.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import Tensor

from moebench.moe import backend, small_gemm
from moebench.moe.grad_cache import GradBufferCache, grad_buffer


def segments(counts: tuple[int, ...]) -> Iterator[tuple[int, int, int]]:
    """(expert, start row, end row) of every non-empty expert block."""
    start = 0
    for e, n in enumerate(counts):
        if n > 0:
            yield e, start, start + n
        start += n


def equal_runs(members) -> list[tuple[int, int, int, int, bool]]:
    """Merge members (expert, start, end[, accumulate]) of consecutive experts with equal
    row counts into runs (first expert e0, experts m, start row s, rows per expert n,
    accumulate): one ``bmm`` per run. ``accumulate`` members (later row pieces of an
    expert, see ``fused_ffn.row_blocks``) stay single."""
    runs: list[tuple[int, int, int, int, bool]] = []
    for e, s, t, *rest in members:
        acc = bool(rest and rest[0])
        if runs and not acc:
            e0, m, s0, n0, acc0 = runs[-1]
            if not acc0 and e == e0 + m and t - s == n0 and s == s0 + m * n0:
                runs[-1] = (e0, m + 1, s0, n0, False)
                continue
        runs.append((e, 1, s, t - s, acc))
    return runs


def linear_block(x: Tensor, members, w: Tensor, b: Optional[Tensor],
                 out: Optional[Tensor] = None) -> Tensor:
    """Rows x [n, I] -> out [n, O]; member (e, s, t, ...)'s rows use w[e], b[e]. Runs of
    at most ``small_gemm.MAX_ROWS`` rows per expert use our kernels where usable."""
    out = x.new_empty(x.shape[0], w.shape[1]) if out is None else out
    for e, m, s, n, _ in equal_runs(members):
        t = s + m * n
        # GEMM, then the bias in place: addmm would first copy the bias into ``out`` and
        # then read it back (measured ~7% slower for 16 ViT-S experts)
        kernel = backend.native(n, x, w, out)
        if m == 1 and not kernel:
            torch.mm(x[s:t], w[e].t(), out=out[s:t])
            if b is not None:
                out[s:t].add_(b[e])
            continue
        ob = out[s:t].view(m, n, -1)
        if kernel:
            small_gemm.rows_nt(x[s:t].view(m, n, -1), w[e:e + m], ob)
        else:
            torch.bmm(x[s:t].view(m, n, -1), w[e:e + m].transpose(1, 2), out=ob)
        if b is not None:
            ob.add_(b[e:e + m].unsqueeze(1))
    return out


def linear_block_backward(gout: Tensor, inp: Tensor, members, w: Tensor, gw, gb,
                           gin: Optional[Tensor]) -> None:
    """Write gw[e] = gout_eᵀ inp_e, gb[e] = Σ gout_e and gin rows = gout_e w[e] per member
    (one ``bmm`` per run of equal-sized consecutive experts; ``accumulate`` members add
    to gw[e], gb[e] instead of writing them)."""
    for e, m, s, n, acc in equal_runs(members):
        t = s + m * n
        go, x = gout[s:t].view(m, n, -1), inp[s:t].view(m, n, -1)
        if gb is not None:      # acc members are single (m == 1)
            gb[e].add_(go[0].sum(0)) if acc else torch.sum(go, dim=1, out=gb[e:e + m])
        if backend.native(n, gout, inp, w, *(g for g in (gw, gin) if g is not None)):
            if gw is not None:
                small_gemm.grad_weight(go, x, gw[e:e + m], accumulate=acc)
            if gin is not None:
                small_gemm.grad_input(go, w[e:e + m], gin[s:t].view(m, n, -1))
        elif m == 1:
            if gw is not None:
                gw[e].addmm_(go[0].t(), x[0]) if acc else torch.mm(go[0].t(), x[0], out=gw[e])
            if gin is not None:
                torch.mm(go[0], w[e], out=gin[s:t])
        else:
            if gw is not None:
                torch.bmm(go.transpose(1, 2), x, out=gw[e:e + m])
            if gin is not None:
                torch.bmm(go, w[e:e + m], out=gin[s:t].view(m, n, -1))


def gather_sum(rows: Tensor, slot: Tensor) -> Tensor:
    """rows [N + 1, C] (row N is zero), slot [T, k] -> [T, C] = Σ_r rows[slot[:, r]]."""
    out = rows.index_select(0, slot[:, 0])
    for r in range(1, slot.shape[1]):
        out += rows.index_select(0, slot[:, r])
    return out


def padded_buffer(n: int, cols: int, like: Tensor, pad: bool) -> Tensor:
    """Empty [n, cols] buffer, with one extra zero row at index n when ``pad``."""
    if not pad:
        return like.new_empty(n, cols)
    buf = like.new_empty(n + 1, cols)
    buf[n].zero_()
    return buf


def _grouped_linear(x: Tensor, counts, w: Tensor, b: Optional[Tensor],
                    pad: bool = False) -> Tensor:
    """x [N, I] grouped -> [N (+1 zero row if pad), O] with out_e = x_e @ w[e].T + b[e]."""
    out = padded_buffer(x.shape[0], w.shape[1], x, pad)
    linear_block(x, list(segments(counts)), w, b, out=out)
    return out


def expert_grad_buffers(named_params, needed, counts,
                        cache: Optional[GradBufferCache] = None) -> list[Optional[Tensor]]:
    """Uninitialised gradient buffers for per-expert parameters [E, ...] given as
    ((cache key, param | None), ...) — None where the param is None or not ``needed`` —
    zeroed only for experts with no rows (the GEMMs write every other slice)."""
    grads = [grad_buffer(cache, key, t) if (t is not None and need) else None
             for (key, t), need in zip(named_params, needed)]
    for e, n in enumerate(counts):
        if n == 0:
            for g in grads:
                if g is not None:
                    g[e].zero_()
    return grads


def _grouped_linear_backward(gout: Tensor, inp: Tensor, counts, w: Tensor,
                             b: Optional[Tensor], need_w: bool, need_in: bool,
                             pad: bool = False, cache: Optional[GradBufferCache] = None,
                             name: str = ""):
    """Per expert: gw[e] = gout_eᵀ inp_e, gb[e] = Σ_rows gout_e, gin_e = gout_e w[e]
    (gin gets an extra zero row when ``pad``; gw/gb come from ``cache`` when given)."""
    gw, gb = expert_grad_buffers(((name + "_weight", w), (name + "_bias", b)),
                                 (need_w, need_w), counts, cache)
    gin = padded_buffer(gout.shape[0], w.shape[2], gout, pad) if need_in else None
    linear_block_backward(gout, inp, segments(counts), w, gw, gb, gin)
    return gw, gb, gin


class _GatherLinear(torch.autograd.Function):
    """h = grouped_linear(x[index]); backward gathers the input gradient back via slot."""

    @staticmethod
    def forward(ctx, x, index, slot, counts, w, b, cache):
        xs = x if index is None else x.index_select(0, index)
        h = _grouped_linear(xs, counts, w, b)
        ctx.save_for_backward(x, index, slot, w, b)
        ctx.counts, ctx.cache = counts, cache
        return h

    @staticmethod
    def backward(ctx, gh):
        x, index, slot, w, b = ctx.saved_tensors
        need_in = ctx.needs_input_grad[0]
        need_w = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        xs = x if index is None else x.index_select(0, index)
        gw, gb, gxs = _grouped_linear_backward(gh.contiguous(), xs, ctx.counts, w, b,
                                               need_w, need_in, pad=index is not None,
                                               cache=ctx.cache, name="fc1")
        gx = gxs if gxs is None or index is None else gather_sum(gxs, slot)
        return gx, None, None, None, gw, gb, None


class _LinearScatter(torch.autograd.Function):
    """out[t] = Σ_r weight * grouped_linear(a)[slot[t, r]]; backward gathers by index."""

    @staticmethod
    def forward(ctx, a, counts, w, b, weight, index, slot, cache):
        y = _grouped_linear(a, counts, w, b, pad=slot is not None and weight is None)
        out = y
        if weight is not None:
            out = padded_buffer(y.shape[0], y.shape[1], y, pad=slot is not None)
            torch.mul(y, weight.unsqueeze(1), out=out[:y.shape[0]])
        if slot is not None:
            out = gather_sum(out, slot)
        ctx.save_for_backward(a, w, b, weight, index, y if weight is not None else None)
        ctx.counts, ctx.cache = counts, cache
        return out

    @staticmethod
    def backward(ctx, gout):
        a, w, b, weight, index, y = ctx.saved_tensors
        gy = gout.contiguous() if index is None else gout.index_select(0, index)
        gweight = None
        if weight is not None:
            if ctx.needs_input_grad[4]:
                gweight = torch.bmm(gy.unsqueeze(1), y.unsqueeze(2)).view(-1)
            gy = gy * weight.unsqueeze(1) if index is None else gy.mul_(weight.unsqueeze(1))
        need_w = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        gw, gb, ga = _grouped_linear_backward(gy, a, ctx.counts, w, b, need_w,
                                              ctx.needs_input_grad[0], cache=ctx.cache,
                                              name="fc2")
        return ga, None, gw, gb, gweight, None, None, None


def gather_linear(x: Tensor, counts: list[int], w: Tensor, b: Optional[Tensor],
                  index: Optional[Tensor] = None, slot: Optional[Tensor] = None,
                  cache: Optional[GradBufferCache] = None) -> Tensor:
    """x [T, D]; index [N] source token of each grouped row (None: x itself is grouped);
    slot [T, k] inverse map (row of choice (t, r), N if none; needed with index);
    w [E, H, D], b [E, H] | None -> h [N, H] with h_e = x[index]_e @ w[e].T + b[e]."""
    if (index is None) != (slot is None):
        raise ValueError("gather_linear needs both index and slot, or neither")
    return _GatherLinear.apply(x, index, slot, tuple(counts), w, b, cache)


def linear_scatter(a: Tensor, counts: list[int], w: Tensor, b: Optional[Tensor],
                   weight: Optional[Tensor] = None, index: Optional[Tensor] = None,
                   slot: Optional[Tensor] = None,
                   cache: Optional[GradBufferCache] = None) -> Tensor:
    """a [N, H] grouped, w [E, O, H], b [E, O] | None, weight [N] | None, index [N] and
    slot [T, k] as in :func:`gather_linear` -> out [T, O] with
    out[t] = Σ_r weight[s] * (a[s] @ w[e_s].T + b[e_s]), s = slot[t, r]
    (index/slot None: [N, O], row-wise weighted, not combined)."""
    if (index is None) != (slot is None):
        raise ValueError("linear_scatter needs both index and slot, or neither")
    return _LinearScatter.apply(a, tuple(counts), w, b, weight, index, slot, cache)
