"""Where each DomainBed dataset comes from, and how its archives become DomainBed's layout.

:data:`SOURCES` maps a dataset key (``pacs``, ``vlcs``, ``office_home``, ``domain_net``,
``terra_incognita``, ``mnist``) to its remote files (the URLs of DomainBed's download script,
spec vision_dg.md Appendix) and an ``arrange`` step. :func:`fetch_dataset` downloads them into
a cache folder, extracts them into a staging folder next to the output, arranges and
validates the result there, and only then renames it to ``<data_dir>/<DomainBed dir>``.

``mirror`` replaces every real URL by ``<mirror>/<mirror_path>`` (a plain folder tree served
over http(s) or ``file://``), which is how tests point everything at 127.0.0.1. No sha256 is
published yet (spec: only after verifying a real download); the first successful download
(one whose archives extracted and validated) records size + sha256 in
``<cache_dir>/checksums.json``, and later downloads are checked
against it (delete the entry to accept a changed upstream file).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moebench.errors import ParamsError
from moebench.dg.datasets.download import (
    ChecksumError,
    DownloadError,
    download_file,
    extract_archive,
    file_digest,
    publish_dir,
    staging_dir,
)
from moebench.io import atomic_write_text

log = logging.getLogger(__name__)

GDRIVE_URL = "https://drive.google.com/uc?export=download&id={id}"
VISDA_URL = "http://csr.bu.edu/ftp/visda/2019/multi-source/"
LILA_URL = "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps/"
DOMAIN_NET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
DOMAIN_NET_DUPLICATES = Path(__file__).with_name("domain_net_duplicates.txt")
TERRA_LOCATIONS = ("38", "46", "100", "43")
TERRA_CATEGORIES = ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit",
                    "raccoon", "squirrel")
CHECKSUMS_FILE = "checksums.json"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: cache name, real URL, path below a mirror root, optional checks."""

    filename: str
    url: str
    mirror_path: str = ""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    def url_for(self, mirror: str | None) -> str:
        """The real URL, or ``<mirror>/<mirror_path or filename>`` when a mirror is given."""
        if not mirror:
            return self.url
        path = urllib.parse.quote(self.mirror_path or self.filename)
        return f"{mirror.rstrip('/')}/{path}"


@dataclass(frozen=True)
class DatasetSource:
    """A dataset's remote files and the step turning extracted files into its layout."""

    name: str
    dir_name: str
    files: tuple[RemoteFile, ...]
    arrange: Callable[[Path, Path], None]  # (extracted root, output dir to create)


def gdrive_file(file_id: str, filename: str) -> RemoteFile:
    """A Google Drive file (``uc?export=download&id=`` form; confirm pages are followed)."""
    return RemoteFile(filename, GDRIVE_URL.format(id=file_id))


# --------------------------------------------------------------------------- arrange steps


def move_top_folder(raw: Path, out: Path, *, folder: str) -> None:
    """Rename the archive's single top folder (e.g. PACS's ``kfold``) to ``out``."""
    if not (raw / folder).is_dir():
        found = sorted(p.name for p in raw.iterdir())
        raise DownloadError(f"unexpected archive layout: no top folder {folder!r} (found {found})")
    os.rename(raw / folder, out)


def remove_listed(root: Path, list_file: Path) -> int:
    """Delete the files listed (one relative path a line, '#' comments) under ``root``."""
    removed = 0
    for line in list_file.read_text().splitlines():
        rel = line.strip()
        if not rel or rel.startswith("#") or rel.startswith("/") or ".." in Path(rel).parts:
            continue
        path = root / rel
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def arrange_domain_net(raw: Path, out: Path) -> None:
    """Move the six domain folders to ``out`` and delete DomainBed's duplicate list."""
    missing = [d for d in DOMAIN_NET_DOMAINS if not (raw / d).is_dir()]
    if missing:
        raise DownloadError(f"unexpected DomainNet archives: missing domain folders {missing}")
    out.mkdir()
    for domain in DOMAIN_NET_DOMAINS:
        os.rename(raw / domain, out / domain)
    removed = remove_listed(out, DOMAIN_NET_DUPLICATES)
    log.info("removed %d duplicate DomainNet images", removed)


