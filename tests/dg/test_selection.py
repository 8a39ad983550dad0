"""Model selection on hand-made records with known answers (DomainBed's rules, spec §2.6)."""
from __future__ import annotations

import math

import pytest

from moebench.dg.reporting.records import normalise_record
from moebench.dg.selection import (
    IIDAccuracySelectionMethod as IID,
    LeaveOneOutSelectionMethod as LODO,
    OracleSelectionMethod as Oracle,
    SELECTION_METHODS,
    get_selection_method,
    group_records,
    select_all,
)


def make_record(step, hparams_seed, envs, trial_seed=0, dataset="toy", algorithm="erm"):
    """A DomainBed-style record; ``envs`` is a list of (in_acc, out_acc, is_test_env)."""
    raw = {"args": {"test_envs": [i for i, e in enumerate(envs) if e[2]], "dataset": dataset,
                    "algorithm": algorithm, "trial_seed": trial_seed, "hparams_seed": hparams_seed},
           "step": step}
    for i, (in_acc, out_acc, _) in enumerate(envs):
        raw[f"env{i}_in_acc"] = in_acc
        raw[f"env{i}_out_acc"] = out_acc
    return normalise_record(raw)


def single(step, hp, test_in, test_out, train_outs, trial=0, algorithm="erm"):
    """Single-test-env (env 0) record; training envs get ``train_outs`` as out accuracies."""
    envs = [(test_in, test_out, True)] + [(0.0, o, False) for o in train_outs]
    return make_record(step, hp, envs, trial, algorithm=algorithm)


def pair(step, hp, other, held_out_in, n_envs=3, trial=0):
    """Record of the run with test envs {0, other}; env ``other`` has in-acc ``held_out_in``."""
    envs = [(0.0, 0.0, i in (0, other)) for i in range(n_envs)]
    envs[other] = (held_out_in, 0.0, True)
    return make_record(step, hp, envs, trial)


# --- DomainBed's golden cases -------------------------------------------------------------

def test_iid_golden_case():
    records = [make_record(0, 0, [(0.1, 0.2, True), (0.5, 0.6, False), (0.6, 0.7, False)]),
               make_record(1, 0, [(0.3, 0.4, True), (0.6, 0.7, False), (0.7, 0.8, False)])]
    acc = IID.run_acc(records)
    assert (acc.val_acc, acc.test_acc, acc.step) == (0.75, 0.3, 1)


def test_lodo_golden_case():
    records = [make_record(0, 0, [(0.1, 0.0, True), (0.0, 0.0, False), (0.0, 0.0, False)]),
               make_record(0, 0, [(0.0, 0.0, True), (0.5, 0.0, True), (0.0, 0.0, False)]),
               make_record(0, 0, [(0.0, 0.0, True), (0.0, 0.0, False), (0.6, 0.0, True)])]
    acc = LODO.run_acc(records)
    assert acc.val_acc == pytest.approx(0.55, abs=1e-12)
    assert acc.test_acc == 0.1


def test_lodo_golden_case_missing_pair_gives_none():
    records = [make_record(0, 0, [(0.1, 0.0, True), (0.0, 0.0, False), (0.0, 0.0, False)]),
               make_record(0, 0, [(0.0, 0.0, True), (0.5, 0.0, True), (0.0, 0.0, False)])]
    assert LODO.run_acc(records) is None


@pytest.mark.parametrize("second,expected", [((0.65, 0.60), (0.60, 0.65)),
                                             ((0.85, 0.80), (0.80, 0.85))])
def test_oracle_golden_cases_pick_last_step(second, expected):
    records = [make_record(0, 0, [(0.75, 0.70, True)]), make_record(1, 0, [(*second, True)])]
    acc = Oracle.run_acc(records)
    assert (acc.val_acc, acc.test_acc, acc.step) == (*expected, 1)


@pytest.mark.parametrize("method", SELECTION_METHODS)
def test_empty_records_give_none(method):
    assert method.run_acc([]) is None
    assert method.sweep_acc([]) is None


# --- hparams choice and ties ------------------------------------------------------------

def test_best_hparams_by_val_then_its_test_acc():
    records = [single(0, 0, 0.7, 0.8, [0.9]), single(0, 1, 0.9, 0.5, [0.6])]
    assert IID.sweep_acc(records) == 0.7          # hparams 0: val 0.9 beats 0.6
    assert Oracle.sweep_acc(records) == 0.7       # oracle val = test-env out: 0.8 > 0.5
    ranked = IID.hparams_accs(records)
    assert [seed for seed, _ in ranked] == [0, 1]


def test_hparams_tie_goes_to_higher_hparams_seed():
    records = [single(0, 2, 0.30, 0.1, [0.8]), single(0, 0, 0.10, 0.1, [0.8]),
               single(0, 1, 0.20, 0.1, [0.8])]
    assert IID.best(records)[0] == 2
    assert IID.sweep_acc(records) == 0.30


