"""End to end: the real workflow on tiny params (studies: [supernet]) builds part 1's supernet
table, headline and figure (target supernet_all; the search stage of part 2 has its own test),
which the final results/tables rule gathers; bad params stop it with one line."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NOUNS = [("dog", "Hund", "Der"), ("house", "Haus", "Das"), ("tree", "Baum", "Der"),
         ("car", "Auto", "Das"), ("garden", "Garten", "Der"), ("book", "Buch", "Das"),
         ("window", "Fenster", "Das"), ("table", "Tisch", "Der")]
ADJS = [("old", "alt"), ("new", "neu"), ("big", "groß"), ("small", "klein"),
        ("red", "rot"), ("green", "grün"), ("very quiet", "sehr ruhig"),
        ("quite cheap", "ziemlich billig")]
TINY = {
    "studies": ["supernet"],
    "supernet": {
        "space": {"encoder_embed_dim": [16, 12], "encoder_layer_num": [2],
                  "encoder_ffn_embed_dim": [32, 16], "encoder_self_attention_heads": [2],
                  "decoder_embed_dim": [16, 12], "decoder_layer_num": [2, 1],
                  "decoder_ffn_embed_dim": [32, 16], "decoder_self_attention_heads": [2],
                  "decoder_ende_attention_heads": [2], "decoder_arbitrary_ende_attn": [-1, 1],
                  "qkv_dim": 8, "feature_norm": [16, 2, 32, 2, 16, 2, 32, 2, 2, 2]},
        "device": "cpu",
        "data": {"valid_size": 12, "test_size": 10, "spm": {"vocab_size": 60}},
        "model": {"router_hidden": 8},
        "train": {"max_updates": 6, "warmup_updates": 2, "eval_every": 3, "max_tokens": 256},
        "eval": {"sampled_archs": 1, "test_sentences": 6, "max_len_b": 4},
    },
}


def _ding(path: Path) -> None:
    lines = ["# Version :: test", "# License :: GPL Version 2 or later"]
    for en, de, art in NOUNS:
        for a_en, a_de in ADJS:
            lines.append(f"{de} {{m}} | {art} {de} ist heute {a_de}. :: {en} | "
                         f"The {en} is {a_en} today.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _setup(tmp_path: Path, extra=None) -> Path:
    for name in ("Snakefile", "workflow", "params"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    _ding(tmp_path / "de-en")
    over = json.loads(json.dumps(TINY))
    over["supernet"]["data"]["ding"] = {"path": str(tmp_path / "de-en"), "url": None}
    for k, v in (extra or {}).items():
        over["supernet"].setdefault(k, {}).update(v)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(over))
    return tmp_path / "tiny.yaml"


def _snakemake(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile",
                           "tiny.yaml", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_workflow_builds_the_supernet_table_and_figure(tmp_path):
    _setup(tmp_path)
    out = _snakemake(tmp_path, "--", "supernet_all")
    assert out.returncode == 0, out.stderr[-3000:]
    t = tmp_path / "results/supernet/tables"
    txt = (t / "supernet.txt").read_text()
    for label in ("hat", "mos_layer E=2", "mos_neuron E=2"):
        assert label in txt
    assert {"largest", "smallest", "sampled_0"} <= {
        line.split()[0] for line in txt.splitlines()[4:] if line.strip()}
    for ext in ("png", "pdf", "csv"):
        assert (tmp_path / f"results/figures/supernet_subnets.{ext}").stat().st_size > 0
    runs = sorted((tmp_path / "results/supernet/runs").glob("*/*/results.jsonl"))
    assert len(runs) == 3
    for r in runs:
        recs = [json.loads(x) for x in r.read_text().splitlines()]
        assert [x["step"] for x in recs] == [3, 6]
        assert (r.parent / "done").exists() and (r.parent / "model.pt").exists()
        assert "valid_loss_largest" in recs[-1] and "valid_loss_smallest" in recs[-1]
    ev = json.loads((tmp_path / "results/supernet/eval/hat-s1.json").read_text())
    beam = ev["archs"]["largest"]["beam"]
    assert beam["bleu_signature"].startswith("nrefs:1|") and beam["decode"]["beam"] == 4
    assert "supernet/hat/loss" in json.loads((t / "headline.json").read_text())
    again = _snakemake(tmp_path, "-n", "--", "supernet_all")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    final = _snakemake(tmp_path, "-n", "--", "results/tables")  # gathers these tables
    assert final.returncode == 0 and "supernet_tables" not in final.stdout


@pytest.mark.parametrize("extra,message", [
    ({"train": {"lr": "1e-3"}}, r"tiny.yaml: supernet.train.lr: '1e-3' is invalid"),
    ({"space": {"encoder_embed_dim": []}}, r"supernet.space.encoder_embed_dim: \[\] must be a "
                                           r"non-empty list"),
])
def test_bad_params_stop_the_workflow_with_one_line(tmp_path, extra, message):
    assert_one_params_error(tmp_path, extra, message)


def assert_one_params_error(tmp_path, extra, message):
    """A dry run on ``extra`` params fails with exactly one params-error line matching
    ``message``."""
    import re

    _setup(tmp_path, extra)
    out = _snakemake(tmp_path, "-n", "--", "results/tables")
    lines = [x for x in out.stderr.splitlines() if x.startswith("moebench: params error:")]
    assert out.returncode == 1 and len(lines) == 1, out.stderr[-2000:]
    assert re.search(message, lines[0]), lines[0]
