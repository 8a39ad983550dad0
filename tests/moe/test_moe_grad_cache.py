"""Expert weight-gradient buffers reused across steps (moebench.moe.grad_cache)."""
import copy

import torch

from moebench.moe import MoELayer
from moebench.moe.grad_cache import GradBufferCache


def _layer(act=torch.nn.GELU):
    torch.manual_seed(0)
    return MoELayer(8, 16, num_experts=4, router="topk", k=2, capacity_factor=0.0,
                    gate_noise=0.0, act_layer=act)


def _grads(layer, x):
    layer(x).square().sum().backward()
    return [p.grad for p in (layer.experts.fc1_weight, layer.experts.fc2_weight)]


def test_cache_reuses_storage_only_when_unreferenced():
    cache = GradBufferCache()
    like = torch.empty(3, 4)
    a = cache.empty_like("w", like)
    b = cache.empty_like("w", like)            # a is alive: fresh buffer
    assert a.data_ptr() != b.data_ptr()
    ptr = b.data_ptr()
    del a, b
    c = cache.empty_like("w", like)            # nothing references the cached storage
    assert c.data_ptr() == ptr and c.shape == (3, 4) and c.is_contiguous()
    assert cache.empty_like("w", torch.empty(5)).shape == (5,)  # other size: fresh
    assert cache.nbytes() == 5 * 4
    cache.clear()
    assert cache.nbytes() == 0


def test_layer_reuses_gradient_buffers_with_set_to_none_and_values_stay_exact():
    for act in (torch.nn.GELU, torch.nn.Tanh):        # fused path and grouped path
        layer, x = _layer(act), torch.randn(30, 8)
        first = [g.clone() for g in _grads(layer, x)]
        for step in range(2):                       # steps with zero_grad(set_to_none)
            for p in layer.parameters():
                p.grad = None
            for a, b in zip(first, _grads(layer, x)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert layer.experts.grad_cache.nbytes() > 0


def test_gradients_kept_by_the_user_or_accumulated_are_never_overwritten():
    layer, x = _layer(), torch.randn(30, 8)
    kept = _grads(layer, x)[0]                      # the user keeps a reference
    snapshot = kept.clone()
    for p in layer.parameters():
        p.grad = None
    _grads(layer, 2 * x)
    torch.testing.assert_close(kept, snapshot, rtol=0, atol=0)
    # accumulation without zero_grad: grad = sum of both steps
    for p in layer.parameters():
        p.grad = None
    g1 = _grads(layer, x)[0].clone()
    g2 = _grads(layer, x)[0]
    torch.testing.assert_close(g2, 2 * g1)


def test_reuse_happens_after_set_to_none():
    layer, x = _layer(), torch.randn(30, 8)
    ptr = _grads(layer, x)[0].data_ptr()
    for p in layer.parameters():
        p.grad = None
    assert _grads(layer, x)[0].data_ptr() == ptr


def test_copies_start_empty_and_eval_releases():
    layer, x = _layer(), torch.randn(30, 8)
    _grads(layer, x)
    assert layer.experts.grad_cache.nbytes() > 0
    clone = copy.deepcopy(layer)          # works after a training forward (aux losses dropped)
    assert clone.experts.grad_cache.nbytes() == 0 and clone.aux_losses == {}
    torch.testing.assert_close(clone(x), layer(x))
    layer.eval()
    assert layer.experts.grad_cache.nbytes() == 0


def test_disabled_cache_allocates_fresh_buffers_and_holds_nothing():
    layer, x = _layer(), torch.randn(30, 8)
    layer.experts.grad_cache.enabled = False
    first = _grads(layer, x)[0].clone()
    for p in layer.parameters():
        p.grad = None
    torch.testing.assert_close(_grads(layer, x)[0], first, rtol=0, atol=0)
    assert layer.experts.grad_cache.nbytes() == 0
