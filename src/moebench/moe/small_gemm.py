"""Our AVX-512 kernels for the GEMMs of experts with few rows (``kernels/small_gemm.c``).

MKL runs the 32-row GEMMs of a Soft-MoE ViT-S layer (197 experts x 1 slot) at ~55 % of
the CPU's GEMM peak and ~400-row ones at ~75 %; these register-blocked kernels run both
near the peak (measured in ``benchmarks/moe_layer.py``, docs/moe_layer.md). Used by
:mod:`moebench.moe.grouped` for fp32 CPU GEMMs of at most :data:`MAX_ROWS` rows per expert.

The C source is compiled on first use with the system C compiler (``$CC``, else ``cc``)
into ``$MOEBENCH_KERNEL_DIR`` (default ``~/.cache/moebench/kernels``), named by the hash
of source and flags and written atomically, so concurrent jobs never load half a file.
Without a compiler, on a CPU without AVX-512, or with ``MOEBENCH_SMALL_GEMM=0`` the GEMMs
stay with torch (one warning says why, when the build itself failed).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("kernels") / "small_gemm.c"
FLAGS = ["-O3", "-mavx512f", "-mfma", "-fPIC", "-shared", "-fopenmp"]
# an expert's GEMMs go to the kernels up to this many rows: measured faster than MKL for
# 32-400 rows in every one of the six GEMMs of a ViT-S FFN; from ~800 rows the weight
# gradient (rows as the reduction) no longer fits the caches and MKL's blocking wins
MAX_ROWS = 512

_lib: Optional[ctypes.CDLL] = None
_tried = False
_why = ""


def _cpu_ok() -> bool:
    return (platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
            and torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX"))


def kernel_dir() -> Path:
    return Path(os.environ.get("MOEBENCH_KERNEL_DIR",
                               Path.home() / ".cache" / "moebench" / "kernels"))


def build(directory: Optional[Path] = None) -> Path:
    """Compile the kernels (if not already there) and return the shared library's path.
    Raises RuntimeError with the compiler's message when it fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    src = SOURCE.read_bytes()
    tag = hashlib.sha256(src + " ".join(FLAGS).encode()).hexdigest()[:16]
    directory = Path(directory) if directory is not None else kernel_dir()
    target = directory / f"small_gemm-{tag}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["(no message)"])[0]
            raise RuntimeError(f"{cc} failed on {SOURCE.name}: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load() -> Optional[ctypes.CDLL]:
    global _lib, _tried, _why
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("MOEBENCH_SMALL_GEMM", "1") == "0":
        _why = "MOEBENCH_SMALL_GEMM=0"
        return None
    if not _cpu_ok():
        _why = "needs Linux x86_64 with AVX-512"
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as err:
        _why = str(err)
        warnings.warn(f"moebench small-row GEMM kernels unavailable, using torch: {err}",
                      RuntimeWarning, stacklevel=3)
        return None
    i, l, p = ctypes.c_int, ctypes.c_long, ctypes.c_void_p
    lib.mb_rows.argtypes = [i, i, i, i, p, l, l, p, l, l, p, l, l, i, i, i]
    lib.mb_bcast.argtypes = [i, i, i, i, p, l, l, l, p, l, l, p, l, l, i, i]
    lib.mb_rows.restype = lib.mb_bcast.restype = i
    _lib = lib
    return _lib


def available() -> bool:
    """True when the kernels are built and loadable on this machine."""
    return _load() is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False ("" when it is True)."""
    _load()
    return _why


def usable(rows: int, *tensors: Tensor) -> bool:
    """Whether the kernels can run a GEMM with ``rows`` rows per expert over these tensors:
    fp32 CPU tensors, unit stride in the last dimension, feature sizes multiples of 16."""
    if rows > MAX_ROWS or not available():
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.stride(-1) == 1
               and t.shape[-1] % 16 == 0 for t in tensors)


def _check(code: int, name: str) -> None:
    if code != 0:
        raise RuntimeError(f"small_gemm.{name} failed (code {code})")


def _rows(a: Tensor, w: Tensor, out: Tensor, n: int, accumulate: bool, tw: bool) -> None:
    e, m, k = a.shape
    _check(_load().mb_rows(e, m, k, n, a.data_ptr(), a.stride(0), a.stride(1), w.data_ptr(),
                           w.stride(0), w.stride(1), out.data_ptr(), out.stride(0),
                           out.stride(1), int(accumulate), int(tw), torch.get_num_threads()),
           "rows_nn" if tw else "rows_nt")


def rows_nt(a: Tensor, w: Tensor, out: Tensor, accumulate: bool = False) -> None:
    """out[e] (+)= a[e] @ w[e].T for a [E, M, K], w [E, N, K], out [E, M, N] (all fp32 CPU,
    unit stride in the last dimension)."""
    _rows(a, w, out, w.shape[1], accumulate, tw=False)


def rows_nn(a: Tensor, w: Tensor, out: Tensor, accumulate: bool = False) -> None:
    """out[e] (+)= a[e] @ w[e] for a [E, M, K], w [E, K, N], out [E, M, N]."""
    _rows(a, w, out, w.shape[2], accumulate, tw=True)


def grad_weight(gout: Tensor, inp: Tensor, out: Tensor, accumulate: bool = False) -> None:
    """out[e] (+)= gout[e].T @ inp[e] for gout [E, M, O], inp [E, M, I], out [E, O, I]."""
    e, m, o = gout.shape
    _check(_load().mb_bcast(e, m, o, inp.shape[2], gout.data_ptr(), gout.stride(0),
                            gout.stride(1), 1, inp.data_ptr(), inp.stride(0), inp.stride(1),
                            out.data_ptr(), out.stride(0), out.stride(1), int(accumulate),
                            torch.get_num_threads()), "grad_weight")


def grad_input(gout: Tensor, w: Tensor, out: Tensor) -> None:
    """out[e] = gout[e] @ w[e] for gout [E, M, O], w [E, O, I], out [E, M, I]."""
    rows_nn(gout, w, out)
