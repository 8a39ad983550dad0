# DomainBed params validation, the sweep grid and shared values. Runs while Snakemake parses,
# so bad params stop the run with one line before any job starts.
from snakemake.utils import validate

from moebench.config import files_setting
from moebench.dg.params import SECTIONS as DG_SECTIONS, algorithm_order, validate as validate_dg
from moebench.dg import sweep as dg_sweep
from moebench.errors import MoebenchError

try:
    RUNS = validate_dg(config, SCHEMAS, PARAM_FILES)
    for _section in ("sweep", "datasets", "hparams", "report"):
        validate(config[_section], f"../../schemas/{_section}.schema.yaml")  # schema defaults
except MoebenchError as exc:
    fail(exc)

SWEEP = config["sweep"]
DG = "results/dg"
ALGORITHM_ORDER = algorithm_order(config)
# tiny jobs run in the Snakemake process itself, never as cluster jobs
localrules: dg_plan, dg_collect, dg_tables, dg_data_all, dg_train_all
RUNS_ROOT = SWEEP["runs_root"]
BATCHES = dg_sweep.batch_runs(RUNS, SWEEP["runs_per_job"])
PLAN = f"{DG}/sweep/plan.json"
# the params files that can change the plan (another study's params never re-plan this one)
DG_PARAM_FILES = files_setting(PARAM_FILES, [*DG_SECTIONS, "studies", "plugins"])
DATA_PATHS = {ds: config["datasets"][ds]["path"] for ds in SWEEP["datasets"]}


def batch_marker(key):
    return f"{RUNS_ROOT}/{key}.done"


def batch_run_ids(wildcards):
    key = f"{wildcards.dataset}/{wildcards.algorithm}/{wildcards.batch}"
    return [run.run_id for run in BATCHES[key]]
