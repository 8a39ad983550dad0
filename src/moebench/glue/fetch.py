"""Small download and publishing helpers of the GLUE study (checksummed, atomic).

* :func:`download` streams a URL into ``<dest>.part`` (tqdm bar on a terminal), checks size
  and sha256, then renames it onto ``dest``; a failed transfer or a checksum mismatch
  deletes the part: nothing half-written keeps a final name. Several URLs are mirrors,
  tried in order.
* :func:`staging` / :func:`publish` build a folder next to its target and rename it into
  place in one step.

(The DomainBed study has a resumable downloader of its own; studies may not import each
other, so this is the GLUE study's minimal one.)
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

from moebench.errors import DataError

log = logging.getLogger(__name__)
CHUNK = 1 << 20
USER_AGENT = "moebench-glue/0.1 (+python urllib)"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, part: Path, timeout: float, progress: Optional[bool]) -> None:
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        show = sys.stderr.isatty() if progress is None else progress
        with open(part, "wb") as out, tqdm(total=total, desc=part.name[:-5], unit="B",
                                           unit_scale=True, disable=not show, leave=False,
                                           file=sys.stderr) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))


def _check(path: Path, name: str, size: Optional[int], sha256: Optional[str]) -> None:
    got = path.stat().st_size
    if size is not None and got != size:
        raise DataError(f"size mismatch for {name}: expected {size} bytes, got {got}")
    if sha256 and sha256_file(path) != sha256.lower():
        raise DataError(f"checksum mismatch for {name}: expected sha256 {sha256}, "
                        f"got {sha256_file(path)}")


def download(urls: Sequence[str], dest: str | Path, *, sha256: Optional[str] = None,
             size: Optional[int] = None, timeout: float = 60.0,
             progress: Optional[bool] = None) -> Path:
    """Fetch the first URL of ``urls`` that answers into ``dest``, checked; returns ``dest``.

    An existing ``dest`` that passes the checks is reused. Every failure is a one-line
    :class:`DataError` naming the URL (the last one's, when every mirror failed).
    """
    dest = Path(dest)
    if dest.exists():
        try:
            _check(dest, dest.name, size, sha256)
            return dest
        except DataError as exc:
            log.info("re-downloading %s: %s", dest.name, exc)
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    error = "no URL given"
    for url in urls:
        try:
            _fetch(url, part, timeout, progress)
            _check(part, dest.name, size, sha256)
        except urllib.error.HTTPError as exc:
            error = f"download failed: {url}: HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            error = f"download failed: {url}: {getattr(exc, 'reason', None) or exc}"
        except DataError as exc:
            error = f"{exc} (from {url})"
        else:
            os.replace(part, dest)
            return dest
        finally:
            part.unlink(missing_ok=True)
        log.warning("%s", error)
    raise DataError(error)


@contextmanager
def staging(target: str | Path) -> Iterator[Path]:
    """A fresh hidden folder next to ``target`` (removed on exit, with stale ones)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.staging-"
    for stale in target.parent.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, target: str | Path) -> Path:
    """Replace ``target`` by the finished folder ``stage`` (old one removed first)."""
    target = Path(target)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    os.rename(stage, target)
    return target
