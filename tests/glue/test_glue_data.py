"""Task loaders, offline: hub parquet files served from 127.0.0.1, local parquet and GLUE TSV
files, the embedded tasks and the checksummed Debian-package download of their corpora."""
from __future__ import annotations

import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from glue_testlib import DING, FORTUNES
from moebench.cli.glue import data as cli_data
from moebench.errors import DataError
from moebench.glue.corpora import corpus_path, corpus_source, deb_members
from moebench.glue.data import hub_url, prepare_task
from moebench.glue.embedded import ding_alternatives, fortune_texts
from moebench.glue.taskdata import read_task

REV = "0123456789abcdef0123456789abcdef01234567"


def _parquet(frame: dict) -> bytes:
    buf = io.BytesIO()
    pd.DataFrame(frame).to_parquet(buf)
    return buf.getvalue()


COLA = {"train": {"sentence": ["the cat sat.", "cat the sat."], "label": [1, 0], "idx": [0, 1]},
        "validation": {"sentence": ["a dog ran."], "label": [1], "idx": [0]}}
MNLI = {"train": {"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [0, 2],
                  "idx": [0, 1]},
        "validation_matched": {"premise": ["p3"], "hypothesis": ["h3"], "label": [1],
                               "idx": [0]}}


def _serve(base: str, routes: dict, task: str, splits: dict) -> None:
    for split, frame in splits.items():
        path = hub_url(task, split, REV, base)[len(base):]
        routes[path] = (200, _parquet(frame))


def _hub(base: str, tmp_path: Path) -> dict:
    return {"source": "hub", "revision": REV, "endpoint": base, "cache_dir": str(tmp_path / "hf")}


def _nothing_written(folder: Path) -> bool:
    return not folder.exists() and not list(folder.parent.glob(f".{folder.name}.staging-*"))


def test_hub_parquet_in_the_hub_layout(http_server, tmp_path):
    base, routes = http_server
    _serve(base, routes, "cola", COLA)
    _serve(base, routes, "mnli", MNLI)
    assert hub_url("cola", "train", REV, base).endswith(
        f"/datasets/nyu-mll/glue/resolve/{REV}/cola/train-00000-of-00001.parquet")
    cola = read_task(prepare_task("cola", _hub(base, tmp_path), tmp_path / "cola"))
    assert cola.train == [{"sentence": "the cat sat.", "label": 1},
                          {"sentence": "cat the sat.", "label": 0}]
    assert cola.meta["revision"] == REV and cola.meta["metric"] == "mcc"
    mnli = read_task(prepare_task("mnli", _hub(base, tmp_path), tmp_path / "mnli"))
    assert mnli.meta["validation"] == "validation_matched" and mnli.num_labels == 3
    assert mnli.validation == [{"premise": "p3", "hypothesis": "h3", "label": 1}]


@pytest.mark.parametrize("case, message", [
    ("missing_split", "cola: split 'validation' not found at http"),
    ("wrong_column", "has no column 'sentence' (has: text, label, idx)"),
    ("server_error", "cola: cannot download http"),
    ("unlabelled", "label -1 is not in [0, 2) (unlabelled test split?)"),
])
def test_hub_errors_are_one_line_and_leave_nothing(http_server, tmp_path, case, message):
    base, routes = http_server
    splits = {k: dict(v) for k, v in COLA.items()}
    if case == "wrong_column":
        splits["validation"] = {"text": ["x"], "label": [1], "idx": [0]}
    if case == "unlabelled":
        splits["validation"] = {"sentence": ["x"], "label": [-1], "idx": [0]}
    _serve(base, routes, "cola", splits)
    val = hub_url("cola", "validation", REV, base)[len(base):]
    if case == "missing_split":
        del routes[val]
    if case == "server_error":
        routes[val] = (500, b"")
    out = tmp_path / "data" / "cola"
    with pytest.raises(DataError) as err:
        prepare_task("cola", _hub(base, tmp_path), out)
    assert message in str(err.value) and "\n" not in str(err.value)
    if case == "server_error":
        assert "HTTP 500" in str(err.value)
    assert _nothing_written(out)


