"""Hyperparameter resolution, DomainBed seeds, and the sweep grid."""
import copy

import pytest

from moebench.hparams import HparamsError, random_hparams, resolve_hparams, seed_hash
from moebench.dg.sweep import RunSpec, batch_runs, enumerate_runs, enumerate_test_envs

SECTION = {
    "defaults": {"lr": 1e-3, "batch_size": 32, "depth": 6},
    "datasets": {"ds_a": {"lr": 5e-4, "num_experts": 4}},
    "algorithms": {"erm": {}, "gmoe": {"num_experts": 6, "aux_weight": 0.01}},
    "dataset_algorithm": {"ds_a": {"gmoe": {"aux_weight": 0.1}}},
    "ranges": {"defaults": {"lr": {"log10_uniform": [-4, -2]}}, "gmoe": {"aux_weight": {"choice": [0.1, 0.2]}}},
}
CONFIG = {
    "sweep": {"datasets": ["ds_a", "ds_b"], "algorithms": ["erm", "gmoe"], "trial_seeds": [0, 1],
              "n_hparams": 2, "test_envs": "singles_and_pairs", "holdout_fraction": 0.2},
    "datasets": {"ds_a": {"path": "a", "steps": 10, "checkpoint_freq": 5, "build": {"seed": 0}},
                 "ds_b": {"path": "b", "steps": 20, "checkpoint_freq": 5}},
    "hparams": SECTION,
}
ENV_COUNTS = {"ds_a": 4, "ds_b": 2}.__getitem__


def test_seed_hash_matches_domainbed_golden_values():
    assert seed_hash("PACS", "GMOE", [0], 0, 0) == 1433477475
    assert seed_hash(0, 0) == 894182419
    assert seed_hash(1, 0) == 785910682


def test_resolution_order_defaults_dataset_algorithm_pair():
    hp = resolve_hparams(SECTION, "ds_a", "gmoe")
    assert hp == {"lr": 5e-4, "batch_size": 32, "depth": 6, "num_experts": 4, "aux_weight": 0.1}
    # dataset overrides apply only to keys the algorithm knows
    assert resolve_hparams(SECTION, "ds_a", "erm") == {"lr": 5e-4, "batch_size": 32, "depth": 6}
    assert resolve_hparams(SECTION, "ds_b", "gmoe")["num_experts"] == 6


@pytest.mark.parametrize("where, patch", [
    ("hparams.datasets.ds_a", {"datasets": {"ds_a": {"lrr": 1}}}),
    ("hparams.dataset_algorithm.ds_a.erm", {"dataset_algorithm": {"ds_a": {"erm": {"num_experts": 2}}}}),
    ("hparams.ranges.gmoe", {"ranges": {"gmoe": {"nope": {"uniform": [0, 1]}}}}),
])
def test_unknown_keys_are_one_line_errors(where, patch):
    section = copy.deepcopy(SECTION)
    section.update(patch)
    with pytest.raises(HparamsError) as exc:
        resolve_hparams(section, "ds_a", "erm" if "erm" in where else "gmoe", hparams_seed=1)
    assert where in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_algorithm_section():
    with pytest.raises(HparamsError, match="no hparams.algorithms entry for algorithm 'mass'"):
        resolve_hparams(SECTION, "ds_a", "mass")


def test_random_draws_are_seeded_by_hparams_and_trial_seed():
    a = random_hparams(SECTION, "gmoe", 1, 0)
    assert a == random_hparams(SECTION, "gmoe", 1, 0)
    assert a != random_hparams(SECTION, "gmoe", 1, 1)
    assert 1e-4 <= a["lr"] <= 1e-2 and a["aux_weight"] in (0.1, 0.2)
    assert set(random_hparams(SECTION, "erm", 1, 0)) == {"lr"}
    # hparams_seed 0 means the defaults, untouched
    assert resolve_hparams(SECTION, "ds_b", "gmoe", 0, 3)["lr"] == 1e-3


def test_test_env_sets_singles_and_pairs():
    assert enumerate_test_envs(3, "singles_and_pairs") == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    assert enumerate_test_envs(6, "singles_and_pairs").__len__() == 6 + 15
    assert enumerate_test_envs(2, "singles_and_pairs") == [(0,), (1,)]  # pairs need >= 3 envs
    assert enumerate_test_envs(4, [[2, 1]]) == [(1, 2)]
    with pytest.raises(ValueError, match="out of range"):
        enumerate_test_envs(3, [[3]])


def test_enumerate_runs_counts_and_identity():
    runs = enumerate_runs(CONFIG, ENV_COUNTS)
    # ds_a: 4 singles + 6 pairs; ds_b: 2 singles; x 2 algorithms x 2 trials x 2 hparams seeds
    assert len(runs) == (10 + 2) * 2 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    r = runs[0]
    assert r.seed == seed_hash(r.dataset, r.algorithm, list(r.test_envs), r.hparams_seed, r.trial_seed)
    assert r.run_dir("results/runs").parts[-3:] == ("ds_a", "erm", r.run_id)
    # the identity is path-free and round-trips
    assert "path" not in str(r.identity()) and RunSpec.from_dict(r.identity()).run_id == r.run_id
    # same config -> same ids on every call
    assert [x.run_id for x in enumerate_runs(CONFIG, ENV_COUNTS)] == [x.run_id for x in runs]


def test_batches_group_by_dataset_and_algorithm():
    runs = enumerate_runs(CONFIG, ENV_COUNTS)
    batches = batch_runs(runs, 15)
    assert sorted(batches)[:3] == ["ds_a/erm/b000", "ds_a/erm/b001", "ds_a/erm/b002"]
    assert sum(len(v) for v in batches.values()) == len(runs)
    assert all(len(v) <= 15 and len({(r.dataset, r.algorithm) for r in v}) == 1 for v in batches.values())
    with pytest.raises(ValueError):
        batch_runs(runs, 0)
