# Shared by every study: the interpreter, params files, one-line params errors, the studies
# to run and the registries of each study's tables and figures. Runs while Snakemake parses.
# The rule files of all studies share one Python namespace: a study names its imports and
# globals with its own prefix (dg_*, DG_*, GLUE_*, SN_*), or imports modules, never bare
# functions another study might also define (write_plan, batch_runs, ...);
# tests/test_layout.py checks that no two rule files define the same name.
import sys

from moebench.config import check_studies
from moebench.errors import MoebenchError

PY = f"{sys.executable} -m"
SCHEMAS = workflow.basedir + "/workflow/schemas"
# params files in merge order: the workflow's own, then --configfile overrides (which win)
_OVERRIDES = [str(f) for f in workflow.overwrite_configfiles]
PARAM_FILES = [str(f) for f in workflow.configfiles if str(f) not in _OVERRIDES] + _OVERRIDES


def fail(message):
    # One line, no traceback, before any job starts.
    print(f"moebench: params error: {message}", file=sys.stderr)
    sys.exit(1)


try:
    STUDIES = check_studies(config, PARAM_FILES)
except MoebenchError as exc:
    fail(exc)
PLUGINS = list(config.get("plugins") or [])
# each study's rule file registers what the final `results/tables` rule gathers:
STUDY_TABLES = {}   # study -> table folder(s) copied into results/tables/ (their
                    # headline.json / *_headline.json become results/tables/metrics/*.json)
STUDY_FIGURES = {}  # study -> figure files results/tables depends on
STUDY_TARGETS = {"data": {}, "train": {}, "search": {}}  # stage -> study -> files (DVC stages)
