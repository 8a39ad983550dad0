"""Algorithms: every declared algorithm trains, GMoE routing properties, upcycling, resume."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers_hparams import tiny_hparams
from timm.layers import Mlp

from moebench.dg.study import declarations
from moebench.dg.algorithms import algorithm_class, Algorithm, HparamsError
from moebench.moe import MoELayer

SHAPE, N_CLASSES = (1, 16, 16), 10
TOKENS_PER_IMAGE = (16 // 4) ** 2 + 1


def make(name: str, seed: int = 0, shape: tuple[int, ...] = SHAPE, n_classes: int = N_CLASSES,
         **overrides: Any) -> Algorithm:
    torch.manual_seed(seed)
    return algorithm_class(name)(shape, n_classes, 3, tiny_hparams(name, **overrides), n_steps=10)


def batches(seed: int = 0, shape: tuple[int, ...] = SHAPE, n_classes: int = N_CLASSES,
            per_domain: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(per_domain, *shape, generator=g),
             torch.randint(0, n_classes, (per_domain,), generator=g)) for _ in range(3)]


def params(alg: Algorithm) -> list[torch.Tensor]:
    return [p.detach().clone() for p in alg.parameters()]


@pytest.mark.parametrize("name", list(declarations()))
@pytest.mark.parametrize("shape, n_classes", [((1, 16, 16), 10), ((2, 16, 16), 2)])
def test_every_algorithm_updates_and_predicts(name: str, shape: tuple[int, ...],
                                              n_classes: int) -> None:
    alg = make(name, shape=shape, n_classes=n_classes)
    before = params(alg)
    out = alg.update(batches(shape=shape, n_classes=n_classes))
    assert isinstance(out["loss"], float) and math.isfinite(out["loss"]) and out["loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, params(alg)))
    alg.eval()
    x = torch.rand(5, *shape)
    with torch.no_grad():
        logits = alg.predict(x)
        assert logits.shape == (5, n_classes) and torch.equal(logits, alg.predict(x))
    stats = alg.routing_stats()
    assert isinstance(stats, dict)


@pytest.mark.parametrize("name", list(declarations()))
def test_minibatches_are_concatenated(name: str) -> None:
    mbs = batches()
    joined = [(torch.cat([x for x, _ in mbs]), torch.cat([y for _, y in mbs]))]
    results = []
    for data in (mbs, joined):
        alg = make(name, seed=0)
        torch.manual_seed(7)
        results.append((alg.update(data), params(alg)))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


@pytest.mark.parametrize("name", list(declarations()))
def test_checkpoint_resume_is_bit_identical(name: str) -> None:
    alg = make(name, seed=0)
    for step in range(2):
        alg.update(batches(seed=step))
    state = copy.deepcopy(alg.checkpoint_state())
    rng = torch.get_rng_state()
    straight = [alg.update(batches(seed=step)) for step in (2, 3)]
    resumed = make(name, seed=99)
    resumed.load_checkpoint_state(state)
    torch.set_rng_state(rng)
    assert [resumed.update(batches(seed=step)) for step in (2, 3)] == straight
    assert all(torch.equal(a, b) for a, b in zip(params(alg), params(resumed)))
    adam = [a.optimizer.state_dict()["state"][0] for a in (alg, resumed)]
    assert all(torch.equal(adam[0][key], adam[1][key]) for key in ("exp_avg", "exp_avg_sq"))


def test_erm_is_dense() -> None:
    alg = make("erm")
    assert not any(isinstance(m, MoELayer) for m in alg.modules())
    alg.update(batches())
    assert alg.routing_stats() == {}
    assert isinstance(alg.optimizer, torch.optim.Adam)
    assert alg.optimizer.param_groups[0]["lr"] == 1e-3


def _moe_layers(alg: Algorithm) -> dict[str, MoELayer]:
    return {n: m for n, m in alg.network.named_modules() if isinstance(m, MoELayer)}


def test_gmoe_structure_matches_spec() -> None:
    alg = make("gmoe", depth=12, embed_dim=16)
    layers = _moe_layers(alg)
    assert sorted(layers) == ["blocks.10.mlp", "blocks.8.mlp"]
    assert sum(type(b.mlp) is Mlp for b in alg.network.blocks) == 10
    for layer in layers.values():
        assert (layer.router_name, layer.k, layer.capacity_factor) == ("cosine_topk", 1, 1.5)
        assert layer.batch_prioritized and layer.gate_noise == 1.0 and layer.num_experts == 4
        assert layer.router.cosine_projector.out_features == 256
        assert torch.allclose(layer.router.temperature.exp(), torch.tensor(2.0))
        assert layer.experts.drop.p == pytest.approx(0.1)


def test_gmoe_top1_and_aux_loss() -> None:
    alg = make("gmoe")
    seen: list[Any] = []
    for layer in _moe_layers(alg).values():
        layer.router.register_forward_hook(lambda m, i, out: seen.append(out))
    out = alg.update(batches())
    n_tokens = 3 * 4 * TOKENS_PER_IMAGE
    assert len(seen) == 2 and all(r.indices.shape == (n_tokens, 1) for r in seen)
    assert all(torch.all((r.weights > 0) & (r.weights < 1)) for r in seen)  # raw softmax prob
    layers = _moe_layers(alg).values()
    expected = 0.01 * sum(float(m.aux_losses["importance_load"].detach()) for m in layers)
    assert out["loss_aux"] == pytest.approx(expected, rel=1e-5) and out["loss_aux"] > 0
    stats = alg.routing_stats()
    assert sorted(stats) == ["blocks.0.mlp", "blocks.2.mlp"]
    for s in stats.values():
        assert s["tokens"] == n_tokens and math.isclose(sum(s["load"]), 1.0)
    assert alg.routing_stats()["blocks.0.mlp"]["tokens"] == 0  # reset
    assert make("gmoe", aux_weight=0.0).update(batches())["loss_aux"] == 0.0


def _force_expert0(layer: MoELayer, jitter: float) -> None:
    """All tokens prefer expert 0; ``jitter`` > 0 makes their scores differ."""
    router = layer.router
    with torch.no_grad():
        v = F.normalize(torch.randn(256), dim=0)
        router.cosine_projector.weight.normal_(0, jitter)
        router.cosine_projector.bias.copy_(10 * v)
        router.sim_matrix.copy_(-v.unsqueeze(1).expand(256, layer.num_experts))
        router.sim_matrix[:, 0] = v


def _layer_io(layer: MoELayer) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def hook(module: Any, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        seen["out"] = out.reshape(-1, out.shape[-1])

    layer.register_forward_hook(hook)
    layer.router.register_forward_hook(lambda m, i, out: seen.__setitem__("priority", out.priority))
    return seen


@pytest.mark.parametrize("jitter", [0.0, 0.05])
def test_gmoe_capacity_batch_priority_and_overflow_dropped(jitter: float) -> None:
    alg = make("gmoe")
    layer = alg.network.blocks[0].mlp
    _force_expert0(layer, jitter)
    seen = _layer_io(layer)
    n_tokens = 6 * TOKENS_PER_IMAGE
    capacity = int(1.5 * math.ceil(n_tokens / 4))
    alg.eval()
    with torch.no_grad():
        alg.predict(torch.rand(6, *SHAPE))
    kept = seen["out"].abs().sum(1) > 0
    assert int(kept.sum()) == capacity < n_tokens  # overflow beyond capacity is dropped
    # batch-prioritised: the kept tokens are the highest-scoring ones (ties: token order)
    order = torch.sort(seen["priority"], descending=True, stable=True).indices
    assert torch.equal(torch.nonzero(kept).flatten(), order[:capacity].sort().values)
    alg.train()
    alg.routing_stats()
    alg.update([(torch.rand(6, *SHAPE), torch.randint(0, 10, (6,)))])
    stats = alg.routing_stats()["blocks.0.mlp"]
    assert stats["load"] == [1.0, 0.0, 0.0, 0.0]
    assert stats["dropped"] == pytest.approx(1 - capacity / n_tokens)


def test_gmoe_router_scale_capped_at_100() -> None:
    router = make("gmoe").network.blocks[2].mlp.router
    x = torch.randn(50, 32)
    with torch.no_grad():
        cos = F.normalize(router.cosine_projector(x), dim=1) @ F.normalize(router.sim_matrix, dim=0)
        assert torch.allclose(router.compute_logits(x), 2 * cos, atol=1e-5)
        router.temperature.fill_(10.0)  # exp(10) >> 100
        assert torch.allclose(router.compute_logits(x), 100 * cos, atol=1e-4)


def _dense_checkpoint(tmp_path: Path, **overrides: Any) -> tuple[Algorithm, Path]:
    dense = make("erm", seed=1, **overrides)
    dense.update(batches())  # move away from init
    path = tmp_path / "dense.pth"
    torch.save(dense.network.state_dict(), path)
    return dense.eval(), path


@pytest.mark.parametrize("k, capacity_factor", [(4, 1.5), (4, 1.0)])
def test_upcycled_gmoe_reproduces_dense_logits(tmp_path: Path, k: int,
                                               capacity_factor: float) -> None:
    """Identical experts, every expert chosen (gates sum to 1), nothing dropped => dense model."""
    dense, path = _dense_checkpoint(tmp_path)
    moe = make("gmoe", seed=2, pretrained=str(path), top_k=k, capacity_factor=capacity_factor)
    assert not torch.equal(moe.network.head.weight, dense.network.head.weight)  # fresh head
    moe.network.head.load_state_dict(dense.network.head.state_dict())
    moe.eval()
    x = torch.rand(8, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(moe.predict(x), dense.predict(x), atol=1e-5)


def test_upcycled_gmoe_k1_differs_only_by_gate(tmp_path: Path) -> None:
    """With GMoE's own top-1 gate (< 1) the upcycled model is NOT the dense one."""
    dense, path = _dense_checkpoint(tmp_path)
    moe = make("gmoe", seed=2, pretrained=str(path))
    moe.network.head.load_state_dict(dense.network.head.state_dict())
    moe.eval()
    x = torch.rand(8, *SHAPE)
    with torch.no_grad():
        assert not torch.allclose(moe.predict(x), dense.predict(x), atol=1e-3)


