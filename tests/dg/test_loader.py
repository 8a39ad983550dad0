"""The input pipeline on a real (tiny, generated) DomainBed image folder: records do not
depend on the number of DataLoader workers, a killed run resumes with workers to the same
records, evaluation in workers and other batch sizes gives DomainBed's accuracies."""
import json

import numpy as np
import pytest
import torch
from helpers_hparams import tiny_hparams
from PIL import Image

from moebench.dg import train
from moebench.dg.datasets.domainbed import PACS
from moebench.dg.loader import Loader, RunStream, Splits, fetch, resolve_workers
from moebench.dg.sweep import RunSpec
from moebench.hparams import seed_hash

CPU = torch.device("cpu")
VOLATILE = ("step_time", "data_time", "eval_time", "mem_gb", "loader")


class TinyPACS(PACS):
    """PACS's layout and loader at 32 x 32 pixels."""

    INPUT_SHAPE = (3, 32, 32)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "PACS"
    rng = np.random.RandomState(0)
    for e, folder in enumerate(PACS.FOLDERS):
        for c, name in enumerate(PACS.CLASSES):
            (root / folder / name).mkdir(parents=True)
            for k in range(3):
                base = np.full((40, 40, 3), (30 * c + 40 * e) % 255, dtype=np.uint8)
                noise = rng.randint(0, 60, size=(40, 40, 3)).astype(np.uint8)
                Image.fromarray(base + noise).save(root / folder / name / f"{k}.jpg", quality=90)
    return str(root), TinyPACS.load(root)


def spec_for(algorithm, steps=7, freq=3, test_envs=(0,)):
    return RunSpec(dataset="pacs", algorithm=algorithm, test_envs=tuple(test_envs),
                   hparams_seed=0, trial_seed=0, seed=seed_hash("pacs", algorithm, list(test_envs), 0, 0),
                   steps=steps, checkpoint_freq=freq, holdout_fraction=0.2,
                   hparams={**tiny_hparams(algorithm), "batch_size": 6, "patch_size": 8})


def options(workers, **kw):
    return train.RunOptions(progress=False, loader_workers=workers, **kw)


def records(run_dir, timings=False):
    out = []
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if not timings:
            r = {k: v for k, v in r.items() if k not in VOLATILE}
            r["args"] = {k: v for k, v in r["args"].items() if k != "output_dir"}
        out.append(r)
    return out


def test_augmentation_is_seeded_per_sample_and_leaves_the_caller_rng_alone(pacs):
    _, ds = pacs
    idx, seeds = np.array([0, 5, 0]), np.array([11, 12, 13])
    before = torch.get_rng_state()
    x1, y1 = fetch(ds.envs[1], idx, seeds)
    x2, _ = fetch(ds.envs[1], idx, seeds)
    assert torch.equal(torch.get_rng_state(), before)
    assert x1.shape == (3, 3, 32, 32) and y1.dtype == torch.int64
    assert torch.equal(x1, x2)                      # same seeds, same crops and jitter
    assert not torch.equal(x1[0], x1[2])            # same image, other seed: other augmentation
    plain, _ = fetch(ds.envs[1], idx)               # no seeds: the eval transform
    assert torch.equal(plain[0], plain[2])


def test_batched_to_tensor_and_normalize_equal_torchvision_bit_for_bit(pacs):
    _, ds = pacs
    env, idx, seeds = ds.envs[2], np.array([3, 1, 4, 1, 5]), np.array([9, 8, 7, 6, 5])
    x, y = fetch(env, idx)
    assert torch.equal(x, torch.stack([env[int(i)][0] for i in idx]))
    assert torch.equal(y, torch.stack([env[int(i)][1] for i in idx]))
    x, _ = fetch(env, idx, seeds)
    ref = []
    for i, s in zip(idx, seeds):
        torch.manual_seed(int(s))
        ref.append(env.augment_transform(env.loader(env.samples[int(i)][0])))
    assert torch.equal(x, torch.stack(ref))


