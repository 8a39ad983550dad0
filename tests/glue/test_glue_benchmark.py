"""benchmarks/glue_step.py runs end to end on a tiny model and writes its documented JSON
(timings are never asserted)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(monkeypatch, tiny_bert):
    spec = importlib.util.spec_from_file_location("bench_glue_step",
                                                  ROOT / "benchmarks" / "glue_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tiny = {"B": 4, "L": 12, "model": str(tiny_bert), "config": None,
            "overrides": {"freeze_layers": 1, "moe_layers": [2]}}
    monkeypatch.setattr(mod, "SIZES", {"default": tiny, "base": {**tiny, "overrides": {
        "freeze_layers": 0, "moe_layers": [1]}}})
    return mod


def test_benchmark_writes_every_variant_and_the_floor(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        out = tmp_path / "bench.json"
        assert bench.main(["--iters", "1", "--warmup", "0", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())["rows"]
    assert [r["size"] for r in rows] == ["default", "base"]
    for r in rows:
        for key in ("dense_ms", "gmoe_ms", "mass_ms", "mass_phase_ms", "mass_nodrop_ms",
                    "ffn_ms", "ffn_drop_ms"):
            assert r[key] > 0, key
        assert r["mass_k"] >= 1
        assert r["mass_floor_ms"] == pytest.approx(
            r["dense_ms"] - r["ffn_ms"] + r["mass_k"] * r["ffn_drop_ms"])
        assert r["mass_nodrop_floor_ms"] == pytest.approx(
            r["dense_ms"] + (r["mass_k"] - 1) * r["ffn_ms"])
        assert r["mass_over_floor"] == pytest.approx(r["mass_ms"] / r["mass_floor_ms"])
    assert "mass/floor" in capsys.readouterr().out
