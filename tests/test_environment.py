"""environment.yml mirrors pyproject.toml's dependencies; constraints pin torch."""
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_deps():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = data["dependencies"] + data["optional-dependencies"]["test"]
    return {Requirement(r).name: str(Requirement(r).specifier) for r in reqs}


def _env_yml():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_yml_keys_and_python():
    env = _env_yml()
    assert set(env) <= {"name", "channels", "dependencies", "variables", "prefix"}
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python") for d in conda)
    assert "pip" in conda


def test_environment_yml_pip_list_equals_pyproject():
    pip = next(d["pip"] for d in _env_yml()["dependencies"] if isinstance(d, dict))
    reqs = [Requirement(p) for p in pip if not p.startswith("-e")]
    assert {r.name: str(r.specifier) for r in reqs} == _pyproject_deps()
    assert "-e ." in pip


def test_constraints_pin_every_torch_package_inside_pyproject_ranges():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name] = next(iter(req.specifier)).version
    deps = _pyproject_deps()
    for name in ("torch", "torchvision"):
        assert name in pins, f"constraints.txt must pin {name}"
        assert Requirement(f"{name}{deps[name]}").specifier.contains(pins[name])
