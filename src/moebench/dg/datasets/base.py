"""Domain datasets: the in-memory container, the on-disk ``.npz`` format and the base class.

A dataset file is ONE compressed ``.npz`` holding, per environment ``i``, ``env{i}_x``
(float32 [N_i, C, H, W], values in [0, 1]) and ``env{i}_y`` (int64 [N_i]), plus ``meta`` (a
0-d unicode array holding JSON: name, environments, num_classes, input_shape, params,
source). Files are written atomically (temporary file in the same folder + ``os.replace``),
so an interrupted build never leaves a half-written file behind.
"""
from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from moebench.errors import DataError
from moebench.io import atomic_write

log = logging.getLogger(__name__)

EnvArrays = list[tuple[np.ndarray, np.ndarray]]


class DatasetFileError(DataError):
    """A dataset file is missing, unreadable or not in the expected format."""


@dataclass(frozen=True)
class DomainDataset:
    """A multi-environment dataset: ``ds[i]`` is environment ``i`` (items ``(x [C,H,W], y)``)."""

    name: str
    environments: list[str]
    input_shape: tuple[int, int, int]
    num_classes: int
    envs: list[Dataset]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.envs)

    def __getitem__(self, index: int) -> Dataset:
        return self.envs[index]



def write_npz_atomic(out_path: Path, envs: EnvArrays, meta: dict[str, Any]) -> None:
    """Write per-env ``[(x [N,C,H,W], y [N]), ...]`` and ``meta`` to ``out_path`` atomically."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    for i, (x, y) in enumerate(envs):
        arrays[f"env{i}_x"] = np.ascontiguousarray(x, dtype=np.float32)
        arrays[f"env{i}_y"] = np.ascontiguousarray(y, dtype=np.int64)
    atomic_write(out_path, lambda fh: np.savez_compressed(fh, **arrays))
    log.info("wrote %s (%d environments)", out_path, len(envs))


def read_npz(path: Path) -> tuple[dict[str, Any], EnvArrays]:
    """Read a :func:`write_npz_atomic` file; one-line :class:`DatasetFileError` if bad."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            n_envs = len(meta["environments"])
            envs = [(data[f"env{i}_x"], data[f"env{i}_y"]) for i in range(n_envs)]
    except FileNotFoundError:
        raise DatasetFileError(f"dataset file {path} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatasetFileError(f"cannot read dataset file {path}: {reason}") from None
    return meta, envs


class DomainDatasetSpec:
    """Base class of DATASETS entries: subclasses set the class attributes and ``_make_envs``."""

    ENVIRONMENTS: ClassVar[list[str]] = []
    N_CLASSES: ClassVar[int] = 0
    INPUT_SHAPE: ClassVar[tuple[int, int, int]] = (1, 1, 1)
    PARAMS: ClassVar[dict[str, Any]] = {}  # build parameter -> default
    SOURCE: ClassVar[str] = ""
    NAME: ClassVar[str] = ""
    EMBEDDED: ClassVar[bool] = False  # True: builds offline from data bundled with a package

    @classmethod
    def resolve_params(cls, **params: Any) -> dict[str, Any]:
        """Defaults overridden by ``params``; unknown keys raise a one-line ValueError."""
        unknown = sorted(set(params) - set(cls.PARAMS))
        if unknown:
            raise DataError(
                f"unknown build parameter(s) {unknown} for dataset {cls.NAME!r}; "
                f"valid: {sorted(cls.PARAMS)}")
        return {**cls.PARAMS, **params}

    @classmethod
    def _make_envs(cls, params: dict[str, Any]) -> EnvArrays:
        raise NotImplementedError

    @classmethod
    def build(cls, out_path: Path, **params: Any) -> None:
        """Build the environments and write them to ``out_path`` (one ``.npz``, atomically)."""
        resolved = cls.resolve_params(**params)
        envs = cls._make_envs(resolved)
        meta = {
            "name": cls.NAME,
            "environments": list(cls.ENVIRONMENTS),
            "num_classes": cls.N_CLASSES,
            "input_shape": list(envs[0][0].shape[1:]),
            "params": resolved,
            "source": cls.SOURCE,
            "env_sizes": [int(len(y)) for _, y in envs],
        }
        write_npz_atomic(Path(out_path), envs, meta)

    @classmethod
    def load(cls, path: Path) -> DomainDataset:
        """Load a built file into a :class:`DomainDataset` of ``TensorDataset`` environments."""
        meta, arrays = read_npz(Path(path))
        if meta.get("name") != cls.NAME:
            raise DatasetFileError(
                f"dataset file {path} holds {meta.get('name')!r}, not {cls.NAME!r}")
        envs: list[Dataset] = [
            TensorDataset(torch.from_numpy(x).float(), torch.from_numpy(y).long())
            for x, y in arrays]
        return DomainDataset(
            name=cls.NAME, environments=list(meta["environments"]),
            input_shape=tuple(int(s) for s in meta["input_shape"]),  # type: ignore[arg-type]
            num_classes=int(meta["num_classes"]), envs=envs, metadata=meta)
