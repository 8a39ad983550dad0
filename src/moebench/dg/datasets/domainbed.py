"""DomainBed image-folder datasets: PACS, VLCS, OfficeHome, TerraIncognita, DomainNet.

On disk each is DomainBed's layout ``<root>/<environment folder>/<class>/<image>``; the
environment folders, sorted, give environment index ``i`` (spec vision_dg.md §2.1) and
``ENVIRONMENTS[i]`` is DomainBed's short label for it (the table column header). Classes come
from ``torchvision.datasets.ImageFolder`` (sorted class folders, identical in every env).

``build(out_path, **params)`` downloads + extracts into ``out_path`` (see
:mod:`moebench.dg.datasets.sources`) or, with ``existing_dir=``, validates a user's copy and links
``out_path`` to it. ``load(path, augment=False, test_envs=())`` gives a
:class:`~moebench.dg.datasets.base.DomainDataset` whose items are
``(x float32 [3, 224, 224], y int64)``; training envs get DomainBed's augmentation when
``augment`` (spec §1.4), the test envs never do.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from moebench.errors import ParamsError
from moebench.dg.datasets.base import DatasetFileError, DomainDataset, DomainDatasetSpec
from moebench.dg.datasets.sources import TERRA_CATEGORIES, fetch_dataset
from moebench.registry import DATASETS

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(size: int = 224) -> T.Compose:
    """Test-time transform: Resize((size, size)), ToTensor, ImageNet Normalize -> [3,S,S]."""
    return T.Compose([T.Resize((size, size)), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(size: int = 224) -> T.Compose:
    """DomainBed's training augmentation (spec §1.4) -> float32 [3,S,S]."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
        T.ColorJitter(0.3, 0.3, 0.3, 0.3), T.RandomGrayscale(p=0.1), T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def as_int64(label: int) -> torch.Tensor:
    """ImageFolder class index -> 0-d int64 tensor (module-level so workers can pickle it)."""
    return torch.tensor(label, dtype=torch.int64)


