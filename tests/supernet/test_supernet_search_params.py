"""The search half of the supernet params: defaults valid, one-line errors, limits."""
import copy
from pathlib import Path

import pytest
import yaml

from moebench.errors import ParamsError
from moebench.supernet.search_params import (Limit, check_search_params, resolve_measure)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def section():
    return yaml.safe_load((ROOT / "params/supernet/search.yaml").read_text())["supernet"]


def test_default_params_are_valid(section):
    p = check_search_params(section)
    assert [lim.name for lim in p["search"]["limits"]] == ["q25", "q50", "q75"]
    assert p["search"]["compare"]["limit"] == "q50"
    assert p["predictor"].hidden == 400 and p["predictor"].layers == 4
    assert p["retrain"]["modes"] == ["inherited", "scratch"]


def test_limit_names_and_resolution():
    assert Limit(quantile=0.05).name == "q05" and Limit(ms=137.9).name == "137.9ms"
    assert Limit(ms=200).resolve(None) == 200.0
    assert Limit(quantile=0.5).resolve(lambda q: q * 10) == 5.0


def test_mean_lengths_resolve():
    spec = resolve_measure({"src_len": "mean", "decode_steps": "mean", "beam": 4}, 7.4, 8.6)
    assert (spec.src_len, spec.decode_steps, spec.beam) == (7, 9, 4)
    with pytest.raises(ParamsError, match="'mean' needs the corpus"):
        resolve_measure({"src_len": "mean"})


@pytest.mark.parametrize("path, value, message", [
    (["search", "limits"], [{"quantile": 1.5}], "supernet.search.limits[0].quantile: 1.5 must be a number in (0, 1)"),
    (["search", "limits"], [{"quantile": 0.5, "ms": 3}], "give exactly one of quantile"),
    (["search", "limits"], [{"ms": 100}, {"ms": 100.0}], "names a limit twice"),
    (["search", "variants"], ["gpt"], "supernet.search.variants: ['gpt'] must be a non-empty list"),
    (["search", "latency"], "flops", "supernet.search.latency: 'flops' is not one of predictor, gold"),
    (["search", "evolution", "parents"], 100, "supernet.search.evolution.parents: 100 is above population"),
    (["search", "compare", "limit"], {"quantile": 0.9}, "supernet.search.compare.limit: q90 is not one of"),
    (["search", "compare", "variant"], "mos_x", "compare.variant: 'mos_x' is not a searched variant"),
    (["latency", "measure", "src_len"], "median", "supernet.latency.measure.src_len: 'median' must be a positive integer"),
    (["latency", "dataset", "size"], 5, "supernet.latency.dataset.size: 5 is too few rows"),
    (["latency", "dataset", "repeats"], 500, "repeats: 500 is above size = 120"),
    (["latency", "device"], "tpu", "supernet.latency.device: 'tpu' is not one of cpu, cuda, auto"),
    (["predictor", "lr"], "1e-3", "supernet.predictor.lr: '1e-3' must be a positive number (YAML reads"),
    (["retrain", "modes"], ["finetune"], "supernet.retrain.modes: ['finetune'] must be"),
    (["retrain", "scratch", "lr"], 0, "supernet.retrain.scratch.lr: 0 must be a positive number"),
    (["retrain", "scratch", "epochs"], 3, "supernet.retrain.scratch.epochs: unknown key"),
    (["space", "qkv_dim"], 6, "supernet.space.encoder_self_attention_heads: 4 heads do not divide"),
])
def test_bad_values_are_one_line(section, path, value, message):
    bad = copy.deepcopy(section)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParamsError) as err:
        check_search_params(bad)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_section_is_named(section):
    bad = {k: v for k, v in section.items() if k != "predictor"}
    with pytest.raises(ParamsError, match="supernet.predictor: is missing"):
        check_search_params(bad)


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("task", ["wmt14_en_de", "wmt14_en_fr", "wmt19_en_de"])
@pytest.mark.parametrize("train", ["hat", "mos"])
def test_paper_search_configs(section, task, train):
    cfg = section
    for f in (f"params/paper/{train}_{task}.yaml", f"params/paper/hat_search_{task}.yaml"):
        cfg = _merge(cfg, yaml.safe_load((ROOT / f).read_text())["supernet"])
    p = check_search_params(cfg)
    assert p["space"].count() > 10**14  # HAT's space0
    assert [lim.name for lim in p["search"]["limits"]] == ["100ms", "150ms", "200ms"]
    evo = p["search"]["evolution"]
    assert (evo.population, evo.parents, evo.mutations, evo.crossovers, evo.mutation_prob,
            evo.iterations) == (125, 25, 50, 50, 0.3, 30)
    pred = p["predictor"]
    assert (pred.hidden, pred.layers, pred.lr, pred.steps, pred.lat_norm) == (
        400, 4, 1e-5, 5000, 200.0)
    m = p["latency"]["measure"]
    assert (m["src_len"], m["decode_steps"], m["beam"], m["warmup"], m["runs"]) == (30, 30, 5, 5, 20)
    assert p["latency"]["dataset"]["size"] == 2000
    assert p["retrain"]["scratch"]["steps"] == 40000 and p["retrain"]["scratch"]["warmup"] == 4000
    assert p["search"]["task"] == task.replace("_", ".", 1).replace("_", "-")
