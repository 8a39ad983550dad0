"""Resumable HTTP downloads, checksum checks, safe extraction and atomic directory publishing.

Nothing half-written ever appears under its final name:

* :func:`download_file` streams into ``<part_dir>/<name>.part`` (resumed with an HTTP
  ``Range`` request when the server answers ``206``), checks size / sha256 / md5, then renames
  the part onto ``dest``. A failed transfer keeps only the ``.part`` file (for resuming); a
  checksum failure deletes it.
* :func:`extract_archive` unpacks zip / tar(.gz) / single-file .gz into a folder the caller
  owns (normally a :func:`staging_dir`), and :func:`publish_dir` renames the finished folder
  into place in one ``os.rename``.

Errors are :class:`DownloadError` with ONE line, e.g. ``download failed: <url>: HTTP 500`` or
``checksum mismatch for <file>: expected <hex>, got <hex>``. Google Drive's large-file
interstitial (``download_warning`` cookie, ``confirm=`` link or ``download-form``) is followed
for at most :data:`MAX_CONFIRM_HOPS` pages.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import http.cookiejar
import logging
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from moebench.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_CONFIRM_HOPS = 3
MAX_HTML_BYTES = 1 << 20
USER_AGENT = "moebench-download/0.1 (+python urllib)"


class DownloadError(DataError, RuntimeError):
    """A download, verification or extraction failed; ``str(exc)`` is one line."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected size or digest (the file is deleted)."""


class _Retryable(Exception):
    """A transfer was cut short; the ``.part`` file is kept and the next attempt resumes."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- Google Drive


class _FormParser(HTMLParser):
    """Collects the action and hidden inputs of Google Drive's ``download-form``."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and (a.get("id") == "download-form" or self.action is None):
            self.action, self.fields, self._inside = a.get("action", ""), {}, True
        elif tag == "input" and self._inside and a.get("name") and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def _with_query(url: str, **params: str) -> str:
    """``url`` with query parameters set (existing keys replaced)."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def confirm_url(url: str, html: bytes, cookies: http.cookiejar.CookieJar) -> str | None:
    """Next URL after a Google Drive "can't scan for viruses" page, or None if none is offered.

    Handles the ``download_warning*`` cookie (token -> ``confirm=``), the newer
    ``<form id="download-form">`` with hidden inputs, and a ``confirm=TOKEN`` link.
    """
    for cookie in cookies:
        if cookie.name.startswith("download_warning") and cookie.value:
            return _with_query(url, confirm=cookie.value)
    text = html.decode("utf-8", "replace")
    form = _FormParser()
    form.feed(text)
    if form.action is not None and "confirm" in form.fields:
        action = urllib.parse.urljoin(url, form.action)
        return action.split("?")[0] + "?" + urllib.parse.urlencode(form.fields)
    match = re.search(r"confirm=([0-9A-Za-z_-]+)", text)
    return _with_query(url, confirm=match.group(1)) if match else None


# --------------------------------------------------------------------------- HTTP transfer


def _is_html(response: http.client.HTTPResponse) -> bool:
    return (response.headers.get("Content-Type") or "").lower().startswith("text/html")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """GET ``url`` (with ``Range`` from ``offset``), following Drive confirm pages."""
    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    target = url
    for _ in range(MAX_CONFIRM_HOPS + 1):
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = opener.open(urllib.request.Request(target, headers=headers), timeout=timeout)
        if not _is_html(response):
            return response
        with response:
            page = response.read(MAX_HTML_BYTES)
        nxt = confirm_url(target, page, cookies)
        if nxt is None:
            raise DownloadError(f"download failed: {url}: got an HTML page instead of the file "
                                "(Google Drive quota exceeded or file not shared?)")
        target = nxt
    raise DownloadError(f"download failed: {url}: more than {MAX_CONFIRM_HOPS} confirm pages")


def _resume_offset(response: http.client.HTTPResponse, offset: int, part: Path) -> int:
    """Byte offset the body starts at: ``offset`` on a matching 206, 0 on a full response."""
    if not offset or response.getcode() != 206:
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range") or "")
    if match and int(match.group(1)) == offset:
        return offset
    part.unlink()
    raise _Retryable(f"server resumed at the wrong offset ({response.headers['Content-Range']})")


def _progress(name: str, total: int | None, initial: int, show: bool | None) -> tqdm:
    """A byte progress bar on stderr; off when stderr is not a terminal unless ``show``."""
    enabled = sys.stderr.isatty() if show is None else show
    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True,
                unit_divisor=1024, disable=not enabled, leave=False, file=sys.stderr)


def _transfer(url: str, part: Path, timeout: float, show: bool | None) -> None:
    """One attempt: append to (or restart) ``part``; raise _Retryable when cut short."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part is complete
            return
        raise DownloadError(f"download failed: {url}: HTTP {exc.code}") from None
    with response:
        start = _resume_offset(response, offset, part)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        received = start
        with open(part, "ab" if start else "wb") as out, \
                _progress(part.name[:-5], total, start, show) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received < total:
        raise _Retryable(f"connection closed after {received} of {total} bytes")


