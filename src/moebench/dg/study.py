"""What the workflow needs to know about the DomainBed study while Snakemake parses it:
torch-free (importing torch and timm costs seconds).

* ``COMMON_HPARAMS``: the study-wide hyperparameters (the ``hparams.defaults`` layer) that
  every algorithm receives: optimiser, batch size, backbone.
* ``DATASET_ENV_COUNTS`` / ``FOLDER_DATASETS``: environments per dataset and the datasets
  stored as DomainBed image folders (``tests/dg/test_study.py`` checks them against the
  dataset registry).
* :func:`declarations`: every algorithm's declaration (``moebench.dg.algorithms.*`` plus
  plugin modules), read without importing them.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Mapping

from moebench.declare import Declaration, Hp, collect, hparam_table

STUDY = "dg"
ALGORITHMS_PACKAGE = "moebench.dg.algorithms"
BACKBONE_NAMES = ("vit_digits", "deit_small_patch16_224")

COMMON_HPARAMS: tuple[Hp, ...] = (
    Hp("lr", float, "learning rate (Adam, constant)", min=0, min_open=True),
    Hp("weight_decay", float, "Adam weight decay", min=0),
    Hp("batch_size", int, "minibatch size per training domain", min=1),
    Hp("backbone", str, "timm ViT backbone", choices=BACKBONE_NAMES),
    Hp("patch_size", int, "ViT patch size in pixels", min=1),
    Hp("embed_dim", int, "ViT width", min=1),
    Hp("depth", int, "ViT blocks", min=1),
    Hp("num_heads", int, "attention heads per block", min=1),
    Hp("mlp_ratio", float, "MLP hidden width / embed_dim", min=0, min_open=True),
    Hp("drop_path_rate", float, "stochastic depth rate", min=0, max=1, max_open=True),
    Hp("pretrained", str, "null (from scratch), 'timm' (hub weights) or a checkpoint path",
       nullable=True),
    Hp("moe_init", str, "MoE experts: fresh ('random') or copies of the dense MLP ('upcycle')",
       choices=("random", "upcycle")),
)

DATASET_ENV_COUNTS: dict[str, int] = {
    "rotated_digits": 6, "colored_digits": 3, "pacs": 4, "vlcs": 4, "office_home": 4,
    "terra_incognita": 4, "domain_net": 6}
# datasets built as a folder (DomainBed's image layout) rather than one file: data rules
# declare them with Snakemake's directory()
FOLDER_DATASETS: frozenset[str] = frozenset(
    {"pacs", "vlcs", "office_home", "terra_incognita", "domain_net"})


@lru_cache(maxsize=None)
def _declarations(plugins: tuple[str, ...]) -> dict[str, Declaration]:
    found = collect([ALGORITHMS_PACKAGE], plugins)
    return {name: d for (study, name), d in found.items() if study == STUDY}


def declarations(plugins: Iterable[str] = ()) -> dict[str, Declaration]:
    """{algorithm name: declaration} in declaration-file order, plugins last."""
    return dict(_declarations(tuple(plugins)))


def hparam_tables(plugins: Iterable[str] = ()) -> dict[str, Mapping[str, Hp]]:
    """{algorithm: {hparam: Hp}}: the study's common hparams plus each algorithm's own."""
    decls = declarations(plugins)
    return {name: hparam_table(d, decls, COMMON_HPARAMS) for name, d in decls.items()}


def study_keys(plugins: Iterable[str] = ()) -> set[str]:
    """Every hparam some algorithm of the study reads (valid in ``defaults`` / datasets)."""
    return {k for table in hparam_tables(plugins).values() for k in table}
