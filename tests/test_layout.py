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


def _defined_names(path: Path) -> set[str]:
    """Top-level names a rule file binds: imports, assignments, functions."""
    import re

    names = set()
    for line in path.read_text().splitlines():
        if m := re.match(r"^def (\w+)", line):
            names.add(m[1])
        elif m := re.match(r"^(\w+) =", line):
            names.add(m[1])
        elif m := re.match(r"^from \S+ import (.+)", line):
            names |= {p.split(" as ")[-1].strip() for p in m[1].split(",")}
    return names


def test_rule_files_of_different_studies_bind_different_names():
    """All rule files share one namespace: a name bound twice would shadow the first."""
    shared = {"MoebenchError"}  # the same class everywhere
    files = sorted(ROOT.glob("workflow/rules/**/*.smk"))
    seen: dict[str, Path] = {}
    for path in files:
        for name in _defined_names(path) - shared:
            assert name not in seen, f"{name} is bound in {seen[name]} and in {path}"
            seen[name] = path
