"""Checksummed, atomic HTTP downloads and folder publishing shared by every study.

* :func:`download` streams a URL into ``<dest>.part`` (a tqdm bar on a terminal), checks the
  length the server announced, the size and the sha256 when they are given, and only then
  renames the part onto ``dest``; any failure deletes the part, so nothing half-written
  keeps a final name. Several URLs are mirrors, tried in order. An HTML page where a file was
  expected (a share link's landing page) is an error.
* :func:`staging` / :func:`publish` build a folder next to its target and rename it into
  place in one step.

Every failure is a one-line :class:`~moebench.errors.DataError` naming the URL. (The DomainBed
study's image-set downloader adds resumable ranges and archive extraction on top.)
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
from typing import Iterator, Optional, Sequence, Union

from moebench.errors import DataError

log = logging.getLogger(__name__)
CHUNK = 1 << 20
USER_AGENT = "moebench/0.1 (+python urllib)"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _stream(url: str, part: Path, timeout: float, progress: Optional[bool]) -> None:
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if (response.headers.get("Content-Type") or "").lower().startswith("text/html"):
            raise DataError(f"download failed: {url}: got an HTML page instead of the file")
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        show = sys.stderr.isatty() if progress is None else progress
        got = 0
        with open(part, "wb") as out, tqdm(total=total, desc=part.name[:-5], unit="B",
                                           unit_scale=True, disable=not show, leave=False,
                                           file=sys.stderr) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                got += len(block)
                bar.update(len(block))
    if total is not None and got != total:
        raise DataError(f"download failed: {url}: connection closed after {got} of "
                        f"{total} bytes")


def _check(path: Path, name: str, size: Optional[int], sha256: Optional[str]) -> str:
    """The file's sha256, after the size and checksum checks."""
    got = path.stat().st_size
    if size is not None and got != size:
        raise DataError(f"size mismatch for {name}: expected {size} bytes, got {got}")
    digest = sha256_file(path)
    if sha256 and digest != sha256.lower():
        raise DataError(f"checksum mismatch for {name}: expected sha256 {sha256.lower()}, "
                        f"got {digest}")
    return digest


def download(urls: Union[str, Sequence[str]], dest: str | os.PathLike[str], *,
             sha256: Optional[str] = None, size: Optional[int] = None, timeout: float = 60.0,
             progress: Optional[bool] = None) -> str:
    """Fetch the first of ``urls`` that answers into ``dest``, checked; returns its sha256.

    An existing ``dest`` that passes the checks is reused without a request (with no
    ``sha256`` given, only a fresh download is trusted). Without ``sha256`` the digest is
    logged, so it can be written into params.
    """
    dest, urls = Path(dest), [urls] if isinstance(urls, str) else list(urls)
    if dest.exists() and sha256:
        try:
            return _check(dest, dest.name, size, sha256)
        except DataError as exc:
            log.info("re-downloading %s: %s", dest.name, exc)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    error = "download failed: no URL given"
    for url in urls:
        try:
            _stream(url, part, timeout, progress)
            digest = _check(part, dest.name, size, sha256)
        except urllib.error.HTTPError as exc:
            error = f"download failed: {url}: HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            error = f"download failed: {url}: {getattr(exc, 'reason', None) or exc}"
        except DataError as exc:
            error = str(exc) if str(exc).startswith("download failed") else f"{exc} (from {url})"
        else:
            os.replace(part, dest)
            if not sha256:
                log.warning("%s: no sha256 configured; the downloaded file has sha256 %s",
                            dest.name, digest)
            return digest
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
