"""The shape of the package: no import cycles, studies never import each other, the ground
imports no study, files stay small."""
from pathlib import Path

from import_graph import ROOT, cycles, graph

STUDIES = ("dg", "glue", "supernet")
MAX_LINES = 400


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_a_study_never_imports_another_study_and_the_ground_imports_none():
    for module, deps in graph().items():
        parts = module.split(".")
        mine = parts[1] if len(parts) > 1 and parts[1] in STUDIES else (
            parts[2] if len(parts) > 2 and parts[1] == "cli" and parts[2] in STUDIES else None)
        for dep in deps:
            dp = dep.split(".")
            theirs = dp[1] if len(dp) > 1 and dp[1] in STUDIES else (
                dp[2] if len(dp) > 2 and dp[1] == "cli" and dp[2] in STUDIES else None)
            if theirs is None:
                continue
            assert mine == theirs, f"{module} imports {dep}"


def test_no_source_file_over_400_lines():
    files = [*ROOT.glob("src/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("workflow/**/*.smk")]
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(Path(p).read_text().splitlines())) > MAX_LINES}
    assert long == {}
