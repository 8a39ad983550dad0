"""Parse-time checks of the DomainBed params against the declarations: every declared
hyperparameter of every algorithm rejects a value outside its bounds / choices and a value of
the wrong type with one line naming the file and the key, before any job starts."""
import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from moebench.declare import Hp
from moebench.dg import study
from moebench.dg.params import algorithm_order, validate
from moebench.errors import ParamsError

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "workflow" / "schemas"
BASE = [ROOT / "params" / "studies.yaml", ROOT / "params" / "report.yaml"] + [
    ROOT / "params" / "dg" / f"{s}.yaml" for s in ("sweep", "datasets", "hparams")]


def base_config() -> dict:
    config: dict = {}
    for f in BASE:
        update_config(config, yaml.safe_load(f.read_text()))
    return config


def outside(hp: Hp):
    """A value of the right type that breaks the declared bounds or choices (None if none)."""
    num = hp.types[0] in (int, float)
    if hp.choices is not None:
        return "not-a-choice"
    if isinstance(hp.max, str):
        return 10**6
    if isinstance(hp.min, (int, float)) and num:
        return hp.min if hp.min_open else hp.min - 1
    if isinstance(hp.max, (int, float)) and num:
        return hp.max if hp.max_open else hp.max + 1
    return None


def wrong_type(hp: Hp):
    types = set(hp.types)
    if types & {int, float}:
        return "fast"
    if bool in types:
        return "yes"
    return 3.5


CASES = []
for _alg, _table in study.hparam_tables().items():
    for _key, _hp in _table.items():
        for _kind, _value in (("bounds", outside(_hp)), ("type", wrong_type(_hp))):
            if _value is not None:
                CASES.append(pytest.param(_alg, _key, _value, id=f"{_alg}.{_key}.{_kind}"))


@pytest.mark.parametrize("algorithm, key, value", CASES)
def test_every_declared_hparam_rejects_bad_values_naming_file_and_key(tmp_path, algorithm, key,
                                                                      value):
    override = tmp_path / "my.yaml"
    override.write_text(yaml.safe_dump(
        {"hparams": {"algorithms": {algorithm: {key: value}}}}))
    config = base_config()
    update_config(config, yaml.safe_load(override.read_text()))
    with pytest.raises(ParamsError) as err:
        validate(config, SCHEMAS, [*map(str, BASE), str(override)])
    message = str(err.value)
    assert message.startswith(f"{override}: hparams.algorithms.{algorithm}.{key}: "), message
    assert "\n" not in message


@pytest.mark.parametrize("patch, message", [
    ({"hparams": {"algorithms": {"gmoe": {"top_k": 0}}}},
     "my.yaml: hparams.algorithms.gmoe.top_k: 0 is below the minimum 1"),
    ({"hparams": {"algorithms": {"mass": {"mass_tau": 2.0}}}},
     "my.yaml: hparams.algorithms.mass.mass_tau: 2.0 is above the maximum 1"),
    ({"hparams": {"algorithms": {"gmoe": {"lr": "fast"}}}},
     "my.yaml: hparams.algorithms.gmoe.lr: 'fast' must be a number"),
    ({"hparams": {"algorithms": {"gmoe": {"top_k": 7}}}},
     "my.yaml: hparams.algorithms.gmoe.top_k: 7 is above the maximum num_experts = 6"),
    ({"hparams": {"defaults": {"lr": -1.0}}}, "my.yaml: hparams.defaults.lr: -1.0 must be above 0"),
    ({"hparams": {"datasets": {"colored_digits": {"depth": 0}}}},
     "my.yaml: hparams.datasets.colored_digits.depth: 0 is below the minimum 1"),
    ({"hparams": {"algorithms": {"erm": {"top_k": 2}}}},
     "my.yaml: hparams.algorithms.erm.top_k: unknown hparam 'top_k'"),
    ({"hparams": {"ranges": {"gmoe": {"top_k": {"choice": [1, 9]}}}}, "sweep": {"n_hparams": 2}},
     "my.yaml: hparams.ranges.gmoe.top_k: the draw of hparams seed 1"),
    ({"hparams": {"ranges": {"mass": {"mass_tau": {"uniform": [0.2, 1.5]}}}}},
     "my.yaml: hparams.ranges.mass.mass_tau: the range {'uniform': [0.2, 1.5]} reaches 1.5 is above"),
    ({"sweep": {"algorithms": ["erm", "gmoee"]}},
     "my.yaml: sweep.algorithms[1]: unknown algorithm 'gmoee'; valid: erm, gmoe, mass, mode, soft_moe"),
    ({"report": {"algorithm_order": ["gmoe", "nope"]}}, "my.yaml: report.algorithm_order.1: 'nope'"),
    ({"sweep": {"loader_workers": -1}}, "my.yaml: sweep.loader_workers: -1 is invalid"),
    ({"sweep": {"loader_workers": "many"}}, "my.yaml: sweep.loader_workers: 'many' is invalid"),
    ({"sweep": {"eval_batch_size": 0}}, "my.yaml: sweep.eval_batch_size: 0 is invalid"),
    ({"sweep": {"eval_batch_size": "big"}},
     "my.yaml: sweep.eval_batch_size: 'big' is invalid ('big' is not of type 'integer')"),
])
def test_cross_field_ranges_and_names_are_one_line(tmp_path, patch, message):
    override = tmp_path / "my.yaml"
    override.write_text(yaml.safe_dump(patch))
    config = base_config()
    update_config(config, copy.deepcopy(patch))
    with pytest.raises(ParamsError) as err:
        validate(config, SCHEMAS, [*map(str, BASE), str(override)])
    assert message.replace("my.yaml", str(override)) in str(err.value)
    assert "\n" not in str(err.value)


def test_the_default_params_are_valid_and_the_report_follows_the_sweep_order():
    config = base_config()
    runs = validate(config, SCHEMAS, list(map(str, BASE)))
    assert len(runs) == 270
    assert algorithm_order(config) == config["sweep"]["algorithms"]
    config["report"]["algorithm_order"] = ["mass", "erm"]
    assert algorithm_order(config) == ["mass", "erm"]


def test_loader_options_are_how_not_what_run_ids_do_not_change():
    config = base_config()
    runs = validate(config, SCHEMAS, list(map(str, BASE)))
    assert (config["sweep"]["loader_workers"], config["sweep"]["eval_batch_size"]) == ("auto", 64)
    update_config(config, {"sweep": {"loader_workers": 2, "eval_batch_size": 128}})
    assert [r.run_id for r in validate(config, SCHEMAS, list(map(str, BASE)))] == [r.run_id for r in runs]
