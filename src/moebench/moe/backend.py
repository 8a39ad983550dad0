"""Which kernel runs the experts' GEMMs, chosen in params and reported in every record.

* ``torch``: torch's GEMMs (BLAS / cuBLAS) for every expert.
* ``native``: our small-row CPU kernels (:mod:`moebench.moe.small_gemm`) for fp32 CPU experts
  of at most ``small_gemm.MAX_ROWS`` rows; a run fails with one line if they cannot be built.
* ``auto`` (default): ``native`` where the kernels are available, else ``torch`` (one warning).

The layer counts which kernel each expert GEMM block ran on; :func:`used` turns the counts
since the last call into the record's ``moe_backend`` value: ``"torch"``, ``"native"``,
``"native+torch"`` (small experts on the kernels, large ones on torch) or ``"none"`` (no MoE
GEMM ran: a dense model). The Tutel front reports ``"tutel"`` when the real package runs.
"""
from __future__ import annotations

from collections import Counter

from torch import Tensor

from moebench.errors import RunError
from moebench.moe import small_gemm

BACKENDS = ("auto", "torch", "native")
_state = {"backend": "auto"}
_counts: Counter = Counter()


def set_backend(name: str) -> None:
    """Choose the expert kernel for this process (``auto`` | ``torch`` | ``native``)."""
    if name not in BACKENDS:
        raise RunError(f"moe_backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "native":
        if not small_gemm.available():
            raise RunError("moe_backend native: our small-row kernels cannot run here "
                           f"({small_gemm.unavailable_reason()}); use auto or torch")
    _state["backend"] = name


def get_backend() -> str:
    return _state["backend"]


def note(kind: str, n: int = 1) -> None:
    """Count ``n`` expert GEMM blocks run on ``kind`` (``torch`` | ``native`` | ``tutel``)."""
    _counts[kind] += n


def used(reset: bool = True) -> str:
    """The kernels that ran since the last reset, e.g. ``"native+torch"``; ``"none"`` if none."""
    kinds = sorted(k for k, v in _counts.items() if v)
    if reset:
        _counts.clear()
    return "+".join(kinds) if kinds else "none"


def native(rows: int, *tensors: Tensor) -> bool:
    """Whether this expert GEMM block runs on our kernels (the backend allows it and
    :func:`small_gemm.usable`); counts the choice for :func:`used`."""
    ok = _state["backend"] != "torch" and small_gemm.usable(rows, *tensors)
    note("native" if ok else "torch")
    return ok
