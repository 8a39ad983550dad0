"""GLUE metrics against hand-computed values."""
from __future__ import annotations

import math

import pytest

from moebench.glue.metrics import metric_values, task_score

LABELS = [1, 1, 0, 0, 1, 0, 1, 1]
PREDS = [1, 0, 0, 1, 1, 0, 1, 0]
# TP = 3 (0, 4, 6), FN = 2 (1, 7), TN = 2 (2, 5), FP = 1 (3)


def test_cola_matthews_correlation():
    mcc = (3 * 2 - 1 * 2) / math.sqrt((3 + 1) * (3 + 2) * (2 + 1) * (2 + 2))
    assert metric_values("mcc", LABELS, PREDS) == {"mcc": pytest.approx(mcc)}
    assert metric_values("mcc", [0, 1, 0, 1], [1, 1, 1, 1]) == {"mcc": 0.0}  # constant guess


def test_mrpc_mean_of_accuracy_and_f1():
    values = metric_values("acc_f1", LABELS, PREDS)
    precision, recall = 3 / 4, 3 / 5
    f1 = 2 * precision * recall / (precision + recall)
    assert values == {"accuracy": pytest.approx(5 / 8), "f1": pytest.approx(f1)}
    assert task_score(values) == pytest.approx((5 / 8 + f1) / 2)
    # F1 of the positive class 1 (equivalent), not of class 0
    flipped = metric_values("acc_f1", [1 - y for y in LABELS], [1 - p for p in PREDS])
    assert flipped["f1"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))


def test_accuracy_tasks():
    assert metric_values("acc", [0, 1, 2, 2], [0, 2, 2, 1]) == {"accuracy": 0.5}
    assert task_score({"accuracy": 0.5}) == 0.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        metric_values("bleu", [0], [0])
    with pytest.raises(ValueError, match="equal 1-d shapes"):
        metric_values("acc", [0, 1], [0])
    with pytest.raises(ValueError, match="no examples"):
        metric_values("acc", [], [])
