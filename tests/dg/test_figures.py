"""Figures: every figure writes PNG + PDF + CSV, and the CSV numbers are the tables' numbers.

Fixture: ``tests/data/mini_records.jsonl`` (see ``tests/data/make_fixtures.py`` for its
accuracy rule) and the frozen tables made from it in ``tests/data/expected_tables``.
Attention maps are checked on a tiny random timm ViT against timm's own (non-fused)
attention.
"""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from moebench.errors import DataError
from moebench.cli.dg import figures as figures_cli
from moebench.dg.reporting import attention, figdata
from moebench.dg.reporting.figures import FIGURE_KINDS, figure_stems, write_figures
from moebench.dg.reporting.records import load_results_file
from moebench.dg.reporting.routing import routing_rows
from moebench.dg.reporting.tables import build_report

DATA = Path(__file__).parent / "data"
MINI = DATA / "mini_records.jsonl"
EXPECTED = DATA / "expected_tables"


@pytest.fixture(scope="module")
def records():
    return load_results_file(MINI)


@pytest.fixture(scope="module")
def report(records):
    return build_report(records)


@pytest.fixture(scope="module")
def drawn(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, write_figures(records, out)


def _check_files(stem: Path) -> None:
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stem.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert stem.with_suffix(".csv").stat().st_size > 0


def test_every_figure_writes_png_pdf_csv(drawn):
    out, written = drawn
    stems = [s for group in figure_stems(["colored_digits", "rotated_digits"]).values() for s in group]
    assert len(stems) == 7
    for stem in stems:
        _check_files(out / stem)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # no temp files
    assert len(written) == 3 * len(stems)


def _expected(name: str) -> pd.DataFrame:
    return pd.read_csv(EXPECTED / name, dtype={"Algorithm": str}).set_index("Algorithm")


@pytest.mark.parametrize("selection", ["iid", "oracle"])
def test_accuracy_csv_equals_tables(drawn, records, tmp_path, selection):
    out = drawn[0] if selection == "iid" else tmp_path
    if selection != "iid":
        write_figures(records, out, selection=selection, kinds=["accuracy"])
    frame = pd.read_csv(out / f"accuracy_{selection}_colored_digits.csv", dtype={"domain": str})
    table, averages = _expected(f"{selection}_colored_digits.csv"), _expected(f"{selection}_averages.csv")
    assert set(frame.algorithm) == {"erm", "gmoe"} and (frame.selection == selection).all()
    for row in frame.itertuples():
        if row.domain == "Avg":
            mean, err = averages.loc[row.algorithm, "colored_digits"], averages.loc[row.algorithm, "colored_digits_err"]
        else:
            mean, err = table.loc[row.algorithm, row.domain], table.loc[row.algorithm, f"{row.domain}_err"]
        assert round(row.mean, 1) == pytest.approx(mean) and round(row.err, 1) == pytest.approx(err)
        assert row.n == 2


def test_accuracy_hand_checked_and_missing_cells(report):
    """colored_digits erm, test env 0: test acc 0.40 + 0.1 + 0.01 * trial -> 50.5 ± 0.354."""
    frame = figdata.accuracy_frame(report, "colored_digits", "iid").set_index(["algorithm", "domain"])
    assert frame.loc[("erm", "+90%"), "mean"] == pytest.approx(50.5)
    assert frame.loc[("erm", "+90%"), "err"] == pytest.approx(100 * 0.005 / np.sqrt(2), abs=1e-4)
    lodo = figdata.accuracy_frame(report, "rotated_digits", "lodo")  # singles only: no LODO result
    assert lodo["mean"].isna().all() and (lodo.n == 0).all()


def _timed(records):
    """Copy of the records with run-dependent step times and memory."""
    out = copy.deepcopy(records)
    for r in out:
        gmoe = r["algorithm"] == "gmoe"
        r["step_time"] = (0.5 if r["step"] == 0 else 0.02 + (0.01 if gmoe else 0.0))
        if r["dataset"] == "colored_digits":      # rotated_digits: records without data_time
            r["data_time"] = 0.5 if r["step"] == 0 else 0.004
        r["mem_gb"] = (2.0 if gmoe else 1.0) + 0.1 * r["trial_seed"] + (0.05 if r["step"] else 0.0)
    return out


def test_bubble_csv_has_time_memory_accuracy_per_algorithm(tmp_path, records):
    timed = _timed(records)
    write_figures(timed, tmp_path, kinds=["bubble"])
    frame = pd.read_csv(tmp_path / "bubble_iid.csv").set_index(["dataset", "algorithm"])
    averages = _expected("iid_averages.csv")
    assert list(frame.index) == [("colored_digits", "erm"), ("colored_digits", "gmoe"),
                                 ("rotated_digits", "erm")]
    # step 0 (warm-up window) is left out; memory = mean over runs of each run's peak
    assert frame.loc[("colored_digits", "erm"), "step_time"] == pytest.approx(0.02)
    assert frame.loc[("colored_digits", "gmoe"), "step_time"] == pytest.approx(0.03)
    assert frame.loc[("colored_digits", "gmoe"), "data_time"] == pytest.approx(0.004)
    assert np.isnan(frame.loc[("rotated_digits", "erm"), "data_time"])
    assert frame.loc[("colored_digits", "erm"), "mem_gb"] == pytest.approx(1.05 + 0.05)
    assert frame.loc[("colored_digits", "gmoe"), "mem_gb"] == pytest.approx(2.05 + 0.05)
    assert frame.loc[("colored_digits", "erm"), "n_runs"] == 6  # 3 single test envs x 2 trials
    for (dataset, algorithm), row in frame.iterrows():
        assert round(row.accuracy, 1) == pytest.approx(averages.loc[algorithm, dataset])
        assert round(row.accuracy_err, 1) == pytest.approx(averages.loc[algorithm, f"{dataset}_err"])


def test_curves_mean_over_trials(drawn):
    frame = pd.read_csv(drawn[0] / "curves_colored_digits.csv", dtype={"test_env": str})
    row = frame[(frame.algorithm == "erm") & (frame.test_env == "+90%") & (frame.step == 10)].iloc[0]
    # test: 0.50 / 0.51; val = mean out-acc of envs 1, 2 = 0.815 + 0.01 * trial
    assert (row.test_mean, row.val_mean, row.n) == (pytest.approx(50.5), pytest.approx(82.0), 2)
    assert row.val_err == pytest.approx(100 * 0.005 / np.sqrt(2), abs=1e-4)
    assert sorted(frame.step.unique()) == [0, 10]
    assert set(frame.test_env) == {"+90%", "+80%", "-90%"}


def test_expert_load_ranks_and_dropped_match_routing_table(drawn, report):
    frame = pd.read_csv(drawn[0] / "expert_load_iid_colored_digits.csv")
    assert set(frame.algorithm) == {"gmoe"}
    per_ckpt = frame.groupby(["layer", "trial_seed", "test_env", "step"])
    assert np.allclose(per_ckpt.load_pct.sum(), 100.0)
    assert (per_ckpt.load_pct.apply(lambda s: s.is_monotonic_decreasing)).all()
    block8 = frame[(frame.layer == "network.blocks.8.mlp") & (frame.expert_rank == 1)]
    # trial 0 is chosen at step 10 (load 25 %, dropped 5 %); over-fitting trial 1 at step 0
    assert set(zip(block8.trial_seed, block8.load_pct, block8.dropped_pct)) == {(0, 25.0, 5.0), (1, 50.0, 20.0)}
    for row in routing_rows(report):
        if (row.selection, row.dataset) == ("iid", "colored_digits"):
            sub = frame[(frame.layer == row.layer) & (frame.expert_rank == 1)]
            assert sub.dropped_pct.mean() == pytest.approx(row.dropped)
            assert sub.load_pct.mean() == pytest.approx(row.max_load)
    dense = pd.read_csv(drawn[0] / "expert_load_iid_rotated_digits.csv")
    assert dense.empty and list(dense.columns) == figdata.EXPERT_COLUMNS


def test_bad_selection_and_kind(records, tmp_path):
    with pytest.raises(ValueError, match="unknown selection method 'best'"):
        write_figures(records, tmp_path, selection="best")
    with pytest.raises(ValueError, match="unknown figure kind 'pie'"):
        write_figures(records, tmp_path, kinds=["pie"])
    assert "accuracy" in FIGURE_KINDS


def test_cli_figures_and_one_line_errors(tmp_path, capsys):
    out = tmp_path / "figs"
    assert figures_cli.main(["--records", str(MINI), "--out", str(out), "--selection", "lodo",
                             "--kinds", "accuracy", "curves"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "accuracy_lodo_colored_digits.png", "accuracy_lodo_rotated_digits.png",
        "curves_colored_digits.png", "curves_rotated_digits.png"]
    assert figures_cli.main(["--records", str(tmp_path / "nope.jsonl"), "--out", str(out)]) == 2
    assert figures_cli.main(["--model", str(tmp_path / "m.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == f"moebench.cli.dg.figures: error: records file not found: {tmp_path / 'nope.jsonl'}"
    assert err[-1] == "moebench.cli.dg.figures: error: --model needs --data (the run's dataset file)"


# --- attention maps -------------------------------------------------------------------------

def tiny_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=16,
                             depth=2, num_heads=2, mlp_ratio=2.0, **kwargs)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_equals_timm_attention(qk_norm):
    model = tiny_vit(qk_norm=qk_norm)
    images = torch.randn(3, 1, 8, 8)
    cls = attention.cls_attention(model, images)
    assert cls.shape == (3, 2, 5)  # heads, class token + 2x2 patches
    assert torch.allclose(cls.sum(-1), torch.ones(3, 2), atol=1e-6)
    attn = model.blocks[-1].attn
    attn.fused_attn = False  # timm then materialises softmax(q k^T) before attn_drop
    seen = []
    handle = attn.attn_drop.register_forward_hook(lambda _m, _i, out: seen.append(out))
    model.eval()
    with torch.no_grad():
        model(images)
    handle.remove()
    assert torch.allclose(cls, seen[0][:, :, 0], atol=1e-6)
    maps = attention.attention_maps(model, images)
    assert maps.shape == (3, 2, 2, 2)
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(3, 2), atol=1e-6)
    expected = cls[:, :, 1:] / cls[:, :, 1:].sum(-1, keepdim=True)
    assert torch.allclose(maps.flatten(2), expected, atol=1e-6)


def test_attention_needs_class_token():
    model = tiny_vit(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="no class token"):
        attention.attention_maps(model, torch.randn(1, 1, 8, 8))


def _fake_dataset(n: int = 6):
    g = torch.Generator().manual_seed(1)
    env = [(torch.rand(1, 8, 8, generator=g), i % 3) for i in range(n)]
    return SimpleNamespace(envs=[env, env], environments=["0", "15"])


def test_model_file_round_trip_and_cli(tmp_path, monkeypatch, capsys):
    model = tiny_vit()
    path = attention.save_model_file(model, tmp_path / "run" / "model.pt",
                                     {"algorithm": "gmoe", "dataset": "rotated_digits",
                                      "test_envs": [1]})
    loaded, meta = attention.load_model_file(path)
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(loaded(x), model.eval()(x)) and meta["test_envs"] == [1]
    with pytest.raises(ValueError, match="lacks 'dataset'"):
        attention.save_model_file(model, tmp_path / "bad.pt", {"algorithm": "erm", "test_envs": [0]})

    import moebench.dg.datasets
    monkeypatch.setattr(moebench.dg.datasets, "load_dataset", lambda name, p: _fake_dataset())
    out = tmp_path / "figs"
    assert figures_cli.main(["--model", str(path), "--data", "unused.npz", "--out", str(out),
                             "--n-images", "3"]) == 0
    stem = out / "attention_rotated_digits_gmoe"
    _check_files(stem)
    frame = pd.read_csv(stem.with_suffix(".csv"), dtype={"head": str})
    assert sorted(frame.image.unique()) == [0, 1, 2] and set(frame["head"]) == {"0", "1", "mean"}
    assert np.allclose(frame.groupby(["image", "head"]).weight.sum(), 1.0, atol=1e-5)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert figures_cli.main(["--model", str(tmp_path / "junk.pt"), "--data", "x", "--out", str(out)]) == 2
    assert "cannot read model file" in capsys.readouterr().err.strip().splitlines()[-1]


def test_trainer_state_dict_model_is_rebuilt_from_spec_json(tmp_path):
    """The trainer's --save-model writes network.state_dict() next to the run's spec.json."""
    import json

    from moebench.dg.algorithms import algorithm_class
    from helpers_hparams import tiny_hparams

    hparams = tiny_hparams("erm", depth=2)
    data = SimpleNamespace(envs=[[], [], []], environments=["a", "b", "c"], input_shape=(1, 8, 8),
                           num_classes=3)
    torch.manual_seed(0)
    algorithm = algorithm_class("erm")((1, 8, 8), 3, 2, hparams, n_steps=5)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(algorithm.network.state_dict(), run / "model.pt")
    with pytest.raises(DataError, match="needs the run's spec.json"):
        attention.load_model_file(run / "model.pt", data)
    spec = {"algorithm": "erm", "dataset": "rotated_digits", "test_envs": [0], "steps": 5,
            "hparams": hparams}
    (run / "spec.json").write_text(json.dumps(spec))
    network, meta = attention.load_model_file(run / "model.pt", data)
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(network(x), algorithm.network.eval()(x))
    assert meta["test_envs"] == [0]
    assert attention.attention_maps(network, x).shape == (2, hparams["num_heads"], 2, 2)
    (run / "spec.json").write_text(json.dumps({**spec, "hparams": {**hparams, "depth": 3}}))
    with pytest.raises(ValueError, match="does not fit the rebuilt erm network"):
        attention.load_model_file(run / "model.pt", data)


def test_expert_load_with_mass_and_mode_style_routing(tmp_path, records):
    """MASS records add ``active_experts`` (the load list has room for more experts); MoDE
    reports one dense-gate ``head`` layer. Both draw, and the CSV keeps what was recorded."""
    extra = []
    for r in records:
        if r["algorithm"] != "gmoe":
            continue
        mass = copy.deepcopy(r)
        mass["algorithm"] = mass["args"]["algorithm"] = "mass"
        mass["routing"] = {"blocks.8.mlp": {"load": [0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0],
                                            "dropped": 0.0, "tokens": 10, "active_experts": 4}}
        mode = copy.deepcopy(r)
        mode["algorithm"] = mode["args"]["algorithm"] = "mode"
        mode["routing"] = {"head": {"load": [0.5, 0.5], "dropped": 0.0, "tokens": 10}}
        extra += [mass, mode]
    written = write_figures(list(records) + extra, tmp_path, kinds=["expert_load"])
    frame = pd.read_csv(tmp_path / "expert_load_iid_colored_digits.csv")
    assert set(frame.algorithm) == {"gmoe", "mass", "mode"} and len(written) == 6
    mass = frame[frame.algorithm == "mass"]
    assert (mass.active_experts == 4).all() and (mass.n_experts == 8).all()
    assert frame[frame.algorithm == "gmoe"].active_experts.isna().all()