def test_checkpoint_tie_goes_to_earliest_step():
    records = [single(20, 0, 0.9, 0.1, [0.7]), single(10, 0, 0.5, 0.1, [0.7]),
               single(0, 0, 0.1, 0.1, [0.6])]
    acc = IID.run_acc(records)
    assert (acc.step, acc.test_acc) == (10, 0.5)


def test_iid_early_stopping_and_mean_over_training_envs():
    records = [single(0, 0, 0.2, 0.0, [0.6, 0.8]), single(5, 0, 0.9, 0.0, [0.5, 0.6])]
    acc = IID.run_acc(records)
    assert acc.step == 0 and acc.val_acc == pytest.approx(0.7) and acc.test_acc == 0.2


def test_iid_and_oracle_ignore_pair_runs():
    records = [pair(0, 0, 1, 0.9), pair(0, 0, 2, 0.9)]
    assert IID.run_acc(records) is None
    assert Oracle.run_acc(records) is None


def test_oracle_takes_last_checkpoint_not_best():
    records = [single(10, 0, 0.4, 0.5, [0.9]), single(0, 0, 0.9, 0.95, [0.9]), pair(10, 0, 1, 0.9)]
    acc = Oracle.run_acc(records)
    assert (acc.step, acc.val_acc, acc.test_acc) == (10, 0.5, 0.4)


def test_nan_validation_ranks_lowest():
    records = [single(0, 0, 0.9, math.nan, [math.nan]), single(0, 1, 0.2, 0.1, [0.1])]
    assert IID.sweep_acc(records) == 0.2
    assert Oracle.sweep_acc(records) == 0.2


# --- leave-one-domain-out ---------------------------------------------------------------

def test_lodo_step_with_missing_pair_is_discarded():
    records = [single(0, 0, 0.3, 0.0, [0.0, 0.0]), pair(0, 0, 1, 0.5), pair(0, 0, 2, 0.5),
               single(5, 0, 0.8, 0.0, [0.0, 0.0]), pair(5, 0, 1, 0.9)]  # step 5 lacks {0, 2}
    acc = LODO.run_acc(records)
    assert (acc.step, acc.val_acc, acc.test_acc) == (0, 0.5, 0.3)


def test_lodo_picks_best_step_and_averages_held_out_envs():
    records = [single(0, 0, 0.3, 0.0, [0.0, 0.0]), pair(0, 0, 1, 0.4), pair(0, 0, 2, 0.6),
               single(5, 0, 0.8, 0.0, [0.0, 0.0]), pair(5, 0, 1, 0.7), pair(5, 0, 2, 0.9)]
    acc = LODO.run_acc(records)
    assert acc.step == 5 and acc.val_acc == pytest.approx(0.8) and acc.test_acc == 0.8
    assert acc.record["test_envs"] == [0]


def test_lodo_needs_exactly_one_single_record_per_step():
    records = [single(0, 0, 0.3, 0.0, [0.0, 0.0]), single(0, 0, 0.4, 0.0, [0.0, 0.0]),
               pair(0, 0, 1, 0.4), pair(0, 0, 2, 0.6)]
    assert LODO.run_acc(records) is None


def test_lodo_hparams_choice_uses_pair_runs_of_same_hparams():
    records = [single(0, 0, 0.3, 0.0, [0.0, 0.0]), pair(0, 0, 1, 0.4), pair(0, 0, 2, 0.4),
               single(0, 1, 0.7, 0.0, [0.0, 0.0]), pair(0, 1, 1, 0.6), pair(0, 1, 2, 0.6),
               pair(0, 2, 1, 0.99), pair(0, 2, 2, 0.99)]  # hparams 2 has no single run
    assert LODO.best(records)[0] == 1
    assert LODO.sweep_acc(records) == 0.7


# --- grouping and select_all ------------------------------------------------------------

def test_pair_records_appear_in_both_groups():
    records = [pair(0, 0, 2, 0.5), single(0, 0, 0.1, 0.2, [0.3, 0.4])]
    groups = group_records(records)
    assert sorted(groups) == [(0, "toy", "erm", 0), (0, "toy", "erm", 2)]
    assert len(groups[(0, "toy", "erm", 0)]) == 2 and len(groups[(0, "toy", "erm", 2)]) == 1


def test_select_all_one_selection_per_group():
    records = [single(0, 0, 0.1, 0.2, [0.3], trial=t, algorithm=a) for t in (0, 1) for a in ("erm", "gmoe")]
    records.append(single(3, 0, 0.6, 0.2, [0.9], trial=1, algorithm="gmoe"))
    chosen = select_all(records, IID)
    assert [(s.trial_seed, s.algorithm) for s in chosen] == [(0, "erm"), (0, "gmoe"), (1, "erm"), (1, "gmoe")]
    last = chosen[-1]
    assert (last.test_env, last.hparams_seed, last.step, last.test_acc) == (0, 0, 3, 0.6)


def test_get_selection_method():
    assert [m.slug for m in SELECTION_METHODS] == ["iid", "lodo", "oracle"]
    assert get_selection_method("lodo") is LODO
    assert LODO.name == "leave-one-domain-out cross-validation"
    with pytest.raises(ValueError, match="'best'.*iid, lodo, oracle"):
        get_selection_method("best")
