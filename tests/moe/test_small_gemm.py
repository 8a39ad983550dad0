"""Our AVX-512 small-row GEMM kernels: exact against torch in float64 for every tile
remainder, accumulate mode, strided outputs; the MoE layer on them == the naive loop;
clean fallback to torch when the build fails or they are switched off."""
from __future__ import annotations

import warnings

import pytest
import torch

from moebench.moe import MoELayer, small_gemm
from moebench.moe.reference import naive_moe_forward, naive_soft_forward

needs_kernels = pytest.mark.skipif(not small_gemm.available(),
                                   reason="needs x86-64 Linux with AVX-512 and a C compiler")


@pytest.fixture
def fresh_state(monkeypatch):
    """Forget the loaded library so the next call re-decides (restored afterwards)."""
    monkeypatch.setattr(small_gemm, "_lib", None)
    monkeypatch.setattr(small_gemm, "_tried", False)


def _close(got, want):
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)


@needs_kernels
@pytest.mark.parametrize("layout", ["nt", "nn"])
@pytest.mark.parametrize("m", [1, 5, 32, 33, 70])
@pytest.mark.parametrize("n", [7, 12, 13, 40])
@pytest.mark.parametrize("k", [3, 48, 100])
def test_row_kernels_match_torch(layout, m, n, k):
    """rows_nt: a @ w.T with w [E, N, K]; rows_nn: a @ w with w [E, K, N]."""
    torch.manual_seed(m * 100 + n + 7 * k)
    a = torch.randn(3, m, k)
    w = torch.randn(3, n, k) if layout == "nt" else torch.randn(3, k, n)
    kernel = small_gemm.rows_nt if layout == "nt" else small_gemm.rows_nn
    want = a.double() @ (w.double().transpose(1, 2) if layout == "nt" else w.double())
    out = torch.full((3, m, n), float("nan"))
    kernel(a, w, out)
    _close(out, want)
    kernel(a, w, out, accumulate=True)
    _close(out, 2 * want)


@needs_kernels
@pytest.mark.parametrize("m", [1, 9, 32, 70])
@pytest.mark.parametrize("o", [3, 8, 20])
@pytest.mark.parametrize("i", [16, 32, 64, 80, 96])
def test_grad_weight_and_grad_input_match_torch(m, o, i):
    torch.manual_seed(m + 10 * o + 1000 * i)
    go, x, w = torch.randn(2, m, o), torch.randn(2, m, i), torch.randn(2, o, i)
    gw = torch.full((2, o, i), float("nan"))
    small_gemm.grad_weight(go, x, gw)
    want = go.double().transpose(1, 2) @ x.double()
    _close(gw, want)
    small_gemm.grad_weight(go, x, gw, accumulate=True)
    _close(gw, 2 * want)
    gin = torch.full((2, m, i), float("nan"))
    small_gemm.grad_input(go, w, gin)
    _close(gin, go.double() @ w.double())


@needs_kernels
def test_kernels_respect_row_strides_of_views():
    torch.manual_seed(3)
    buf = torch.zeros(40, 64)                  # write rows 4..36 of a wider buffer
    a, w = torch.randn(32, 48)[:, :32], torch.randn(1, 48, 32)
    small_gemm.rows_nt(a.unsqueeze(0), w, buf[4:36, :48].unsqueeze(0))
    _close(buf[4:36, :48], a.double() @ w[0].double().T)
    assert buf[:4].abs().sum() == 0 and buf[36:].abs().sum() == 0 and buf[:, 48:].abs().sum() == 0


@pytest.fixture
def kernel_calls(monkeypatch):
    """Count calls of each kernel (they still run)."""
    calls = {}
    for name in ("rows_nt", "grad_weight", "grad_input"):
        def spy(*args, _f=getattr(small_gemm, name), _n=name, **kw):
            calls[_n] = calls.get(_n, 0) + 1
            return _f(*args, **kw)
        monkeypatch.setattr(small_gemm, name, spy)
    return calls


@needs_kernels
@pytest.mark.parametrize("router,k,cf", [("topk", 2, 1.25), ("topk", 1, 0.0),
                                         ("mintau", 1, 1.0)])
def test_layer_on_kernels_matches_naive_loop(router, k, cf, kernel_calls):
    torch.manual_seed(4)
    layer = MoELayer(32, 48, num_experts=4, router=router, k=k, capacity_factor=cf,
                     router_kwargs={"tau": 0.6} if router == "mintau" else None).train()
    x, g = torch.randn(3, 21, 32, requires_grad=True), torch.randn(3, 21, 32)
    results = []
    for fn in (layer, lambda t: naive_moe_forward(layer, t)):
        torch.manual_seed(7)                     # same router noise draw for both
        y = fn(x)
        results.append([y, *torch.autograd.grad((y * g).sum(), [x, *layer.parameters()],
                                                allow_unused=True)])
    assert min(kernel_calls.get(n, 0) for n in ("rows_nt", "grad_weight", "grad_input")) >= 1
    for a, b in zip(*results):
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_kernels
def test_soft_layer_on_kernels_matches_naive_loop(kernel_calls):
    torch.manual_seed(5)
    layer = MoELayer(32, 48, num_experts=5, router="soft", router_kwargs={"slots_per_expert": 1})
    x = torch.randn(6, 5, 32, requires_grad=True)
    ys = [layer(x), naive_soft_forward(layer, x)]
    grads = [torch.autograd.grad(y.square().sum(), [x, *layer.parameters()]) for y in ys]
    assert kernel_calls.get("rows_nt", 0) >= 2 and kernel_calls.get("grad_weight", 0) >= 2
    torch.testing.assert_close(ys[0], ys[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_usable_only_for_few_rows_fp32_cpu_and_16_multiples():
    t = torch.empty(4, 32)
    if not small_gemm.available():
        assert not small_gemm.usable(8, t)
        return
    assert small_gemm.usable(small_gemm.MAX_ROWS, t)
    assert not small_gemm.usable(small_gemm.MAX_ROWS + 1, t)
    assert not small_gemm.usable(8, t.double())
    assert not small_gemm.usable(8, torch.empty(4, 24))
    assert not small_gemm.usable(8, torch.empty(32, 4).t())


def test_switched_off_by_environment(monkeypatch, fresh_state):
    monkeypatch.setenv("MOEBENCH_SMALL_GEMM", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not small_gemm.available()
        assert not small_gemm.usable(8, torch.empty(4, 32))


def test_failed_build_warns_once_and_falls_back(monkeypatch, fresh_state, tmp_path):
    monkeypatch.delenv("MOEBENCH_SMALL_GEMM", raising=False)
    monkeypatch.setattr(small_gemm, "_cpu_ok", lambda: True)
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("MOEBENCH_KERNEL_DIR", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="small-row GEMM kernels unavailable, using torch"):
        assert not small_gemm.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not small_gemm.available()       # decided once
    assert list(tmp_path.iterdir()) == []       # no half-written library left behind
    layer = MoELayer(32, 48, num_experts=2)      # and the layer still works on torch
    assert layer(torch.randn(2, 3, 32)).shape == (2, 3, 32)


@needs_kernels
def test_build_is_cached_by_source_hash(tmp_path):
    first = small_gemm.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert small_gemm.build(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert first.name.startswith("small_gemm-") and first.suffix == ".so"
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