def test_upcycled_deit_small_gmoe_reproduces_dense(tmp_path: Path) -> None:
    deit = {"backbone": "deit_small_patch16_224", "patch_size": 16, "embed_dim": 384,
            "depth": 12, "num_heads": 6, "mlp_ratio": 4.0, "drop_path_rate": 0.1}
    shape = (3, 32, 32)
    torch.manual_seed(0)
    dense = algorithm_class("erm")(shape, 7, 3, tiny_hparams("erm", **deit), n_steps=1).eval()
    path = tmp_path / "deit_small_patch16_224.pth"
    torch.save({"model": dense.network.state_dict()}, path)
    moe = algorithm_class("gmoe")(shape, 7, 3, tiny_hparams(
        "gmoe", **deit, pretrained=str(path), num_experts=2, top_k=2), n_steps=1)
    assert sorted(_moe_layers(moe)) == ["blocks.10.mlp", "blocks.8.mlp"]
    moe.network.head.load_state_dict(dense.network.head.state_dict())
    moe.eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert torch.allclose(moe.predict(x), dense.predict(x), atol=1e-4)


@pytest.mark.parametrize("name, drop, overrides, error, match", [
    ("erm", ("lr", "depth"), {}, HparamsError, r"'erm' is missing hparams: lr, depth$"),
    ("gmoe", ("aux_weight", "top_k"), {}, HparamsError, "missing hparams: top_k, aux_weight"),
    ("gmoe", (), {"top_k": 5}, HparamsError,
     r"hparams.top_k: 5 is above the maximum num_experts = 4$"),
    ("gmoe", (), {"moe_init": "copy"}, HparamsError,
     r"hparams.moe_init: 'copy' is not one of 'random', 'upcycle'$"),
    ("gmoe", (), {"moe_blocks": [4]}, HparamsError,
     r"hparams.moe_blocks: \[4\]: element 0: 4 must be below depth = 4$"),
    ("gmoe", (), {"expert_drop": 1.5}, HparamsError, r"hparams.expert_drop: 1.5 must be below 1"),
    ("gmoe", (), {"aux_weight": -1}, HparamsError, r"aux_weight: -1 is below the minimum 0$"),
    ("gmoe", (), {"router": "cosine"}, HparamsError,
     r"hparams.router: 'cosine' is not one of 'cosine_topk', 'topk'$"),
    ("erm", (), {"backbone": "vit_huge"}, HparamsError, r"'vit_huge' is not one of"),
    ("erm", (), {"lr": 0}, HparamsError, r"hparams.lr: 0 must be above 0$"),
    ("erm", (), {"lr": "fast"}, HparamsError, r"hparams.lr: 'fast' must be a number$"),
    ("erm", (), {"lr": "1e-3"}, HparamsError, r"YAML reads 1e-3 as a string"),
])
def test_bad_hparams_one_line_error(name: str, drop: tuple[str, ...], overrides: dict,
                                    error: type, match: str) -> None:
    hp = {k: v for k, v in tiny_hparams(name, **overrides).items() if k not in drop}
    with pytest.raises(error, match=match) as err:
        algorithm_class(name)(SHAPE, N_CLASSES, 3, hp, n_steps=1)
    assert "\n" not in str(err.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(declarations()))
def test_algorithm_runs_on_cuda(name: str) -> None:
    alg = make(name).to("cuda")
    data = [(x.cuda(), y.cuda()) for x, y in batches()]
    assert math.isfinite(alg.update(data)["loss"])
    assert alg.predict(data[0][0]).shape == (4, N_CLASSES)
