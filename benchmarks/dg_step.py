"""DomainBed step time of ERM (ViT-S/16) vs GMoE-S/16 through the real training CLI.

Writes a generated PACS-layout image folder (4 domains x 7 classes of JPEGs, random
content), then trains each algorithm for ``--steps`` steps with ``python -m
moebench.cli.dg.train`` (one process per algorithm, so each has its own peak memory): the
paper's hparams (params/paper/gmoe_domainbed.yaml; random weights, ``pretrained`` off),
batch ``--batch`` per training domain x 3 training domains, ``--precision`` (bf16 on CUDA).
Checkpoints (and their evaluation on every domain) come every ``--steps // 3`` steps;
the timings are the records' window means after the second checkpoint (the first windows
hold CUDA/cuDNN warm-up). Per algorithm: ``step_time`` (s; the update alone: forward,
backward, optimiser step), ``data_time`` (s; the wait for the step's minibatches from the
DataLoader workers), ``data_share`` (data_time / step_time: the input pipeline keeps the
device busy when it is at most 0.05), ``eval_time`` (s per checkpoint evaluation),
``mem_gb`` (peak CUDA memory allocated; peak RSS on CPU). Ratios gmoe / erm of step time
and memory against the paper's claim (GMoE-S/16 ~ 1.015 x ERM per step, +6 % memory).

  python benchmarks/dg_step.py --device cuda --json out.json          # DeiT-S/16, 224 px
  python benchmarks/dg_step.py --smoke --json out.json                # tiny ViT on CPU
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from moebench.io import atomic_write_json  # noqa: E402

PARAMS = ROOT / "params/paper/gmoe_domainbed.yaml"
FOLDERS = ("art_painting", "cartoon", "photo", "sketch")     # PACS (moebench.dg.datasets)
CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
TEST_ENV = 3
PAPER = {"step_ratio": 1.015, "mem_ratio": 1.06}
# smoke: a tiny from-scratch ViT (the same code path as DeiT-S: timm ViT + MoE surgery)
SMOKE_HPARAMS = {"backbone": "vit_digits", "patch_size": 32, "embed_dim": 32, "depth": 4,
                 "num_heads": 2, "mlp_ratio": 2.0, "drop_path_rate": 0.0}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda | cpu | cuda:N")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                   help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=32, help="images per training domain")
    p.add_argument("--per-class", type=int, default=8, help="generated images per class "
                   "and domain")
    p.add_argument("--image-px", type=int, default=224, help="side of the generated JPEGs")
    p.add_argument("--algorithms", default="erm,gmoe")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per training run")
    p.add_argument("--smoke", action="store_true",
                   help="tiny CPU sizes: 32 px images, a 4-block 32-d ViT, 2 steps, batch 4")
    p.add_argument("--work", default=None, help="keep the data and runs here (default: temp)")
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    a = p.parse_args(argv)
    if a.smoke:
        a.device, a.steps, a.batch, a.per_class, a.image_px = "cpu", 2, 4, 2, 32
    a.precision = a.precision or ("bf16" if a.device.startswith("cuda") else "fp32")
    return a


def write_images(root: Path, per_class: int, px: int, seed: int = 0) -> Path:
    """PACS's layout ``root/PACS/<domain>/<class>/<n>.jpg`` of smooth random colour fields
    (upsampled 8 x 8 noise plus fine noise, so JPEG decoding does real work); returns the
    dataset folder. Written into a temp folder renamed into place (atomic)."""
    from PIL import Image

    out = root / "PACS"
    if out.is_dir():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=".PACS-", dir=root))
    rng = np.random.default_rng(seed)
    for domain in FOLDERS:
        for cls in CLASSES:
            folder = tmp / domain / cls
            folder.mkdir(parents=True)
            for n in range(per_class):
                coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                img = Image.fromarray(coarse).resize((px, px), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.int16) + rng.integers(-20, 21, (px, px, 3))
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(
                    folder / f"{n:03d}.jpg", quality=90)
    os.replace(tmp, out)
    return out


def train_command(a: argparse.Namespace, algorithm: str, data: Path, out: Path) -> list[str]:
    """The stand-alone training CLI call of one run (the workflow's own entry point)."""
    overrides: dict[str, Any] = {"pretrained": None, "batch_size": a.batch}
    if a.smoke:
        overrides.update(SMOKE_HPARAMS)
    return [sys.executable, "-m", "moebench.cli.dg.train", "--dataset", "pacs",
            "--data-path", str(data), "--algorithm", algorithm, "--test-envs", str(TEST_ENV),
            "--hparams-file", str(PARAMS), "--hparams", json.dumps(overrides),
            "--steps", str(a.steps), "--checkpoint-freq", str(max(1, a.steps // 3)),
            "--precision", a.precision, "--device", a.device, "--progress", "off",
            "--output-dir", str(out)]


def _window_mean(records: list[dict], key: str) -> Optional[float]:
    """Mean of ``key`` over the steps of the records after the second (weighted by their
    window length); all records when there are fewer than three."""
    rows = [r for r in records if key in r and r[key] is not None]
    if not rows:
        return None
    steady = rows[2:] if len(rows) >= 3 else rows
    steps, prev = [], None
    for r in rows:
        steps.append(r["step"] - (prev if prev is not None else -1))
        prev = r["step"]
    weights = steps[len(rows) - len(steady):]
    return float(np.average([r[key] for r in steady], weights=weights))


def read_run(out: Path) -> dict[str, Any]:
    """Figures of one finished run from its ``results.jsonl``."""
    path = out / "results.jsonl"
    if not path.is_file():
        raise RuntimeError(f"no records in {out} (the run wrote no results.jsonl)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if any(r.get("diverged") for r in records):
        raise RuntimeError(f"run in {out} diverged")
    last = records[-1]
    return {"step_time": _window_mean(records, "step_time"),
            "data_time": _window_mean(records, "data_time"),
            "eval_time": _window_mean(records, "eval_time"),
            "mem_gb": last.get("mem_gb"), "loss": last.get("loss"),
            "steps": last["step"] + 1, "records": len(records),
            "moe_backend": last.get("moe_backend"),
            "step_times": [r.get("step_time") for r in records]}


def run_algorithm(a: argparse.Namespace, algorithm: str, data: Path, work: Path) -> dict:
    out = work / "runs" / algorithm
    cmd = train_command(a, algorithm, data, out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"{algorithm} training exited {proc.returncode}: "
                           f"{tail[-1] if tail else 'no output'}")
    run = {**read_run(out), "wall_s": wall}
    run["data_share"] = ratio(run["data_time"], run["step_time"])
    return run


def ratio(x: Optional[float], y: Optional[float]) -> Optional[float]:
    return x / y if x is not None and y else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dg_step-") as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = write_images(work, a.per_class, a.image_px)
        runs = {alg: run_algorithm(a, alg, data, work) for alg in a.algorithms.split(",")}
    result: dict[str, Any] = {
        "device": a.device, "precision": a.precision, "steps": a.steps, "batch": a.batch,
        "train_domains": len(FOLDERS) - 1, "image_px": a.image_px, "smoke": a.smoke,
        "backbone": SMOKE_HPARAMS["backbone"] if a.smoke else "deit_small_patch16_224",
        "runs": runs, "paper": PAPER}
    if "erm" in runs and "gmoe" in runs:
        result["step_ratio"] = ratio(runs["gmoe"]["step_time"], runs["erm"]["step_time"])
        result["mem_ratio"] = ratio(runs["gmoe"]["mem_gb"], runs["erm"]["mem_gb"])
    print(f"{'algorithm':<10}{'step ms':>10}{'data ms':>10}{'mem GB':>9}{'wall s':>8}")
    for alg, r in runs.items():
        data_ms = "-" if r["data_time"] is None else f"{r['data_time'] * 1e3:.1f}"
        print(f"{alg:<10}{r['step_time'] * 1e3:>10.1f}{data_ms:>10}{r['mem_gb']:>9.3f}"
              f"{r['wall_s']:>8.1f}")
    if result.get("step_ratio"):
        print(f"gmoe/erm: step {result['step_ratio']:.3f} (paper {PAPER['step_ratio']}), "
              f"memory {result['mem_ratio']:.3f} (paper {PAPER['mem_ratio']})")
    if a.json:
        atomic_write_json(a.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
