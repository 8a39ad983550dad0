"""Records -> model selection -> tables (text, LaTeX, CSV, markdown, JSON summary).

Typical use::

    from moebench.dg.reporting import load_sweep, build_report, write_report
    report = build_report(load_sweep("results/runs"))
    write_report(report, "results/tables")
"""
from moebench.io import atomic_write_json as write_json_atomic
from moebench.io import atomic_write_jsonl as write_jsonl_atomic
from moebench.io import atomic_write_text as write_text_atomic
from moebench.dg.reporting.records import (
    DOMAINBED_ENVIRONMENTS,
    RecordError,
    env_labels,
    find_results_files,
    load_results_file,
    load_runs,
    load_sweep,
    normalise_record,
    read_jsonl,
    read_runs_file,
)
from moebench.dg.reporting.tables import (
    DEFAULT_ALGORITHM_ORDER,
    Cell,
    Report,
    ResultTable,
    build_report,
    order_algorithms,
    order_datasets,
)
from moebench.dg.reporting.write import write_report

__all__ = [
    "DEFAULT_ALGORITHM_ORDER", "DOMAINBED_ENVIRONMENTS", "Cell", "RecordError", "Report",
    "ResultTable", "build_report", "env_labels", "find_results_files", "load_results_file",
    "load_runs", "load_sweep", "normalise_record", "order_algorithms", "order_datasets",
    "read_jsonl", "read_runs_file", "write_json_atomic", "write_jsonl_atomic", "write_report",
    "write_text_atomic",
]
