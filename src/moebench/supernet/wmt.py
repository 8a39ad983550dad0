"""Paper scale: HAT's preprocessed WMT data (fairseq binary format), read without fairseq.

HAT's ``configs/<task>/get_preprocessed.sh`` downloads one ``.tgz`` per task (WMT'14 En-De
as ``wmt16_en_de``, WMT'14 En-Fr, WMT'19 En-De) holding fairseq's ``preprocess.py`` output
with a joined dictionary: ``dict.<src>.txt``, ``dict.<tgt>.txt`` and, per split ``train`` /
``valid`` / ``test`` and language, ``<split>.<src>-<tgt>.<lang>.bin`` + ``.idx`` (fairseq's
"mmap" indexed dataset; the older "cached"/"lazy" format is read too). Tokens are BPE
(subword-nmt, ``@@`` continuation marks) with fairseq's specials bos 0, pad 1, eos 2, unk 3
and each sentence ending with eos.
"""
from __future__ import annotations

import logging
import shutil
import struct
import tarfile
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from moebench.errors import DataError
from moebench.fetch import download
from moebench.supernet.spm import BOS, EOS, PAD, UNK

log = logging.getLogger(__name__)
MMAP_MAGIC = b"MMIDIDX\x00\x00"
LEGACY_MAGIC = b"TNTIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64,
          7: np.float64, 8: np.uint16}
SPLITS = ("train", "valid", "test")


class FairseqDict:
    """fairseq's Dictionary read from ``dict.<lang>.txt`` (``symbol count`` per line)."""

    bos, pad, eos, unk = BOS, PAD, EOS, UNK

    def __init__(self, path: str | Path) -> None:
        self.symbols = ["<s>", "<pad>", "</s>", "<unk>"]
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise DataError(f"{path}: dictionary missing") from None
        for n, line in enumerate(lines, 1):
            parts = line.rsplit(" ", 1)
            if len(parts) != 2:
                raise DataError(f"{path}:{n}: expected '<symbol> <count>', got {line!r}")
            word = parts[0].replace(" #fairseq:overwrite", "")
            self.symbols.append(word)
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, UNK) for w in text.split()] + [EOS]

    def decode(self, ids: Sequence[int]) -> str:
        """Tokenised text with the BPE joined (fairseq's ``--remove-bpe``)."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (BOS, PAD):
                words.append(self.symbols[i])
        return (" ".join(words) + " ").replace("@@ ", "").rstrip()


def read_indexed(prefix: str | Path) -> list[np.ndarray]:
    """The sentences of a fairseq indexed dataset ``<prefix>.idx`` / ``.bin`` (int64)."""
    idx, bin_ = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    if not idx.is_file() or not bin_.is_file():
        raise DataError(f"{prefix}: fairseq dataset .idx/.bin missing")
    head = idx.read_bytes()
    data = np.fromfile(bin_, dtype=np.uint8)
    try:
        if head.startswith(MMAP_MAGIC):
            return _read_mmap(head, data)
        if head.startswith(LEGACY_MAGIC):
            return _read_legacy(head, data)
    except (struct.error, ValueError, KeyError) as exc:
        raise DataError(f"{idx}: corrupt fairseq index ({exc})") from None
    raise DataError(f"{idx}: not a fairseq index (unknown magic {head[:9]!r})")


def _read_mmap(head: bytes, data: np.ndarray) -> list[np.ndarray]:
    off = len(MMAP_MAGIC)
    (version,), off = struct.unpack_from("<Q", head, off), off + 8
    if version != 1:
        raise ValueError(f"version {version}")
    code, (n,) = head[off], struct.unpack_from("<Q", head, off + 1)  # then the doc count
    dtype = np.dtype(DTYPES[code])
    off += 17
    sizes = np.frombuffer(head, np.int32, n, off)
    pointers = np.frombuffer(head, np.int64, n, off + 4 * n)
    return [data[p:p + s * dtype.itemsize].view(dtype).astype(np.int64)
            for p, s in zip(pointers.tolist(), sizes.tolist())]


def _read_legacy(head: bytes, data: np.ndarray) -> list[np.ndarray]:
    off = len(LEGACY_MAGIC) + 8
    code, _elem, n, s = struct.unpack_from("<QQQQ", head, off)
    dtype = np.dtype(DTYPES[code])
    off += 32
    data_offsets = np.frombuffer(head, np.int64, n + 1, off + 8 * (n + 1))
    values = data.view(dtype)
    return [values[a:b].astype(np.int64) for a, b in zip(data_offsets[:-1], data_offsets[1:])]


def find_root(folder: Path, src: str, tgt: str) -> Path:
    """The folder (``folder`` or one below it) holding ``dict.<src>.txt``."""
    for cand in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if (cand / f"dict.{src}.txt").is_file():
            return cand
    raise DataError(f"{folder}: no dict.{src}.txt (expected HAT's preprocessed layout: "
                    f"dict.{src}.txt, dict.{tgt}.txt, <split>.{src}-{tgt}.<lang>.bin/.idx)")


def check_layout(root: Path, src: str, tgt: str) -> None:
    """Every file fairseq's translation task reads; one line naming the first missing."""
    need = [f"dict.{src}.txt", f"dict.{tgt}.txt"] + [
        f"{s}.{src}-{tgt}.{lang}.{ext}" for s in SPLITS for lang in (src, tgt)
        for ext in ("bin", "idx")]
    for name in need:
        if not (root / name).is_file():
            raise DataError(f"{root}: {name} missing from the preprocessed data")


def load_fairseq(data_dir: str | Path, src: str, tgt: str):
    """A :class:`moebench.supernet.data.Corpus` of HAT's preprocessed data (joined
    dictionary: the source dictionary is used for both sides)."""
    from moebench.supernet.data import Corpus, Parallel

    root = find_root(Path(data_dir), src, tgt)
    check_layout(root, src, tgt)
    vocab = FairseqDict(root / f"dict.{src}.txt")
    splits, refs = {}, {}
    for split in SPLITS:
        s = read_indexed(root / f"{split}.{src}-{tgt}.{src}")
        t = read_indexed(root / f"{split}.{src}-{tgt}.{tgt}")
        if len(s) != len(t):
            raise DataError(f"{root}: {split} has {len(s)} source but {len(t)} target sentences")
        splits[split] = Parallel(s, t)
        refs[split] = [vocab.decode(x) for x in t]
    return Corpus(vocab, splits, refs, "fairseq")


def fetch_preprocessed(url: str, sha256: Optional[str], out_dir: str | Path, src: str,
                       tgt: str, progress: Optional[bool] = None) -> Path:
    """Download HAT's preprocessed ``.tgz`` and publish its contents as ``out_dir``
    atomically (staging folder next to it, checked, renamed); an existing valid
    ``out_dir`` is kept."""
    out = Path(out_dir)
    if out.is_dir():
        check_layout(find_root(out, src, tgt), src, tgt)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        archive = stage / "archive.tgz"
        digest = download(url, archive, sha256=sha256, progress=progress)
        try:
            with tarfile.open(archive, "r:*") as tf:
                tf.extractall(stage / "x", filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"corrupt archive from {url}: {' '.join(str(exc).split())}") from None
        root = find_root(stage / "x", src, tgt)
        check_layout(root, src, tgt)
        root.rename(out)
        from moebench.io import atomic_write_json

        atomic_write_json(out / "corpus.json", {"corpus": "fairseq", "url": url,
                                                "sha256": digest, "src_lang": src,
                                                "tgt_lang": tgt})
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("published %s", out)
    return out