def _check(path: Path, name: str, size: int | None, sha256: str | None,
           md5: str | None) -> None:
    """Raise ChecksumError if ``path`` has the wrong size or digest."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise ChecksumError(f"size mismatch for {name}: expected {size} bytes, got {got_size}")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            got = file_digest(path, algorithm)
            if got != expected.lower():
                raise ChecksumError(
                    f"checksum mismatch for {name}: expected {algorithm} {expected}, got {got}")


def _fetch_part(url: str, part: Path, size: int | None, retries: int, timeout: float,
                progress: bool | None) -> None:
    """Fill ``part`` with ``url``'s bytes: one transfer plus at most ``retries`` resumes."""
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            if size is not None and part.exists() and part.stat().st_size < size:
                raise _Retryable(f"got {part.stat().st_size} of {size} bytes")
            return
        except (_Retryable, urllib.error.URLError, http.client.HTTPException, socket.timeout,
                ConnectionError) as exc:
            reason = getattr(exc, "reason", None) or exc
            if attempt == retries:
                raise DownloadError(f"download failed: {url}: {reason}") from None
            log.info("resuming %s after: %s", part.name, reason)


def download_file(url: str, dest: Path, *, part_dir: Path | None = None,
                  size: int | None = None, sha256: str | None = None, md5: str | None = None,
                  retries: int = 2, timeout: float = 60.0, progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest`` resumably and atomically; returns ``dest``.

    The transfer goes to ``<part_dir or dest.parent>/<dest.name>.part`` and is resumed from
    there (also across calls) with a Range request; at most ``retries`` automatic resumes
    follow a cut connection. Size/sha256/md5 (when given) are checked before the part is
    renamed onto ``dest``; a mismatch deletes the part and raises :class:`ChecksumError`.
    An existing ``dest`` that passes the checks is reused without any request.
    """
    dest = Path(dest)
    if dest.exists():
        try:
            _check(dest, dest.name, size, sha256, md5)
            return dest
        except ChecksumError as exc:
            log.info("re-downloading %s: %s", dest.name, exc)
            dest.unlink()
    part = Path(part_dir or dest.parent) / f"{dest.name}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    _fetch_part(url, part, size, retries, timeout, progress)
    try:
        _check(part, dest.name, size, sha256, md5)
    except ChecksumError:
        part.unlink()
        raise
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- extraction

_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def extract_archive(archive: Path, dest_dir: Path) -> None:
    """Unpack ``archive`` (.zip, .tar, .tar.gz/.tgz, or one-file .gz) into ``dest_dir``.

    Member paths are confined to ``dest_dir`` (zip sanitising, tar ``filter="data"``). A
    truncated or corrupt archive raises one-line ``corrupt archive <name>: <reason>``.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest_dir)
        elif name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(archive, "r|*") as tf:
                tf.extractall(dest_dir, filter="data")
        elif name.endswith(".gz"):
            with gzip.open(archive, "rb") as src, open(dest_dir / archive.name[:-3], "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        else:
            raise DownloadError(f"unsupported archive type: {archive.name}")
    except _CORRUPT as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DownloadError(f"corrupt archive {archive.name}: {reason}") from None


# --------------------------------------------------------------------------- atomic folders


def _stage_prefix(target: Path) -> str:
    return f".{target.name}.staging-"


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A fresh hidden folder next to ``target`` (same filesystem), removed on exit.

    Leftovers of killed earlier runs for the same target are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(_stage_prefix(target) + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=_stage_prefix(target), dir=target.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish_dir(src: Path, target: Path) -> None:
    """Rename the finished folder ``src`` to ``target`` in one step; ``target`` must not exist."""
    target = Path(target)
    if target.exists() or target.is_symlink():
        raise DownloadError(f"refusing to replace existing {target}")
    os.rename(src, target)
    log.info("published %s", target)