def test_local_parquet_copy_of_the_hub_layout(tmp_path):
    root = tmp_path / "glue_parquet"
    (root / "cola").mkdir(parents=True)
    for split, frame in COLA.items():
        (root / "cola" / f"{split}-00000-of-00001.parquet").write_bytes(_parquet(frame))
    task = read_task(prepare_task("cola", {"source": "parquet", "local": str(root)},
                                  tmp_path / "cola"))
    assert len(task.train) == 2 and task.validation[0]["sentence"] == "a dog ran."
    (root / "cola" / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(DataError, match="split 'validation' not found"):
        prepare_task("cola", {"source": "parquet", "local": str(root)}, tmp_path / "cola2")


def _tsv(path: Path, lines: list, bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(map(str, line)) for line in lines) + "\n"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())


def test_original_glue_tsv_files(tmp_path):
    root = tmp_path / "glue_data"
    _tsv(root / "CoLA/train.tsv", [["gj04", 1, "", "The cat \"sat\"."],
                                   ["gj04", 0, "*", "Cat sat the."]])
    _tsv(root / "CoLA/dev.tsv", [["gj04", 1, "", "A dog ran."]])
    mrpc_head = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    _tsv(root / "MRPC/train.tsv", [mrpc_head, [1, 1, 2, "He ran.", "He was running."]], bom=True)
    _tsv(root / "MRPC/dev.tsv", [mrpc_head, [0, 3, 4, "It is red.", "It was blue."]], bom=True)
    head = ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "gold_label"]
    _tsv(root / "MNLI/train.tsv", [head, [0, 1, 1, "g", "A man.", "A person.", "entailment"]])
    _tsv(root / "MNLI/dev_matched.tsv", [head, [0, 1, 1, "g", "A man.", "No one.",
                                                "contradiction"]])
    cola = read_task(prepare_task("cola", {"source": "tsv", "local": str(root)}, tmp_path / "c"))
    assert cola.train[0] == {"sentence": 'The cat "sat".', "label": 1}   # quotes are literal
    mrpc = read_task(prepare_task("mrpc", {"source": "tsv", "local": str(root)}, tmp_path / "m"))
    assert mrpc.train == [{"sentence1": "He ran.", "sentence2": "He was running.", "label": 1}]
    mnli = read_task(prepare_task("mnli", {"source": "tsv", "local": str(root)}, tmp_path / "n"))
    assert [r["label"] for r in mnli.train + mnli.validation] == [0, 2]
    _tsv(root / "MNLI/dev_matched.tsv", [head, [0, 1, 1, "g", "A.", "B.", "maybe"]])
    with pytest.raises(DataError, match=r"dev_matched.tsv:2: label 'maybe' is not one of"):
        prepare_task("mnli", {"source": "tsv", "local": str(root)}, tmp_path / "n2")
    with pytest.raises(DataError, match=r"RTE/train.tsv: not found \(split 'train' of rte\)"):
        prepare_task("rte", {"source": "tsv", "local": str(root)}, tmp_path / "r")


def test_ding_alternatives():
    alts = ding_alternatives(DING.splitlines()[2], 3, 12)
    assert alts == [["He comes late.", "He is coming late."]]  # one-alternative slot dropped
    assert ding_alternatives(DING.splitlines()[3], 3, 12) == []   # "sth." placeholder dropped
    assert ding_alternatives("# comment :: a b c.; d e f.", 3, 12) == []


def _fortune_dir(root: Path) -> Path:
    for name, text in FORTUNES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _embedded(task: str, installed: Path, **build) -> dict:
    defaults = {"fortunes_topic": {"topics": ["computers", "love"], "min_words": 3,
                                   "max_words": 12, "per_topic": 10,
                                   "validation_fraction": 0.34, "seed": 0},
                "ding_paraphrase": {"min_words": 3, "max_words": 10, "max_pairs_per_entry": 2,
                                    "max_entries": 100, "validation_fraction": 0.25, "seed": 0}}
    return {"source": "embedded", "build": {**defaults[task], **build}}


def test_embedded_fortunes_topic_from_installed_files(tmp_path):
    root = _fortune_dir(tmp_path / "fortunes")
    assert fortune_texts(root / "computers")[1] == \
        "A program is never finished, only released to users."   # attribution dropped
    corpora = {"fortunes": {"installed": str(root)}}
    task = read_task(prepare_task("fortunes_topic", _embedded("fortunes_topic", root),
                                  tmp_path / "ft", corpora=corpora))
    texts = [r["sentence"] for r in task.train + task.validation]
    assert "Real programmers write code at night." not in texts    # filed under two topics
    assert "Short." not in texts                                   # below min_words
    assert sorted({r["label"] for r in task.validation}) == [0, 1]  # stratified
    assert task.meta["label_names"] == ["computers", "love"]
    assert task.meta["corpus_from"] == "installed" and task.meta["labels"].startswith("real")


