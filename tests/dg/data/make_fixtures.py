"""Regenerate the hand-designed record fixtures of tests/test_tables.py (run once, then frozen).

    .venv/bin/python tests/data/make_fixtures.py

* ``mini_records.jsonl`` — our record format: dataset ``colored_digits`` (3 envs) with ``erm`` and
  ``gmoe``, every single and pair test env, trial seeds 0 and 1, checkpoints at steps 0 and 10;
  plus ``rotated_digits`` (3 envs) with ``erm`` singles only (so LODO has no result there).
  Accuracy rule (fractions), with base = 0.02 for gmoe + 0.01 * trial_seed (+0.1 on
  rotated_digits) and gain = 0.1 at step 10 (0 at step 0):
  training env i: out = 0.70 + gain + base + 0.01 i, in = out + 0.05;
  test env i:     in  = 0.40 + 0.05 i + gain + base, out = in - 0.02.
  Twists: gmoe trial 1 over-fits (training-env out at step 10 is 0.05 *below* step 0's, so
  training-domain validation picks step 0) and has no pair run {1, 2} (LODO then discards
  test envs 1 and 2 for that trial).
* ``domainbed_sweep/`` — DomainBed's own layout and record format (``SWEEP/<md5>/results.jsonl``,
  ``done``, ``out.txt``): PACS, ERM, trial 0, test envs [0], [1] and [0, 1]; plus one
  unfinished run (no ``done``) whose last line is truncated.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

HERE = Path(__file__).parent


def seed_hash(*args: object) -> int:
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def accs(n_envs: int, test_envs: list[int], step: int, base: float, overfit: bool) -> dict:
    gain = 0.1 if step else 0.0
    out: dict[str, float] = {}
    for i in range(n_envs):
        if i in test_envs:
            in_acc = 0.40 + 0.05 * i + gain + base
            out_acc = in_acc - 0.02
        else:
            out_acc = 0.70 + (-0.05 if (overfit and step) else gain) + base + 0.01 * i
            in_acc = out_acc + 0.05
        out[f"env{i}_in_acc"] = round(in_acc, 4)
        out[f"env{i}_out_acc"] = round(out_acc, 4)
    return out


def routing(step: int) -> dict:
    late = step > 0
    return {
        "network.blocks.8.mlp": {"load": [0.25, 0.15, 0.15, 0.15, 0.15, 0.15] if late else
                                 [0.5, 0.1, 0.1, 0.1, 0.1, 0.1], "dropped": 0.05 if late else 0.2,
                                 "tokens": 1000},
        "network.blocks.10.mlp": {"load": [0.2, 0.2, 0.2, 0.2, 0.1, 0.1], "dropped": 0.0 if late
                                  else 0.1, "tokens": 1000},
    }


def our_record(dataset: str, envs: list[str], algorithm: str, test_envs: list[int],
               trial: int, step: int) -> dict:
    base = (0.02 if algorithm == "gmoe" else 0.0) + 0.01 * trial + (0.1 if dataset == "rotated_digits" else 0.0)
    overfit = algorithm == "gmoe" and trial == 1
    args = {"algorithm": algorithm, "checkpoint_freq": 10, "data_dir": "data/" + dataset,
            "dataset": dataset, "holdout_fraction": 0.2, "hparams_seed": 0,
            "output_dir": "results/runs/x", "seed": seed_hash(dataset, algorithm, test_envs, 0, trial),
            "steps": 11, "task": "domain_generalization", "test_envs": test_envs, "trial_seed": trial}
    rec = {"args": args, "hparams": {"lr": 0.001, "batch_size": 8}, "step": step, "epoch": step / 4,
           "loss": 1.0 - 0.05 * step, "step_time": 0.01, "mem_gb": 0.0, "dataset": dataset,
           "algorithm": algorithm, "test_envs": test_envs, "environments": envs,
           "routing": routing(step) if algorithm == "gmoe" else {}}
    rec.update(accs(len(envs), test_envs, step, base, overfit))
    return rec


def mini_records() -> list[dict]:
    records = []
    cd_envs, rd_envs = ["+90%", "+80%", "-90%"], ["0", "15", "30"]
    tests = [[0], [1], [2], [0, 1], [0, 2], [1, 2]]
    for algorithm, trial, test_envs in itertools.product(["gmoe", "erm"], [0, 1], tests):
        if (algorithm, trial, test_envs) == ("gmoe", 1, [1, 2]):
            continue
        records += [our_record("colored_digits", cd_envs, algorithm, test_envs, trial, s) for s in (0, 10)]
    for trial, test_envs in itertools.product([0, 1], [[0], [1], [2]]):
        records += [our_record("rotated_digits", rd_envs, "erm", test_envs, trial, s) for s in (0, 10)]
    return records


def domainbed_run(test_envs: list[int]) -> tuple[str, list[dict]]:
    train_args = {"dataset": "PACS", "algorithm": "ERM", "test_envs": test_envs,
                  "holdout_fraction": 0.2, "hparams_seed": 0, "data_dir": "/checkpoint/domainbed/data",
                  "task": "domain_generalization", "trial_seed": 0,
                  "seed": seed_hash("PACS", "ERM", test_envs, 0, 0)}
    run_hash = hashlib.md5(json.dumps(train_args, sort_keys=True).encode("utf-8")).hexdigest()
    args = {**train_args, "checkpoint_freq": None, "hparams": None,
            "output_dir": f"/checkpoint/domainbed/sweep/{run_hash}", "save_model_every_checkpoint": False,
            "skip_model_save": False, "steps": None, "uda_holdout_fraction": 0}
    hparams = {"batch_size": 32, "class_balanced": False, "data_augmentation": True, "lr": 5e-05,
               "nonlinear_classifier": False, "resnet18": False, "resnet_dropout": 0.0, "weight_decay": 0.0}
    rows = []
    for step in (0, 300):
        row = {"args": args, "epoch": step / 51.2, "hparams": hparams, "loss": 2.0 - step / 200,
               "mem_gb": 7.9, "step": step, "step_time": 0.4}
        row.update(accs(4, test_envs, step, 0.0, False))
        rows.append(row)
    return run_hash, rows


def write_domainbed_sweep() -> None:
    root = HERE / "domainbed_sweep"
    for test_envs, done in (([0], True), ([1], True), ([0, 1], True), ([2], False)):
        run_hash, rows = domainbed_run(test_envs)
        run = root / run_hash
        run.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(r, sort_keys=True) for r in rows]
        text = "\n".join(lines) + "\n"
        if not done:
            text = lines[0] + "\n" + lines[1][: len(lines[1]) // 2]  # killed mid-write
        (run / "results.jsonl").write_text(text)
        (run / "out.txt").write_text("Environment:\n\tPython: 3.8\n")
        if done:
            (run / "done").write_text("done")


if __name__ == "__main__":
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in mini_records())
    (HERE / "mini_records.jsonl").write_text(text)
    write_domainbed_sweep()