def _terra_labels(annotation_dir: Path) -> tuple[list[dict[str, Any]], dict[Any, list[str]]]:
    """Images of all ECCV-18 split files and image id -> category names."""
    images: list[dict[str, Any]] = []
    names: dict[Any, str] = {}
    annotations: list[dict[str, Any]] = []
    files = sorted(annotation_dir.glob("*.json"))
    if not files:
        raise DownloadError(f"no annotation files in {annotation_dir.name}/")
    for path in files:
        data = json.loads(path.read_text())
        images += data.get("images", [])
        annotations += data.get("annotations", [])
        names.update({c["id"]: c["name"] for c in data.get("categories", [])})
    labels: dict[Any, list[str]] = {}
    for ann in annotations:
        labels.setdefault(ann["image_id"], []).append(names[ann["category_id"]])
    return images, labels


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def arrange_terra_incognita(raw: Path, out: Path) -> None:
    """``location_<id>/<category>/<file>`` for DomainBed's 4 locations and 10 categories."""
    image_dir = raw / "eccv_18_all_images_sm"
    if not image_dir.is_dir():
        raise DownloadError("unexpected TerraIncognita archive: no eccv_18_all_images_sm/")
    images, labels = _terra_labels(raw / "eccv_18_annotation_files")
    out.mkdir()
    for image in images:
        location = str(image.get("location"))
        if location not in TERRA_LOCATIONS:
            continue
        src = image_dir / image["file_name"]
        for category in labels.get(image["id"], []):
            if category not in TERRA_CATEGORIES:
                continue
            if not src.is_file():
                raise DownloadError(f"TerraIncognita image {image['file_name']} is annotated "
                                    "but missing from the images archive")
            _link_or_copy(src, out / f"location_{location}" / category / Path(src).name)


def arrange_mnist(raw: Path, out: Path) -> None:
    """``<out>/MNIST/raw/*-ubyte`` so that ``torchvision.datasets.MNIST(root=out)`` reads it."""
    target = out / "MNIST" / "raw"
    target.mkdir(parents=True)
    for remote in SOURCES["mnist"].files:
        name = remote.filename[: -len(".gz")]
        if not (raw / name).is_file():
            raise DownloadError(f"MNIST file {name} missing after extraction")
        os.rename(raw / name, target / name)


def _mnist_files() -> tuple[RemoteFile, ...]:
    """torchvision's MNIST mirror and md5s (wrapped, not copied)."""
    from torchvision.datasets import MNIST

    base = MNIST.mirrors[0]
    return tuple(RemoteFile(name, base + name, md5=md5) for name, md5 in MNIST.resources)


def _visda(path: str) -> RemoteFile:
    return RemoteFile(path.split("/")[-1], VISDA_URL + path, mirror_path=path)


def _lila(name: str) -> RemoteFile:
    return RemoteFile(name, LILA_URL + name)


SOURCES: dict[str, DatasetSource] = {
    "pacs": DatasetSource(
        "pacs", "PACS", (gdrive_file("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd", "PACS.zip"),),
        functools.partial(move_top_folder, folder="kfold")),
    "vlcs": DatasetSource(
        "vlcs", "VLCS", (gdrive_file("1skwblH1_okBwxWxmRsp9_qi15hyPpxg8", "VLCS.tar.gz"),),
        functools.partial(move_top_folder, folder="VLCS")),
    "office_home": DatasetSource(
        "office_home", "office_home",
        (gdrive_file("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC", "office_home.zip"),),
        functools.partial(move_top_folder, folder="OfficeHomeDataset_10072016")),
    "domain_net": DatasetSource(
        "domain_net", "domain_net",
        tuple(_visda(p) for p in ("groundtruth/clipart.zip", "infograph.zip",
                                  "groundtruth/painting.zip", "quickdraw.zip", "real.zip",
                                  "sketch.zip")),
        arrange_domain_net),
    "terra_incognita": DatasetSource(
        "terra_incognita", "terra_incognita",
        (_lila("eccv_18_all_images_sm.tar.gz"), _lila("eccv_18_annotations.tar.gz")),
        arrange_terra_incognita),
    "mnist": DatasetSource("mnist", "MNIST", _mnist_files(), arrange_mnist),
}


