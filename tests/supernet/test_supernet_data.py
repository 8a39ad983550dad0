"""Data: Ding parsing and split, the Debian-or-download path, SentencePiece, token batches,
fairseq binary data and HAT's preprocessed archives, all offline (127.0.0.1)."""
import gzip
import hashlib
import io
import json
import os
import random
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from moebench.errors import DataError
from moebench.supernet import corpus as ding
from moebench.supernet.data import Parallel, batch_indices, collate, token_batches
from moebench.supernet.load import load_corpus
from moebench.supernet.spm import EOS, PAD, SpmVocab, train_spm
from moebench.supernet.wmt import FairseqDict, fetch_preprocessed, read_indexed

DING = """# Version :: devel 2023-01-30
# License :: GPL Version 2 or later; GNU General Public License
Regen {m} [meteo.] | Es sieht nach Regen aus. :: rain | It looks like rain.
Hund {m} | Der Hund bellt sehr laut.; Der Hund kläfft laut. :: dog | The dog barks very loudly.
etw. tun | Er hat etw. getan, oder? :: to do sth. | He did sth., didn't he?
kurz | Zu kurz. :: short | Too short.
Katze {f} | Die Katze schläft auf dem Sofa! :: cat | The cat sleeps on the sofa!
Haus {n} | Das Haus ist sehr alt. | Das Haus ist neu. :: house | The house is very old.
Baum {m} | Der Baum ist sehr hoch. :: tree | The tree is very tall.
Baum {m} | Der Baum ist ziemlich hoch. :: tree | The tree is very tall.
Wer kommt heute zu uns? :: Who is coming to see us today?
"""


def test_ding_parsing_keeps_sentence_pairs_only():
    pairs = ding.parse_ding(DING.splitlines(True))
    assert pairs == sorted([
        ("It looks like rain.", "Es sieht nach Regen aus."),
        ("The cat sleeps on the sofa!", "Die Katze schläft auf dem Sofa!"),
        ("The dog barks very loudly.", "Der Hund bellt sehr laut."),
        ("The tree is very tall.", "Der Baum ist sehr hoch."),
        ("The tree is very tall.", "Der Baum ist ziemlich hoch."),
        ("Who is coming to see us today?", "Wer kommt heute zu uns?")])
    with pytest.raises(DataError, match=r"^x: no dictionary entries"):
        ding.parse_ding(["# only a comment\n"], "x")


def test_split_is_deterministic_and_keeps_sources_together():
    pairs = [(f"Sentence number {i}.", f"Satz Nummer {i} hier.") for i in range(40)]
    pairs += [("Sentence number 3.", "Satz Nummer drei hier.")]
    a = ding.split_pairs(pairs, 5, 7)
    shuffled = pairs[:]
    random.Random(0).shuffle(shuffled)
    assert ding.split_pairs(sorted(shuffled), 5, 7) == a
    src = {s: {e for e, _ in rows} for s, rows in a.items()}
    assert len(src["valid"]) == 5 and len(src["test"]) == 7 and len(src["train"]) == 28
    assert not (src["valid"] & src["test"]) and not (src["train"] & (src["valid"] | src["test"]))
    assert sum(len(r) for r in a.values()) == 41
    with pytest.raises(DataError, match=r"^the corpus has 40 distinct sources, too few"):
        ding.split_pairs(pairs, 30, 10)


class _Server:
    def __init__(self, files):
        self.files, self.log = files, []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.log.append(self.path)
                body, kind = outer.files.get(self.path, (None, None))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


def _sha(b):
    return hashlib.sha256(b).hexdigest()


def test_build_ding_from_the_debian_path(tmp_path):
    src = tmp_path / "de-en"
    src.write_text(DING, encoding="utf-8")
    m = ding.build_ding(tmp_path / "out", str(src), None, None, 1, 1)
    assert m["pairs"] == 6 and sum(m["sizes"].values()) == 6
    assert m["sha256"] == _sha(DING.encode())
    for split in ("valid", "test"):
        en, de = ding.read_split(tmp_path / "out", split)
        assert len(set(en)) == 1 and len(en) == len(de) == m["sizes"][split]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        ["corpus.json"] + [f"{s}.{l}" for s in ("train", "valid", "test") for l in ("en", "de")])


