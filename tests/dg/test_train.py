"""The DomainBed training loop: records, determinism, kill-and-resume."""
import dataclasses
import json

import pytest
import torch
from helpers_hparams import tiny_hparams

from moebench.errors import RunError
from moebench.device import resolve_device
from moebench.dg import train
from moebench.dg.datasets import build_dataset, load_dataset
from moebench.hparams import seed_hash
from moebench.dg.sweep import RunSpec

VOLATILE = ("step_time", "data_time", "eval_time", "mem_gb")
QUIET = train.RunOptions(progress=False)


class Killed(Exception):
    """Stands in for SIGKILL right after a checkpoint was written."""


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "colored.npz"
    build_dataset("colored_digits", path, seed=0, image_size=8, max_images=240)
    return str(path), load_dataset("colored_digits", path)


def spec_for(algorithm, steps=7, freq=3, test_envs=(0,)):
    return RunSpec(dataset="colored_digits", algorithm=algorithm, test_envs=tuple(test_envs),
                   hparams_seed=0, trial_seed=0, seed=seed_hash("colored_digits", algorithm, list(test_envs), 0, 0),
                   steps=steps, checkpoint_freq=freq, holdout_fraction=0.2,
                   hparams={**tiny_hparams(algorithm), "batch_size": 8})


def stable(records):
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k not in VOLATILE}
        r["args"] = {k: v for k, v in r["args"].items() if k != "output_dir"}
        out.append(r)
    return out


def records_of(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_record_has_domainbed_keys_and_checkpoint_steps(digits, tmp_path):
    path, ds = digits
    run = train.train_run(spec_for("gmoe"), ds, path, tmp_path / "r", torch.device("cpu"), QUIET)
    recs = records_of(run)
    assert [r["step"] for r in recs] == [0, 3, 6]  # every checkpoint_freq and the last step
    for key in ("args", "hparams", "step", "epoch", "loss", "loss_aux", "step_time", "mem_gb",
                "dataset", "algorithm", "test_envs", "environments", "routing"):
        assert key in recs[-1], key
    for i in range(3):
        assert 0.0 <= recs[-1][f"env{i}_in_acc"] <= 1.0 and 0.0 <= recs[-1][f"env{i}_out_acc"] <= 1.0
    assert recs[-1]["args"]["test_envs"] == [0] and recs[-1]["args"]["task"] == "domain_generalization"
    assert recs[-1]["routing"], "GMoE records per-layer routing stats"
    for stats in recs[-1]["routing"].values():
        assert sum(stats["load"]) == pytest.approx(1.0) and 0.0 <= stats["dropped"] <= 1.0
    assert (run / "done").exists() and not (run / "checkpoint.pt").exists()


def test_same_seed_gives_identical_records(digits, tmp_path):
    path, ds = digits
    a = train.train_run(spec_for("erm"), ds, path, tmp_path / "a", torch.device("cpu"), QUIET)
    b = train.train_run(spec_for("erm"), ds, path, tmp_path / "b", torch.device("cpu"), QUIET)
    assert stable(records_of(a)) == stable(records_of(b))


@pytest.mark.parametrize("algorithm", ["erm", "gmoe"])
def test_kill_after_checkpoint_and_resume_gives_same_final_record(digits, tmp_path, monkeypatch, algorithm):
    path, ds = digits
    spec = spec_for(algorithm)
    whole = train.train_run(spec, ds, path, tmp_path / "whole", torch.device("cpu"), QUIET)

    real_save = train.RunState.save

    def save_then_die(self, algorithm_, step):
        real_save(self, algorithm_, step)
        if step == 3:
            # the kill lands while the next record is half written
            with open(self.results, "a") as f:
                f.write('{"step": 4, "loss": 0.')
            raise Killed()

    monkeypatch.setattr(train.RunState, "save", save_then_die)
    with pytest.raises(Killed):
        train.train_run(spec, ds, path, tmp_path / "killed", torch.device("cpu"), QUIET)
    assert (tmp_path / "killed" / "checkpoint.pt").exists() and not (tmp_path / "killed" / "done").exists()
    monkeypatch.setattr(train.RunState, "save", real_save)
    resumed = train.train_run(spec, ds, path, tmp_path / "killed", torch.device("cpu"), QUIET)
    assert stable(records_of(resumed)) == stable(records_of(whole))


def test_done_run_is_skipped(digits, tmp_path):
    path, ds = digits
    run = train.train_run(spec_for("erm", steps=2, freq=1), ds, path, tmp_path / "r", torch.device("cpu"), QUIET)
    before = (run / "results.jsonl").read_text()
    train.train_run(spec_for("erm", steps=2, freq=1), ds, path, run, torch.device("cpu"), QUIET)
    assert (run / "results.jsonl").read_text() == before


def test_test_env_out_of_range_is_one_line_error(digits, tmp_path):
    path, ds = digits
    with pytest.raises(RunError, match="test env 5 out of range for colored_digits"):
        train.train_run(spec_for("erm", test_envs=(5,)), ds, path, tmp_path / "r", torch.device("cpu"))


def test_split_and_sampling_follow_domainbed():
    idx_in, idx_out = train.split_env(10, 0.2, seed_hash(0, 1))
    assert len(idx_out) == 2 and sorted(list(idx_in) + list(idx_out)) == list(range(10))
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bf16_precision_is_part_of_the_identity_and_trains(digits, tmp_path):
    path, ds = digits
    fp32 = spec_for("gmoe", steps=2, freq=1)
    bf16 = dataclasses.replace(fp32, precision="bf16")
    assert bf16.run_id != fp32.run_id
    run = train.train_run(bf16, ds, path, tmp_path / "r", torch.device("cpu"), QUIET)
    assert [r["step"] for r in records_of(run)] == [0, 1]
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        dataclasses.replace(fp32, precision="fp16")


def test_a_diverging_run_stops_with_a_diverged_record_and_is_done(digits, tmp_path, caplog):
    path, ds = digits
    spec = dataclasses.replace(spec_for("erm", steps=40, freq=10),
                               hparams={**tiny_hparams("erm"), "batch_size": 8, "lr": 1.0e8})
    run = train.train_run(spec, ds, path, tmp_path / "d", torch.device("cpu"), QUIET)
    recs = records_of(run)
    last = recs[-1]
    assert last["diverged"] is True and last["diverged_step"] == last["step"] < spec.steps - 1
    assert last["loss"] != last["loss"]  # nan
    assert all("diverged" not in r for r in recs[:-1])
    assert (run / "done").exists() and not (run / "checkpoint.pt").exists()
    warnings = [r for r in caplog.records if "diverged" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    # done: a rerun does nothing
    assert train.train_run(spec, ds, path, tmp_path / "d", torch.device("cpu"), QUIET) == run
    assert records_of(run) == recs


def test_every_record_names_the_expert_kernel(digits, tmp_path):
    path, ds = digits
    gmoe = records_of(train.train_run(spec_for("gmoe"), ds, path, tmp_path / "g",
                                      torch.device("cpu"), QUIET))
    erm = records_of(train.train_run(spec_for("erm"), ds, path, tmp_path / "e",
                                     torch.device("cpu"), QUIET))
    assert {r["moe_backend"] for r in erm} == {"none"}
    assert {r["moe_backend"] for r in gmoe} <= {"native", "torch", "native+torch"}