def get_source(name: str) -> DatasetSource:
    """The :class:`DatasetSource` for ``name``; unknown names raise a one-line ValueError."""
    if name not in SOURCES:
        raise ParamsError(f"unknown download source {name!r}; valid: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


# --------------------------------------------------------------------------- recorded checksums


def _read_records(cache_dir: Path) -> dict[str, dict[str, Any]]:
    path = cache_dir / CHECKSUMS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_record(cache_dir: Path, name: str, url: str, path: Path) -> None:
    """Store size + sha256 of a first download (atomic rewrite of checksums.json)."""
    records = _read_records(cache_dir)
    records[name] = {"size": path.stat().st_size, "sha256": file_digest(path), "url": url}
    atomic_write_text(cache_dir / CHECKSUMS_FILE, json.dumps(records, indent=1, sort_keys=True) + "\n")
    log.info("recorded sha256 %s for %s", records[name]["sha256"], name)


def fetch_file(remote: RemoteFile, cache_dir: Path, *, mirror: str | None = None,
               retries: int = 2, progress: bool | None = None) -> Path:
    """Download one file into ``cache_dir`` checked against published or recorded sums."""
    record = _read_records(cache_dir).get(remote.filename, {})
    url = remote.url_for(mirror)
    try:
        path = download_file(
            url, cache_dir / remote.filename, size=remote.size or record.get("size"),
            sha256=remote.sha256 or record.get("sha256"), md5=remote.md5,
            retries=retries, progress=progress)
    except ChecksumError as exc:
        if record and not remote.sha256:
            raise ChecksumError(f"{exc} (recorded in {cache_dir / CHECKSUMS_FILE})") from None
        raise
    return path


def record_checksums(cache_dir: Path, files: tuple[RemoteFile, ...], paths: list[Path],
                     mirror: str | None = None) -> None:
    """Record size + sha256 of files that have neither a published nor a recorded sum."""
    records = _read_records(cache_dir)
    for remote, path in zip(files, paths):
        if not remote.sha256 and remote.filename not in records:
            _write_record(cache_dir, remote.filename, remote.url_for(mirror), path)


def _assemble(source: DatasetSource, archives: list[Path], stage: Path, out_dir: Path,
              validate: Callable[[Path], None] | None) -> None:
    """Extract ``archives`` into ``stage/raw``, arrange into ``stage/out`` and validate it."""
    for archive in archives:
        try:
            extract_archive(archive, stage / "raw")
        except DownloadError:
            archive.unlink()  # a corrupt archive must be fetched again
            raise
    source.arrange(stage / "raw", stage / "out")
    if validate is not None:
        try:
            validate(stage / "out")
        except ValueError as exc:  # name the final folder, not the staging one
            raise DownloadError(str(exc).replace(str(stage / "out"), str(out_dir))) from None


def fetch_dataset(name: str, out_dir: Path, *, mirror: str | None = None,
                  cache_dir: Path | None = None, keep_archives: bool = False, retries: int = 2,
                  progress: bool | None = None,
                  validate: Callable[[Path], None] | None = None) -> Path:
    """Download, extract and arrange dataset ``name`` into ``out_dir`` (DomainBed layout).

    ``out_dir`` appears only complete (staging folder + one rename); an existing ``out_dir``
    is left alone. Archives live in ``cache_dir`` (default ``<out_dir parent>/.downloads``)
    and are deleted after success unless ``keep_archives``. ``validate(staged_dir)`` runs
    before publishing. Raises one-line :class:`DownloadError` / ValueError.
    """
    source, out_dir = get_source(name), Path(out_dir)
    if out_dir.exists():
        log.info("%s already exists; not downloading", out_dir)
        return out_dir
    cache = Path(cache_dir) if cache_dir else out_dir.parent / ".downloads"
    cache.mkdir(parents=True, exist_ok=True)
    archives = [fetch_file(f, cache, mirror=mirror, retries=retries, progress=progress)
                for f in source.files]
    with staging_dir(out_dir) as stage:
        _assemble(source, archives, stage, out_dir, validate)
        record_checksums(cache, source.files, archives, mirror)  # only archives that worked
        publish_dir(stage / "out", out_dir)
    if not keep_archives:
        for archive in archives:
            archive.unlink(missing_ok=True)
    return out_dir