def test_embedded_ding_paraphrase_pairs_and_hard_negatives(tmp_path):
    path = tmp_path / "de-en"
    path.write_text(DING)
    task = read_task(prepare_task("ding_paraphrase", _embedded("ding_paraphrase", path),
                                  tmp_path / "dp", corpora={"ding": {"installed": str(path)}}))
    groups = {}
    for line in DING.splitlines():
        for g in ding_alternatives(line, 3, 10):
            for s in g:
                groups[s] = tuple(g)
    for split in (task.train, task.validation):
        pos = [r for r in split if r["label"] == 1]
        neg = [r for r in split if r["label"] == 0]
        assert len(pos) == len(neg) > 0
        assert all(groups[r["sentence1"]] == groups[r["sentence2"]] for r in pos)
        assert all(groups[r["sentence1"]] != groups[r["sentence2"]] for r in neg)
    train_s = {r["sentence1"] for r in task.train} | {r["sentence2"] for r in task.train}
    val_s = {r["sentence1"] for r in task.validation} | {r["sentence2"] for r in task.validation}
    assert not train_s & val_s                       # entries split, negatives within a split


def _deb(files: dict[str, bytes]) -> bytes:
    """A Debian package (ar archive) whose data.tar.xz holds ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    members = {"debian-binary": b"2.0\n", "control.tar.xz": lzma.compress(b""),
               "data.tar.xz": lzma.compress(buf.getvalue())}
    out = [b"!<arch>\n"]
    for name, data in members.items():
        out.append(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
        out.append(data + (b"\n" if len(data) % 2 else b""))
    return b"".join(out)


def test_corpus_download_from_the_debian_package(http_server, tmp_path):
    base, routes = http_server
    files = {f"usr/share/games/fortunes/{k}": v.encode() for k, v in FORTUNES.items()}
    deb = _deb(files)
    assert set(deb_members(deb)) == {"debian-binary", "control.tar.xz", "data.tar.xz"}
    routes["/pool/fortunes.deb"] = (200, deb)
    over = {"installed": str(tmp_path / "absent"), "urls": [f"{base}/gone.deb",
                                                            f"{base}/pool/fortunes.deb"],
            "sha256": hashlib.sha256(deb).hexdigest(), "size": len(deb)}
    path, where = corpus_path(corpus_source("fortunes", over), tmp_path / "cache")
    assert where == "downloaded" and (path / "love").read_text() == FORTUNES["love"]
    task = read_task(prepare_task("fortunes_topic", _embedded("fortunes_topic", path),
                                  tmp_path / "ft", corpora={"fortunes": over},
                                  cache_dir=tmp_path / "cache"))
    assert task.meta["corpus_from"] == "downloaded"
    bad = {**over, "sha256": "0" * 64}
    with pytest.raises(DataError, match="checksum mismatch for fortunes.deb") as err:
        corpus_path(corpus_source("fortunes", bad), tmp_path / "cache2")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache2" / "fortunes").exists()
    assert not list((tmp_path / "cache2").glob("*.part")) and \
        not (tmp_path / "cache2" / "fortunes.deb").exists()


def test_catalog_pins_the_debian_bookworm_packages():
    src = corpus_source("ding")
    assert src.installed == "/usr/share/trans/de-en" and src.size == 6276816
    assert src.urls[0] == "https://deb.debian.org/debian/pool/main/d/ding/trans-de-en_1.9-6_all.deb"
    with pytest.raises(DataError, match="unknown key 'url'"):
        corpus_source("ding", {"url": "x"})


def test_data_cli_one_line_errors(tmp_path, capsys):
    code = cli_data.main(["--task", "cola", "--spec", "{not json", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moebench.cli.glue.data: error: --spec: not JSON") and "\n" not in err
    code = cli_data.main(["--task", "cola", "--spec", json.dumps({"source": "ftp"}),
                          "--out", str(tmp_path / "x")])
    assert code == 2
    assert "glue.data.cola.source: 'ftp' is not one of" in capsys.readouterr().err