def test_build_ding_downloads_when_the_debian_file_is_absent(tmp_path):
    body = gzip.compress(DING.encode())
    with _Server({"/ding/de-en.txt.gz": (body, "application/gzip"),
                  "/page": (b"<html>", "text/html")}) as srv:
        url = f"{srv.url}/ding/de-en.txt.gz"
        with pytest.raises(DataError, match=r"^checksum mismatch for de-en.txt.gz: expected "
                                            r"sha256 0{64}, got " + _sha(body) + r" \(from .*\)$"):
            ding.build_ding(tmp_path / "bad", str(tmp_path / "absent"), url, "0" * 64, 1, 1)
        assert not (tmp_path / "bad" / ".download").exists() or not os.listdir(
            tmp_path / "bad" / ".download")
        m = ding.build_ding(tmp_path / "out", str(tmp_path / "absent"), url, _sha(body), 1, 1)
        assert m["pairs"] == 6 and m["sha256"] == _sha(body)
        n = len(srv.log)
        ding.build_ding(tmp_path / "out", str(tmp_path / "absent"), url, _sha(body), 1, 1)
        assert len(srv.log) == n  # the verified download is reused
        with pytest.raises(DataError, match=r"^download failed: .*/missing.gz: HTTP 404$"):
            ding.build_ding(tmp_path / "x", None, f"{srv.url}/missing.gz", None, 1, 1)
        with pytest.raises(DataError, match=r"got an HTML page instead of the file$"):
            ding.build_ding(tmp_path / "y", None, f"{srv.url}/page", None, 1, 1)
    with pytest.raises(DataError, match=r"^the Ding dictionary is not at '/nope' \(install"):
        ding.build_ding(tmp_path / "z", "/nope", None, None, 1, 1)


@pytest.mark.skipif(not Path(ding.DEBIAN_PATH).is_file(), reason="trans-de-en not installed")
def test_the_real_debian_dictionary():
    with open(ding.DEBIAN_PATH, encoding="utf-8") as fh:
        pairs = ding.parse_ding(fh)
    assert ("It looks like rain.", "Es sieht nach Regen aus.") in pairs
    assert 15_000 < len(pairs) < 25_000  # 18,899 in trans-de-en 1.9-6


def test_sentencepiece_model_has_fairseqs_special_ids(tmp_path):
    texts = [f"the {w} is here and there number {i}." for i, w in
             enumerate(["dog", "cat", "house", "tree", "Hund", "Katze", "Haus"] * 30)]
    model = train_spm(texts, tmp_path / "spm", vocab_size=60)
    v = SpmVocab(model)
    assert len(v) == 60 and (v.bos, v.pad, v.eos, v.unk) == (0, 1, 2, 3)
    ids = v.encode("the dog is here.")
    assert ids[-1] == EOS and PAD not in ids
    assert v.decode(ids + [PAD, PAD]) == "the dog is here."
    train_spm(texts, tmp_path / "again", vocab_size=60)
    assert (tmp_path / "again.vocab").read_bytes() == (tmp_path / "spm.vocab").read_bytes()
    with pytest.raises(DataError, match=r"SentencePiece model missing"):
        SpmVocab(tmp_path / "none.model")