def _subdirs(path: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


def _has_image(folder: Path) -> bool:
    for root, _, files in os.walk(folder):
        if any(name.lower().endswith(IMG_EXTENSIONS) for name in files):
            return True
    return False


def _diff(expected: Sequence[str], found: Sequence[str]) -> str:
    """Short description of two name lists' difference (first 5 of each side)."""
    missing = sorted(set(expected) - set(found))[:5]
    extra = sorted(set(found) - set(expected))[:5]
    return f"missing {missing}, unexpected {extra}"


class ImageFolderDomains(DomainDatasetSpec):
    """Base of the DomainBed image-folder datasets (subclasses set the class attributes)."""

    DIR_NAME: ClassVar[str] = ""        # DomainBed's folder under the data dir
    SOURCE_KEY: ClassVar[str] = ""      # key in moebench.dg.datasets.sources.SOURCES
    FOLDERS: ClassVar[list[str]] = []   # sorted environment folder names
    CLASSES: ClassVar[tuple[str, ...] | None] = None  # when known exactly
    INPUT_SHAPE: ClassVar[tuple[int, int, int]] = (3, 224, 224)
    PARAMS: ClassVar[dict[str, Any]] = {
        "existing_dir": None, "mirror": None, "cache_dir": None, "keep_archives": False,
        "retries": 2, "progress": None}

    @classmethod
    def validate(cls, path: Path) -> list[str]:
        """Check DomainBed's layout under ``path``; returns the class names.

        One-line :class:`DatasetFileError` naming what is wrong (environment folders, class
        folders differing between environments, class count, a class folder without images).
        """
        path = Path(path)
        if not path.is_dir():
            raise DatasetFileError(f"{cls.NAME} directory {path} does not exist")
        envs = _subdirs(path)
        if envs != sorted(cls.FOLDERS):
            raise DatasetFileError(f"invalid {cls.NAME} directory {path}: environment folders "
                                   f"{_diff(cls.FOLDERS, envs)}")
        classes = _subdirs(path / envs[0])
        for env in envs[1:]:
            if _subdirs(path / env) != classes:
                raise DatasetFileError(f"invalid {cls.NAME} directory {path}: classes of {env!r} "
                                       f"differ from {envs[0]!r}: {_diff(classes, _subdirs(path / env))}")
        expected = list(cls.CLASSES) if cls.CLASSES else None
        if len(classes) != cls.N_CLASSES or (expected and classes != expected):
            raise DatasetFileError(f"invalid {cls.NAME} directory {path}: expected {cls.N_CLASSES} "
                                   f"classes, found {len(classes)} ({_diff(expected or [], classes)})")
        for env in envs:
            for name in classes:
                if not _has_image(path / env / name):
                    raise DatasetFileError(f"invalid {cls.NAME} directory {path}: no images in "
                                           f"{env}/{name}")
        return classes

    @classmethod
    def build(cls, out_path: Path, **params: Any) -> None:
        """Download into ``out_path`` (DomainBed layout), or link it to ``existing_dir``.

        params: existing_dir, mirror (URL root replacing the real hosts), cache_dir
        (archives and ``.part`` files; default ``<out_path parent>/.downloads``),
        keep_archives, retries, progress. An existing valid ``out_path`` is kept as is.
        """
        p = cls.resolve_params(**params)
        out = Path(out_path)
        if p["existing_dir"]:
            cls._link_existing(Path(p["existing_dir"]), out)
            return
        if out.exists():
            cls.validate(out)
            log.info("%s is already in place at %s", cls.NAME, out)
            return
        fetch_dataset(cls.SOURCE_KEY, out, mirror=p["mirror"], cache_dir=p["cache_dir"],
                      keep_archives=p["keep_archives"], retries=p["retries"],
                      progress=p["progress"], validate=cls.validate)

    @classmethod
    def _link_existing(cls, existing: Path, out: Path) -> None:
        """Validate a user's copy (the dataset folder or its parent) and symlink ``out`` to it."""
        src = existing
        try:
            cls.validate(src)
        except DatasetFileError:
            if not (existing / cls.DIR_NAME).is_dir():
                raise
            src = existing / cls.DIR_NAME
            cls.validate(src)
        if out.exists() or out.is_symlink():
            if out.resolve() != src.resolve():
                raise DatasetFileError(f"{out} already exists and is not {src}; remove it first")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.link-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(src.resolve(), target_is_directory=True)
        os.replace(tmp, out)
        log.info("linked %s -> %s", out, src.resolve())

    @classmethod
    def load(cls, path: Path, augment: bool = False,
             test_envs: Sequence[int] = ()) -> DomainDataset:
        """ImageFolder per environment -> DomainDataset of ``(x [3,224,224], y int64)``.

        Environments not in ``test_envs`` use :func:`train_transform` when ``augment``
        (DomainBed also uses it for their held-out "out" split); others :func:`eval_transform`.
        Every env also carries ``augment_transform`` (:func:`train_transform`): the training
        loop (moebench.dg.loader) augments its minibatches with it, seeded per sample, and
        evaluates every split through ``transform``.
        """
        path = Path(path)
        classes = cls.validate(path)
        bad = [i for i in test_envs if not 0 <= int(i) < len(cls.FOLDERS)]
        if bad:
            raise ParamsError(f"test_envs {bad} out of range for {cls.NAME} "
                             f"({len(cls.FOLDERS)} environments)")
        size = cls.INPUT_SHAPE[1]
        envs = [ImageFolder(str(path / folder), target_transform=as_int64,
                            transform=train_transform(size) if augment and i not in test_envs
                            else eval_transform(size))
                for i, folder in enumerate(sorted(cls.FOLDERS))]
        for env in envs:    # what the training minibatches use (moebench.dg.loader.fetch)
            env.augment_transform = train_transform(size)  # type: ignore[attr-defined]
        return DomainDataset(
            name=cls.NAME, environments=list(cls.ENVIRONMENTS), input_shape=cls.INPUT_SHAPE,
            num_classes=cls.N_CLASSES, envs=list(envs),
            metadata={"path": str(path), "folders": sorted(cls.FOLDERS), "classes": classes,
                      "augment": augment, "test_envs": sorted(int(i) for i in test_envs),
                      "source": cls.SOURCE})


@DATASETS.register("pacs")
class PACS(ImageFolderDomains):
    NAME, DIR_NAME, SOURCE_KEY = "pacs", "PACS", "pacs"
    FOLDERS = ["art_painting", "cartoon", "photo", "sketch"]
    ENVIRONMENTS = ["A", "C", "P", "S"]
    CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    N_CLASSES = 7
    SOURCE = "PACS (Li et al., ICCV 2017), DomainBed's Google Drive copy"


@DATASETS.register("vlcs")
class VLCS(ImageFolderDomains):
    NAME, DIR_NAME, SOURCE_KEY = "vlcs", "VLCS", "vlcs"
    FOLDERS = ["Caltech101", "LabelMe", "SUN09", "VOC2007"]
    ENVIRONMENTS = ["C", "L", "S", "V"]
    CLASSES = ("bird", "car", "chair", "dog", "person")
    N_CLASSES = 5
    SOURCE = "VLCS (Fang et al., ICCV 2013), DomainBed's Google Drive copy"


@DATASETS.register("office_home")
class OfficeHome(ImageFolderDomains):
    NAME, DIR_NAME, SOURCE_KEY = "office_home", "office_home", "office_home"
    FOLDERS = ["Art", "Clipart", "Product", "Real World"]
    ENVIRONMENTS = ["A", "C", "P", "R"]
    N_CLASSES = 65
    SOURCE = "OfficeHome (Venkateswara et al., CVPR 2017), DomainBed's Google Drive copy"


@DATASETS.register("terra_incognita")
class TerraIncognita(ImageFolderDomains):
    NAME, DIR_NAME, SOURCE_KEY = "terra_incognita", "terra_incognita", "terra_incognita"
    FOLDERS = ["location_100", "location_38", "location_43", "location_46"]
    ENVIRONMENTS = ["L100", "L38", "L43", "L46"]
    CLASSES = TERRA_CATEGORIES
    N_CLASSES = 10
    SOURCE = "Caltech Camera Traps ECCV-18 (Beery et al., 2018) via LILA, DomainBed's filter"


@DATASETS.register("domain_net")
class DomainNet(ImageFolderDomains):
    NAME, DIR_NAME, SOURCE_KEY = "domain_net", "domain_net", "domain_net"
    FOLDERS = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
    ENVIRONMENTS = ["clip", "info", "paint", "quick", "real", "sketch"]
    N_CLASSES = 345
    SOURCE = "DomainNet (Peng et al., ICCV 2019), VisDA-2019 server, DomainBed duplicates removed"


class MNISTFiles(ImageFolderDomains):
    """Raw MNIST for RotatedMNIST/ColoredMNIST: ``<out>/MNIST/raw/*-ubyte`` (not a DATASETS entry).

    ``build`` works like the image sets; read the result with
    ``torchvision.datasets.MNIST(root=out, train=..., download=False)``.
    """

    NAME, DIR_NAME, SOURCE_KEY = "mnist", "MNIST", "mnist"
    RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    INPUT_SHAPE = (1, 28, 28)
    N_CLASSES = 10
    SOURCE = "MNIST (LeCun et al.), torchvision's mirror"

    @classmethod
    def validate(cls, path: Path) -> list[str]:
        """Check the four IDX files under ``<path>/MNIST/raw``; returns the digit labels."""
        raw = Path(path) / "MNIST" / "raw"
        missing = [name for name in cls.RAW_FILES if not (raw / name).is_file()]
        if missing:
            raise DatasetFileError(f"invalid MNIST directory {path}: missing {missing} in {raw}")
        return [str(d) for d in range(10)]

    @classmethod
    def load(cls, path: Path, augment: bool = False,
             test_envs: Sequence[int] = ()) -> DomainDataset:
        """Not an environment set: use torchvision.datasets.MNIST(root=path)."""
        raise NotImplementedError("MNIST files feed RotatedMNIST/ColoredMNIST; read them with "
                                  "torchvision.datasets.MNIST(root=path)")


DOWNLOADABLE: dict[str, type[ImageFolderDomains]] = {
    cls.NAME: cls for cls in (PACS, VLCS, OfficeHome, TerraIncognita, DomainNet, MNISTFiles)}
