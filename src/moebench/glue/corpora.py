"""The offline text corpora of the embedded tasks: Debian ``fortunes`` and ``trans-de-en``.

Both are read from the installed Debian package when present (``apt-get install fortunes
trans-de-en``). Otherwise the same package file is downloaded from the Debian archive
(``deb.debian.org``, then the frozen ``snapshot.debian.org`` copy) with the size and sha256
of the Debian bookworm index, and the needed files are unpacked from it; so both ways give
the same bytes. Neither corpus may be committed (GPL-2+ for Ding, BSD for fortunes): the
data rule derives the task files from them on the user's machine.
"""
from __future__ import annotations

import io
import logging
import lzma
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from moebench.errors import DataError
from moebench.fetch import download, publish, sha256_file, staging

log = logging.getLogger(__name__)
SNAPSHOT = "https://snapshot.debian.org/archive/debian/20250520T000000Z"


@dataclass(frozen=True)
class DebCorpus:
    """A corpus shipped in a Debian package: where it is installed, which member of the
    package's data archive it is (a file or a folder), and the package file to download."""

    name: str
    installed: str
    member: str
    urls: tuple[str, ...]
    sha256: str
    size: int
    license: str


def _pool(path: str) -> tuple[str, ...]:
    return (f"https://deb.debian.org/debian/{path}", f"{SNAPSHOT}/{path}")


CORPORA: dict[str, DebCorpus] = {
    "ding": DebCorpus(
        "ding", "/usr/share/trans/de-en", "usr/share/trans/de-en",
        _pool("pool/main/d/ding/trans-de-en_1.9-6_all.deb"),
        "45f6b4cf1c434776fba6811d7bc522efabb5425c43ba8afd0e289bf9e2e53df4", 6276816,
        "GPL-2+ (Frank Richter, TU Chemnitz; Debian trans-de-en 1.9-6)"),
    "fortunes": DebCorpus(
        "fortunes", "/usr/share/games/fortunes", "usr/share/games/fortunes",
        _pool("pool/main/f/fortune-mod/fortunes_1.99.1-7.3_all.deb"),
        "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5", 848988,
        "BSD (UC Regents) and public domain (Debian fortunes 1:1.99.1-7.3)"),
}


def corpus_source(name: str, overrides: Optional[Mapping[str, Any]] = None) -> DebCorpus:
    """The catalog entry of ``name`` with params overrides (installed, urls, sha256, size)."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; valid: {', '.join(CORPORA)}")
    over = dict(overrides or {})
    if "urls" in over:
        over["urls"] = tuple(over["urls"])
    unknown = sorted(set(over) - {"installed", "urls", "sha256", "size"})
    if unknown:
        raise DataError(f"corpus {name}: unknown key {unknown[0]!r}")
    return replace(CORPORA[name], **over)


def deb_members(deb: bytes) -> dict[str, bytes]:
    """The members of a Debian package (an ``ar`` archive): {name: bytes}."""
    if not deb.startswith(b"!<arch>\n"):
        raise DataError("not a Debian package (no ar header)")
    out, pos = {}, 8
    while pos + 60 <= len(deb):
        header = deb[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise DataError("corrupt Debian package (bad ar member header)")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        out[name] = deb[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def _data_tar(deb: bytes) -> tarfile.TarFile:
    members = deb_members(deb)
    for name, blob in members.items():
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise DataError("the package's data.tar.zst needs zstd support; install the "
                                "Debian package instead")
            if name.endswith(".xz"):
                blob = lzma.decompress(blob)
            return tarfile.open(fileobj=io.BytesIO(blob), mode="r:*")
    raise DataError("Debian package without a data.tar member")


def unpack_member(deb_path: Path, member: str, target: Path) -> Path:
    """Extract the file or folder ``member`` of the package's data archive to ``target``."""
    with _data_tar(deb_path.read_bytes()) as tar:
        names = [m for m in tar.getmembers()
                 if m.name.lstrip("./") == member or m.name.lstrip("./").startswith(member + "/")]
        files = [m for m in names if m.isfile()]
        if not files:
            raise DataError(f"{deb_path.name} has no {member}")
        with staging(target) as stage:
            for m in files:
                rel = m.name.lstrip("./")[len(member):].lstrip("/")
                dest = stage / "x" / rel if rel else stage / "x"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())
            publish(stage / "x", target)
    return target


def corpus_path(source: DebCorpus, cache_dir: str | Path,
                progress: Optional[bool] = None) -> tuple[Path, str]:
    """(path of the corpus file or folder, "installed" | "downloaded")."""
    installed = Path(source.installed)
    if installed.exists():
        return installed, "installed"
    cache = Path(cache_dir)
    target = cache / source.name
    if target.exists():
        return target, "downloaded"
    log.info("%s not installed: downloading %s", installed, source.urls[0])
    deb = cache / f"{source.name}.deb"
    download(source.urls, deb, sha256=source.sha256, size=source.size, progress=progress)
    return unpack_member(deb, source.member, target), "downloaded"


def corpus_digest(path: Path) -> str:
    """sha256 of a corpus file, or of the sorted (name, sha256) list of a folder's files."""
    if path.is_file():
        return sha256_file(path)
    import hashlib

    lines = "".join(f"{p.relative_to(path)} {sha256_file(p)}\n"
                    for p in sorted(path.rglob("*")) if p.is_file())
    return hashlib.sha256(lines.encode()).hexdigest()