def test_auto_workers_are_zero_in_memory_and_positive_for_image_folders(pacs):
    _, ds = pacs
    assert resolve_workers("auto", [torch.utils.data.TensorDataset(torch.zeros(2, 1))]) == 0
    assert 1 <= resolve_workers("auto", ds.envs) <= 8
    assert resolve_workers(3, ds.envs) == 3


@pytest.mark.parametrize("algorithm", ["erm", "gmoe"])
def test_records_are_the_same_with_0_and_2_workers(pacs, tmp_path, algorithm):
    path, ds = pacs
    spec = spec_for(algorithm)
    a = train.train_run(spec, ds, path, tmp_path / "w0", CPU, options(0))
    b = train.train_run(spec, ds, path, tmp_path / "w2", CPU, options(2, eval_batch_size=64))
    assert records(a) == records(b)
    assert [r["step"] for r in records(a)] == [0, 3, 6]
    for r in records(b, timings=True):
        assert r["data_time"] >= 0 and r["eval_time"] > 0 and r["step_time"] > 0
        assert r["loader"] == {"workers": 2, "eval_batch_size": 64}


def test_kill_and_resume_with_workers_gives_the_uninterrupted_records(pacs, tmp_path, monkeypatch):
    path, ds = pacs
    spec = spec_for("gmoe")
    whole = train.train_run(spec, ds, path, tmp_path / "whole", CPU, options(0))
    real_save = train.RunState.save

    def save_then_die(self, state, step):
        real_save(self, state, step)
        if step == 3:
            raise Killed()

    monkeypatch.setattr(train.RunState, "save", save_then_die)
    with pytest.raises(Killed):
        train.train_run(spec, ds, path, tmp_path / "cut", CPU, options(2))
    monkeypatch.setattr(train.RunState, "save", real_save)
    resumed = train.train_run(spec, ds, path, tmp_path / "cut", CPU, options(2))
    assert records(resumed) == records(whole)


def _old_accuracy(algorithm, env, idx, seed):
    """The in-process evaluation this pipeline replaced: DomainBed's order, batches of 64."""
    order = idx[np.random.RandomState(seed).permutation(len(idx))]
    correct = 0
    algorithm.eval()
    with torch.no_grad():
        for k in range(0, len(order), 64):
            items = [env[int(i)] for i in order[k : k + 64]]   # ImageFolder.__getitem__
            x, y = torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
            correct += int((algorithm.predict(x).argmax(1) == y).sum())
    algorithm.train()
    return correct / len(order)


@pytest.mark.parametrize("workers,batch", [(2, 7), (0, 200)])
def test_evaluation_in_workers_and_other_batches_gives_the_same_accuracies(pacs, workers, batch):
    _, ds = pacs
    spec = spec_for("erm", steps=1, freq=1)
    algorithm = train.build_algorithm(spec, ds, CPU)
    splits = Splits(ds.envs, spec)
    old = {}
    for i, env in enumerate(ds.envs):
        old[f"env{i}_in_acc"] = _old_accuracy(algorithm, env, splits.ins[i], seed_hash(spec.seed, i, "in"))
        old[f"env{i}_out_acc"] = _old_accuracy(algorithm, env, splits.outs[i], seed_hash(spec.seed, i, "out"))
    loader = Loader(ds.envs, workers)
    try:
        stream = RunStream(loader, splits, spec, 0, CPU, eval_batch_size=batch)
        stream.minibatches(0)
        assert stream.evaluate(algorithm, 0) == old
    finally:
        loader.close()
    assert len(set(old.values())) > 1, "a model that tells the splits apart"


def test_cli_loader_workers_is_auto_or_a_count(capsys):
    from moebench.cli.dg import train as cli

    assert cli.loader_workers("auto") == "auto" and cli.loader_workers("3") == 3
    assert cli.main(["--loader-workers", "-1"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--loader-workers must be auto or a count >= 0, got '-1'" in err and "\n" not in err
