"""Params of the supernet study: the default and the paper configs pass the schema and the
cross-key checks; the run grid; bad values are one-line errors naming file and key."""
from pathlib import Path

import pytest
import yaml

from moebench.config import ParamsError as ConfigError, check_section, load_schema
from moebench.errors import ParamsError
from moebench.supernet import train_params as tp
from moebench.supernet.space import Space

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = [ROOT / "params/supernet/search.yaml", ROOT / "params/supernet/supernet.yaml"]
PAPER = sorted((ROOT / "params/paper").glob("[hm][ao][ts]_wmt*.yaml"))


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _config(*files):
    cfg = {}
    for f in files:
        cfg = _merge(cfg, yaml.safe_load(Path(f).read_text()))
    return cfg


def _check(cfg, files):
    check_section(cfg, "supernet", load_schema(ROOT / "workflow/schemas", "supernet"), files)
    tp.check(cfg["supernet"])
    Space.from_params(cfg["supernet"]["space"])


def test_default_params_and_grid():
    cfg = _config(*DEFAULTS)
    _check(cfg, DEFAULTS)
    assert [k.name for k in tp.run_grid(cfg["supernet"])] == [
        "hat-s1", "mos_layer-e2-s1", "mos_neuron-e2-s1"]
    for k in tp.run_grid(cfg["supernet"]):
        assert tp.parse_run_name(k.name) == k


def test_paper_configs():
    assert [p.name for p in PAPER] == [
        "hat_wmt14_en_de.yaml", "hat_wmt14_en_fr.yaml", "hat_wmt19_en_de.yaml",
        "mos_wmt14_en_de.yaml", "mos_wmt14_en_fr.yaml", "mos_wmt19_en_de.yaml"]
    for p in PAPER:
        cfg = _config(*DEFAULTS, p)
        _check(cfg, DEFAULTS + [p])
        sn = cfg["supernet"]
        t = sn["train"]
        assert (t["max_updates"], t["lr"], t["warmup_updates"], t["max_tokens"]) == (
            40000, 1e-3, 10000, 4096)
        assert sn["model"]["dropout"] == 0.3 and sn["model"]["router_hidden"] == 128
        assert sn["data"]["corpus"] == "fairseq" and sn["data"]["fairseq"]["sha256"] is None
        assert sn["data"]["fairseq"]["url"].startswith("https://www.dropbox.com/s/")
        space = Space.from_params(sn["space"])
        assert space.super_dims()["encoder_embed_dim"] == 640 and space.qkv_dim == 512
        names = [k.name for k in tp.run_grid(sn)]
        assert names == (["hat-s1"] if p.name.startswith("hat") else [
            "mos_layer-e2-s1", "mos_layer-e6-s1", "mos_neuron-e2-s1", "mos_neuron-e6-s1"])


@pytest.mark.parametrize("override,message", [
    ({"train": {"lr": "1e-3"}}, r"supernet\.train\.lr: '1e-3' is invalid"),
    ({"model": {"variants": ["hat", "moe"]}}, r"supernet\.model\.variants\.1: 'moe' is invalid"),
    ({"eval": {"beams": 4}}, r"supernet\.eval\.beams: unknown key 'beams'"),
    ({"train": {"warmup_updates": 999}}, r"^supernet\.train\.warmup_updates: 999 is above "
                                         r"max_updates 100$"),
])
def test_bad_values_are_one_line_errors(tmp_path, override, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"supernet": override}))
    cfg = _config(*DEFAULTS, bad)
    with pytest.raises((ConfigError, ParamsError), match=message) as err:
        _check(cfg, DEFAULTS + [bad])
    assert "\n" not in str(err.value)
    if "unknown" in message or "invalid" in message:
        assert str(err.value).startswith(str(bad))
