"""GLUE metrics as the GLUE benchmark defines them, computed with scikit-learn (the
``evaluate`` package downloads its metric scripts at run time; these are the same formulas).

* CoLA: Matthews correlation coefficient ("mcc").
* MRPC (and the embedded paraphrase task): mean of accuracy and binary F1 with positive
  class 1 = equivalent ("acc_f1").
* RTE, MNLI-matched, QNLI (and the embedded topic task): accuracy ("acc").

The task score is the mean of the metric's values (the authors' choice of the best epoch:
``np.mean(list(eval_metric.values()))``), reported on a 0-100 scale by the tables.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

METRICS = ("mcc", "acc_f1", "acc")


def metric_values(kind: str, labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """The metric's named values on 0-1: {"mcc"} | {"accuracy", "f1"} | {"accuracy"}."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    y, p = np.asarray(labels), np.asarray(predictions)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be equal 1-d shapes")
    if len(y) == 0:
        raise ValueError("no examples to score")
    if kind == "mcc":
        return {"mcc": float(matthews_corrcoef(y, p))}
    if kind == "acc_f1":
        return {"accuracy": float(accuracy_score(y, p)),
                "f1": float(f1_score(y, p, pos_label=1, average="binary", zero_division=0.0))}
    if kind == "acc":
        return {"accuracy": float(accuracy_score(y, p))}
    raise ValueError(f"unknown metric {kind!r}; valid: {', '.join(METRICS)}")


def task_score(values: dict[str, float]) -> float:
    """The single number that ranks epochs: the mean of the metric's values (0-1)."""
    return float(np.mean(list(values.values())))
