"""moe_backend: torch and our native kernels give the same outputs and gradients on the default
DomainBed ViT (GMoE and Soft-MoE), and the choice is validated and reported."""
import pytest
import torch
import yaml
from pathlib import Path

from moebench.dg.algorithms import algorithm_class
from moebench.errors import RunError
from moebench.moe import backend, small_gemm

ROOT = Path(__file__).resolve().parents[2]
HP = yaml.safe_load((ROOT / "params" / "dg" / "hparams.yaml").read_text())["hparams"]
needs_kernels = pytest.mark.skipif(not small_gemm.available(),
                                   reason=f"native kernels unavailable: {small_gemm.unavailable_reason()}")


def _step(name: str, kind: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
    """Logits and parameter gradients of one forward/backward of the default ViT."""
    backend.set_backend(kind)
    torch.manual_seed(0)
    hparams = {**HP["defaults"], **(HP["algorithms"][name] or {}), "expert_drop": None}
    alg = algorithm_class(name)((1, 8, 8), 10, 5, hparams, n_steps=10)
    x, y = torch.rand(96, 1, 8, 8), torch.randint(0, 10, (96,))
    backend.used(reset=True)
    logits = alg.predict(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    grads = {n: p.grad.clone() for n, p in alg.named_parameters() if p.grad is not None}
    return logits.detach(), grads, backend.used()


@needs_kernels
@pytest.mark.parametrize("name", ["gmoe", "soft_moe", "mass"])
def test_torch_and_native_backends_agree_within_fp32(name):
    try:
        ref, ref_grads, ran_torch = _step(name, "torch")
        out, grads, ran_native = _step(name, "native")
    finally:
        backend.set_backend("auto")
    assert ran_torch == "torch" and "native" in ran_native
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for key in grads:
        assert torch.allclose(grads[key], ref_grads[key], rtol=1e-3, atol=1e-5), key


def test_an_unknown_backend_is_one_line():
    with pytest.raises(RunError, match="moe_backend must be one of auto, torch, native, got 'cuda'"):
        backend.set_backend("cuda")


def test_used_reports_what_ran_and_resets():
    backend.used(reset=True)
    assert backend.used() == "none"
    backend.note("torch")
    backend.note("native", 3)
    assert backend.used() == "native+torch" and backend.used() == "none"
