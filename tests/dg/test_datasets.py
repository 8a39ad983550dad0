"""Datasets: registry entries build + load, DomainBed environment construction, file format."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from moebench.cli.dg.data import main as data_main
from moebench.dg.datasets import (
    DATASETS,
    DatasetFileError,
    build_dataset,
    colored_environments,
    load_dataset,
    load_digit_images,
    rotated_environments,
)
from moebench.registry import UnknownNameError


@pytest.fixture(scope="module")
def colored_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "colored.npz"
    build_dataset("colored_digits", path, seed=3)
    return path


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_builds_and_loads(name: str, tmp_path: Path) -> None:
    spec = DATASETS.get(name)
    if not spec.EMBEDDED:
        pytest.skip(f"{name} needs downloaded data (covered by its own tests)")
    path = tmp_path / "sub" / f"{name}.npz"
    build_dataset(name, path, max_images=120, image_size=12, seed=1)
    ds = load_dataset(name, path)
    assert ds.name == name and ds.environments == spec.ENVIRONMENTS
    assert len(ds) == len(spec.ENVIRONMENTS) and ds.num_classes == spec.N_CLASSES
    assert ds.input_shape == (spec.INPUT_SHAPE[0], 12, 12)
    sizes = [len(env) for env in ds.envs]
    assert sum(sizes) == 120 and max(sizes) - min(sizes) <= 1
    for env in ds.envs:
        x, y = env[0]
        assert x.shape == ds.input_shape and x.dtype == torch.float32 and y.dtype == torch.int64
        xs, ys = env.tensors
        assert 0.0 <= xs.min() and xs.max() <= 1.0 and xs.max() > 0.5
        assert set(ys.tolist()) <= set(range(ds.num_classes))
    assert ds.metadata["params"] == {**spec.PARAMS, "max_images": 120, "image_size": 12,
                                     "seed": 1}
    assert "load_digits" in ds.metadata["source"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_digit_images_are_real_and_upsampled() -> None:
    x8, y = load_digit_images(8)
    x16, _ = load_digit_images(16)
    assert x8.shape == (1797, 8, 8) and x16.shape == (1797, 16, 16)
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert float(x8.max()) == 1.0 and float(x8.min()) == 0.0
    # bilinear upsampling keeps the mean intensity of each image (up to border effects)
    assert torch.allclose(x8.mean((1, 2)), x16.mean((1, 2)), atol=0.02)


def _index_images(n: int, size: int = 4) -> torch.Tensor:
    """Image i is the constant (i + 1) / (n + 1): the index can be read back from the pixels."""
    return ((torch.arange(n, dtype=torch.float32) + 1) / (n + 1)).view(n, 1, 1).expand(
        n, size, size).contiguous()


def test_rotated_environments_disjoint_and_rotated() -> None:
    n, angles = 60, [0, 90, 0, 90]
    images = torch.rand(n, 6, 6)
    envs = rotated_environments(images, np.arange(n), angles, seed=5)
    ids = [y for _, y in envs]
    assert sorted(np.concatenate(ids).tolist()) == list(range(n))  # disjoint, cover all
    assert [len(i) for i in ids] == [15] * 4
    for (x, y), angle in zip(envs, angles):
        expected = torch.rot90(images[y], k=angle // 90, dims=(-2, -1)).unsqueeze(1)
        assert x.shape == (15, 1, 6, 6) and x.dtype == np.float32
        assert np.allclose(x, expected.numpy(), atol=1e-6)
    again = rotated_environments(images, np.arange(n), angles, seed=5)
    other = rotated_environments(images, np.arange(n), angles, seed=6)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(envs, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(envs, other))


def test_rotated_environments_take_uint8_and_reject_bad_floats() -> None:
    img = np.full((6, 4, 4), 255, dtype=np.uint8)
    (x, _), = rotated_environments(img, np.zeros(6), [0], seed=0)
    assert np.allclose(x, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rotated_environments(img.astype(np.float32), np.zeros(6), [0], seed=0)


def test_colored_environments_statistics() -> None:
    n, flips = 12000, [0.1, 0.2, 0.9]
    digits = torch.arange(n) % 10
    images = _index_images(n)
    envs = colored_environments(images, digits, flips, seed=0)
    seen = []
    for (x, y), flip in zip(envs, flips):
        assert x.shape == (n // 3, 2, 4, 4) and set(np.unique(y)) == {0, 1}
        active = x.max(axis=(2, 3))
        assert np.all((active[:, 0] == 0) ^ (active[:, 1] == 0))  # exactly one channel on
        colour = (active[:, 1] > 0).astype(np.int64)
        assert abs((colour == y).mean() - (1 - flip)) < 0.03
        index = np.rint(active.max(axis=1) * (n + 1) - 1).astype(np.int64)
        seen.append(index)
        clean = (digits[index] < 5).numpy().astype(np.int64)
        assert abs((clean == y).mean() - 0.75) < 0.03  # 25% label noise
    assert sorted(np.concatenate(seen).tolist()) == list(range(n))


def test_colored_digits_file_statistics(colored_file: Path) -> None:
    ds = load_dataset("colored_digits", colored_file)
    assert ds.environments == ["+90%", "+80%", "-90%"] and ds.input_shape == (2, 16, 16)
    for env, flip in zip(ds.envs, (0.1, 0.2, 0.9)):
        x, y = env.tensors
        colour = (x[:, 1].amax((1, 2)) > 0).long()
        assert abs((colour == y).float().mean().item() - (1 - flip)) < 0.06
        assert 0.35 < y.float().mean().item() < 0.65


def test_build_is_deterministic(colored_file: Path, tmp_path: Path) -> None:
    build_dataset("colored_digits", tmp_path / "a.npz", seed=3)
    a, b = load_dataset("colored_digits", colored_file), load_dataset("colored_digits",
                                                                      tmp_path / "a.npz")
    for ea, eb in zip(a.envs, b.envs):
        assert all(torch.equal(ta, tb) for ta, tb in zip(ea.tensors, eb.tensors))


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        build_dataset("rotated_digits", tmp_path / "r.npz", max_images=12)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04garbage"])
def test_corrupt_file_one_line_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DatasetFileError) as err:
        load_dataset("rotated_digits", path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_or_mismatched_file(colored_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError, match="does not exist"):
        load_dataset("rotated_digits", tmp_path / "nope.npz")
    with pytest.raises(DatasetFileError, match="holds 'colored_digits'"):
        load_dataset("rotated_digits", colored_file)


def test_bad_names_and_params(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError,
                       match="unknown dataset 'mnist_typo'; valid: .*rotated_digits"):
        build_dataset("mnist_typo", tmp_path / "x.npz")
    with pytest.raises(ValueError, match=r"unknown build parameter\(s\) \['colour'\]"):
        build_dataset("colored_digits", tmp_path / "x.npz", colour=1)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.npz"
    assert data_main(["--dataset", "rotated_digits", "--out", str(out), "--seed", "2",
                      "--image-size", "10", "--max-images", "60"]) == 0
    ds = load_dataset("rotated_digits", out)
    assert ds.input_shape == (1, 10, 10) and ds.metadata["params"]["seed"] == 2
    capsys.readouterr()
    for argv in (["--dataset", "nope", "--out", str(out)], ["--dataset", "rotated_digits"],
                 ["--dataset", "rotated_digits", "--out", str(out), "--image-size", "3"],
                 ["--dataset", "rotated_digits", "--out", str(out), "--param", "x"]):
        assert data_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1
