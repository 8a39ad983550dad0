"""Tiny params for every study at once (the DVC test runs the whole pipeline): the
DomainBed TINY grid, the GLUE study on a locally saved tiny BERT and tiny generated corpora,
the supernet study on a tiny space and a generated Ding file."""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for sub in ("glue", "supernet"):
    if str(HERE / sub) not in sys.path:
        sys.path.insert(0, str(HERE / sub))

from helpers_supernet_search import SEARCH_TINY  # noqa: E402
from test_glue_workflow import _override as glue_override  # noqa: E402
from test_supernet_workflow import TINY as SUPERNET_TINY, _ding  # noqa: E402

DG_TINY = {
    "sweep": {"algorithms": ["erm"], "trial_seeds": [0], "test_envs": "singles", "runs_per_job": 9},
    "datasets": {name: {"steps": 2, "checkpoint_freq": 1,
                        "build": {"seed": 0, "image_size": 8, "max_images": 120}}
                 for name in ("rotated_digits", "colored_digits")},
    "hparams": {"defaults": {"embed_dim": 16, "depth": 2, "num_heads": 2, "batch_size": 8}},
}


def all_studies(tmp_path: Path) -> dict:
    """One override with tiny params for dg, glue and supernet (files made under tmp_path)."""
    glue = glue_override(tmp_path)["glue"]
    glue["seeds"] = [0]
    supernet = json.loads(json.dumps(SUPERNET_TINY["supernet"]))
    _ding(tmp_path / "de-en")
    supernet["data"]["ding"] = {"path": str(tmp_path / "de-en"), "url": None}
    for key, value in SEARCH_TINY.items():
        supernet.setdefault(key, {}).update(value)
    return {"studies": ["dg", "glue", "supernet"], **DG_TINY, "glue": glue, "supernet": supernet}
