"""A small checksummed, atomic HTTP download for the supernet study's corpora.

The bytes stream into ``<dest>.part`` next to the destination (with a progress bar on a
terminal), are checked against the expected sha256 when one is configured, and are renamed
onto ``dest`` only then; any failure removes the part file, so nothing half-written is left
under any name. Errors are one-line :class:`moebench.errors.DataError`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from moebench.errors import DataError

log = logging.getLogger(__name__)
CHUNK = 1 << 20
USER_AGENT = "moebench-supernet/0.1 (+python urllib)"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _stream(url: str, part: Path, timeout: float, progress: Optional[bool]) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DataError(f"download failed: {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"download failed: {url}: {getattr(exc, 'reason', exc)}") from None
    with response:
        if (response.headers.get("Content-Type") or "").lower().startswith("text/html"):
            raise DataError(f"download failed: {url}: got an HTML page instead of the file")
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        got = 0
        with open(part, "wb") as out, tqdm(total=total, desc=part.name[:-5], unit="B",
                                           unit_scale=True, leave=False,
                                           disable=None if progress is None else not progress) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                got += len(block)
                bar.update(len(block))
    if total is not None and got != total:
        raise DataError(f"download failed: {url}: connection closed after {got} of {total} bytes")


def download(url: str, dest: str | os.PathLike[str], sha256: Optional[str] = None,
             timeout: float = 60.0, progress: Optional[bool] = None) -> str:
    """Fetch ``url`` to ``dest`` atomically; returns the file's sha256.

    With ``sha256`` the bytes must match it (else ``DataError``, nothing written); without,
    the digest is logged so it can be written into params. An existing ``dest`` with the
    right digest is kept without a request. ``progress`` None = a bar only on a terminal.
    """
    dest = Path(dest)
    if dest.exists() and sha256 and sha256_of(dest) == sha256.lower():
        return sha256.lower()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _stream(url, part, timeout, progress)
        got = sha256_of(part)
        if sha256 and got != sha256.lower():
            raise DataError(f"checksum mismatch for {dest.name} from {url}: expected sha256 "
                            f"{sha256.lower()}, got {got}")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    if not sha256:
        log.warning("%s: no sha256 configured; downloaded file has sha256 %s", dest.name, got)
    return got