def _toy(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return Parallel([np.append(rng.integers(4, 9, rng.integers(1, 12)), EOS) for _ in range(n)],
                    [np.append(rng.integers(4, 9, rng.integers(1, 12)), EOS) for _ in range(n)])


def test_token_batches_respect_the_budget_and_cover_every_sentence_once():
    data = _toy()
    groups = batch_indices(data, 40, seed=1)
    assert sorted(i for g in groups for i in g) == list(range(50))
    for g in groups:
        longest = max(max(len(data.src[i]), len(data.tgt[i])) for i in g)
        assert longest * len(g) <= 40
    assert groups == batch_indices(data, 40, seed=1) and groups != batch_indices(data, 40, seed=2)
    b = collate(data, groups[0])
    i0 = groups[0][0]
    assert b.target[0, :len(data.tgt[i0])].tolist() == data.tgt[i0].tolist()
    assert b.prev[0, 0] == EOS and b.prev[0, 1:len(data.tgt[i0])].tolist() == data.tgt[i0][:-1].tolist()
    assert b.ntokens == sum(len(data.tgt[i]) for i in groups[0])
    assert int(b.target.ne(PAD).sum()) == b.ntokens
    ordered = token_batches(data, 40)  # evaluation: length order, no shuffle
    assert [len(x.index) for x in ordered] == [len(g) for g in batch_indices(data, 40)]
    with pytest.raises(DataError, match=r"^a sentence of 12 tokens does not fit max_tokens 10$"):
        batch_indices(data, 10)


def _write_mmap(prefix: Path, sents, dtype=np.uint16, code=8):
    data = b"".join(np.asarray(s, dtype=dtype).tobytes() for s in sents)
    sizes = np.array([len(s) for s in sents], np.int32)
    ptr = np.concatenate([[0], np.cumsum(sizes[:-1]) * np.dtype(dtype).itemsize]).astype(np.int64)
    head = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", code)
    head += struct.pack("<QQ", len(sents), len(sents) + 1)
    head += sizes.tobytes() + ptr.tobytes() + np.arange(len(sents) + 1, dtype=np.int64).tobytes()
    Path(f"{prefix}.idx").write_bytes(head)
    Path(f"{prefix}.bin").write_bytes(data)


WORDS = ["the", "hou@@", "se", "is", "old", "das", "Hau@@", "s", "ist", "alt", "."]


def _hat_archive(top="", drop=None):
    """A tiny archive in the layout of HAT's *.preprocessed.tgz (fairseq binaries)."""
    files = {"dict.en.txt": "".join(f"{w} {100 - i}\n" for i, w in enumerate(WORDS)).encode()}
    files["dict.de.txt"] = files["dict.en.txt"]
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        en = [[4, 5, 6, 7, 8, 14, 2]] * n  # "the hou@@ se is old ." + eos
        de = [[9, 10, 11, 12, 13, 14, 2]] * n
        for lang, sents in (("en", en), ("de", de)):
            p = tmp / f"hat-{os.getpid()}-{split}.{lang}"
            _write_mmap(p, sents)
            for ext in ("bin", "idx"):
                files[f"{split}.en-de.{lang}.{ext}"] = Path(f"{p}.{ext}").read_bytes()
                Path(f"{p}.{ext}").unlink()
    if drop:
        files.pop(drop)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body in files.items():
            info = tarfile.TarInfo(top + name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_fairseq_indexed_dataset_and_dictionary(tmp_path):
    sents = [[5, 6, 2], [7, 2], list(range(4, 11)) + [2]]
    _write_mmap(tmp_path / "x", sents)
    assert [s.tolist() for s in read_indexed(tmp_path / "x")] == sents
    _write_mmap(tmp_path / "y", sents, np.int32, 4)
    assert [s.tolist() for s in read_indexed(tmp_path / "y")] == sents
    (tmp_path / "z.idx").write_bytes(b"garbage!" * 4)
    (tmp_path / "z.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"z.idx: not a fairseq index"):
        read_indexed(tmp_path / "z")
    (tmp_path / "dict.en.txt").write_text("".join(f"{w} 1\n" for w in WORDS))
    d = FairseqDict(tmp_path / "dict.en.txt")
    assert len(d) == 15 and d.decode([4, 5, 6, 7, 8, 14, 2, 1]) == "the house is old ."
    assert d.encode("the house") == [4, 3, 2]


@pytest.mark.parametrize("top", ["", "wmt16_en_de/"])
def test_hat_preprocessed_archive_download_and_load(tmp_path, top):
    body = _hat_archive(top)
    with _Server({"/s/x/wmt16_en_de.preprocessed.tgz": (body, "application/octet-stream")}) as srv:
        url = f"{srv.url}/s/x/wmt16_en_de.preprocessed.tgz"
        out = fetch_preprocessed(url, _sha(body), tmp_path / "wmt16_en_de", "en", "de")
        assert sorted(os.listdir(tmp_path)) == ["wmt16_en_de"]  # no staging or part left
        c = load_corpus("fairseq", out, src_lang="en", tgt_lang="de")
        assert len(c.splits["train"]) == 6 and len(c.splits["test"]) == 2
        assert c.references["test"] == ["das Haus ist alt ."] * 2
        assert c.vocab.decode(c.splits["valid"].src[0]) == "the house is old ."
        assert json.loads((out / "corpus.json").read_text())["sha256"] == _sha(body)
        n = len(srv.log)
        fetch_preprocessed(url, _sha(body), tmp_path / "wmt16_en_de", "en", "de")
        assert len(srv.log) == n


def test_hat_archive_failures_leave_nothing_behind(tmp_path):
    broken = _hat_archive(drop="test.en-de.de.idx")
    good = _hat_archive()
    with _Server({"/a.tgz": (broken, "application/octet-stream"),
                  "/b.tgz": (good[:len(good) // 2], "application/octet-stream"),
                  "/c.tgz": (good, "application/octet-stream")}) as srv:
        with pytest.raises(DataError, match=r"test.en-de.de.idx missing from the preprocessed"):
            fetch_preprocessed(f"{srv.url}/a.tgz", None, tmp_path / "a", "en", "de")
        with pytest.raises(DataError, match=r"^corrupt archive from "):
            fetch_preprocessed(f"{srv.url}/b.tgz", None, tmp_path / "b", "en", "de")
        with pytest.raises(DataError, match=r"^checksum mismatch for archive.tgz"):
            fetch_preprocessed(f"{srv.url}/c.tgz", "1" * 64, tmp_path / "c", "en", "de")
    assert os.listdir(tmp_path) == []
