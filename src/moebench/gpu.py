"""Pin one training process to one GPU of a multi-GPU machine.

Snakemake counts GPUs as a resource (``--resources gpu=N`` caps how many GPU jobs run at
once) but never tells a job which device is its own (snakemake/snakemake#281). So each
job claims one: :func:`claim_gpu` lists the visible devices (``CUDA_VISIBLE_DEVICES``, else
``nvidia-smi -L``), takes a non-blocking ``flock`` on one lock file per (device, slot) in a
node-local folder and sets ``CUDA_VISIBLE_DEVICES`` to that device. The open lock file is
kept for the life of the process, so the kernel frees the slot when the job ends or dies.
It must run before anything initialises CUDA. With 0 or 1 visible devices (a Slurm
allocation, a one-GPU box) it claims nothing.
"""
from __future__ import annotations

import fcntl
import logging
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from moebench.errors import RunError

log = logging.getLogger(__name__)
_HELD: list[IO[str]] = []  # open lock files: the claims last as long as the process


def visible_gpus() -> list[str]:
    """Device ids CUDA would see: CUDA_VISIBLE_DEVICES entries, else nvidia-smi's indices."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, _ in enumerate(x for x in out.splitlines() if x.startswith("GPU "))]


def default_lock_dir() -> Path:
    """Node-local (never a shared filesystem): $MOEBENCH_GPU_LOCKS or <tmp>/moebench-gpu-<uid>."""
    env = os.environ.get("MOEBENCH_GPU_LOCKS")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"moebench-gpu-{os.getuid()}"


def claim_gpu(jobs_per_gpu: int = 1, lock_dir: Path | None = None,
              timeout_s: float = 600.0) -> str | None:
    """Claim a free (device, slot) and make it the only visible device; returns its id."""
    gpus = visible_gpus()
    if len(gpus) <= 1:
        return gpus[0] if gpus else None
    if jobs_per_gpu < 1:
        raise RunError(f"jobs_per_gpu must be >= 1, got {jobs_per_gpu}")
    root = Path(lock_dir) if lock_dir else default_lock_dir()
    root.mkdir(parents=True, exist_ok=True)
    slots = [(gpu, k) for k in range(jobs_per_gpu) for gpu in gpus]  # spread before sharing
    deadline = time.monotonic() + timeout_s
    while True:
        for gpu, k in slots:
            handle = open(root / f"gpu{gpu}.slot{k}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _HELD.append(handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            log.info("claimed GPU %s (slot %d of %d)", gpu, k, jobs_per_gpu)
            return gpu
        if time.monotonic() > deadline:
            raise RunError(f"no free GPU slot among {len(slots)} after {timeout_s:.0f} s "
                               f"(locks in {root}); is --resources gpu larger than GPUs x jobs_per_gpu?")
        time.sleep(0.5 + random.random())
