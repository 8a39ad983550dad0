# Validation, the sweep grid and shared values. Everything here runs when the workflow is
# parsed, so bad params stop the run with one line before any job starts.
import sys
from pathlib import Path

from snakemake.utils import validate

from moebench.config import ParamsError, validate_params
from moebench.hparams import HparamsError
from moebench.sweep import batch_runs, enumerate_runs, write_plan

PY = f"{sys.executable} -m"
# params files in merge order: the workflow's own, then --configfile overrides (which win)
_OVERRIDES = [str(f) for f in workflow.overwrite_configfiles]
PARAM_FILES = [str(f) for f in workflow.configfiles if str(f) not in _OVERRIDES] + _OVERRIDES


def _fail(message):
    # One line, no traceback, before any job starts.
    print(f"moebench: params error: {message}", file=sys.stderr)
    sys.exit(1)


try:
    validate_params(config, workflow.basedir + "/workflow/schemas", PARAM_FILES)
    for _section in ("sweep", "datasets", "hparams", "report"):
        validate(config[_section], f"../schemas/{_section}.schema.yaml")  # fills schema defaults
    RUNS = enumerate_runs(config)
except (ParamsError, HparamsError, ValueError) as exc:
    _fail(exc)

SWEEP = config["sweep"]
# tiny jobs run in the Snakemake process itself, never as cluster jobs
localrules: plan, collect, tables, data_all, train_all
RUNS_ROOT = SWEEP["runs_root"]
BATCHES = batch_runs(RUNS, SWEEP["runs_per_job"])
PLAN = "results/sweep/plan.json"
DATA_PATHS = {ds: config["datasets"][ds]["path"] for ds in SWEEP["datasets"]}


def batch_marker(key):
    return f"{RUNS_ROOT}/{key}.done"


def batch_run_ids(wildcards):
    key = f"{wildcards.dataset}/{wildcards.algorithm}/{wildcards.batch}"
    return [run.run_id for run in BATCHES[key]]
