"""Torch-free declarations of algorithms (methods) and their hyperparameters.

Every algorithm of every study declares itself once, at the top of its own module::

    DECLARATION = declare(
        "gmoe", study="dg", cls="GMoE", extends="erm",
        help="GMoE: sparse MoE MLPs in the last two even blocks",
        hparams=[
            Hp("num_experts", int, min=1, help="experts per MoE layer"),
            Hp("top_k", int, min=1, max="num_experts", help="experts per token"),
        ])

The workflow reads these declarations while Snakemake parses it, *without importing the
module* (importing torch and timm costs seconds): :func:`read_declaration` parses the file
and evaluates only the ``DECLARATION = declare(...)`` expression, which may therefore use
:func:`declare`, :class:`Hp`, literals and the names ``int, float, bool, str, list, inf``.
The class itself (``cls``, a name in that module or ``"package.module:Class"``) is imported
only when a run builds it (:meth:`Declaration.load`).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from moebench.errors import ParamsError

Bound = Union[int, float, str, None]
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
              list: "a list"}


@dataclass(frozen=True)
class Hp:
    """One hyperparameter: its type(s), bounds or choices and a one-line meaning.

    ``min`` / ``max`` are numbers or the name of another hyperparameter of the same algorithm
    (checked against the run's resolved value); ``min_open`` / ``max_open`` make them
    exclusive. ``nullable`` admits ``null``. A ``float`` hyperparameter accepts integers.
    ``choices`` and bounds apply to scalar values; a list value is checked element by element
    against ``items`` (an ``Hp``); ``unique`` forbids repeated elements, ``min_items`` sets
    the shortest list.
    """

    name: str
    type: Union[type, tuple[type, ...]]
    help: str = ""
    min: Bound = None
    max: Bound = None
    min_open: bool = False
    max_open: bool = False
    choices: Optional[tuple[Any, ...]] = None
    nullable: bool = False
    items: Optional["Hp"] = None
    unique: bool = False
    min_items: int = 0

    def __post_init__(self) -> None:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        bad = [t for t in types if t not in TYPE_NAMES]
        if bad:
            raise ValueError(f"Hp {self.name!r}: unsupported type {bad[0]!r}")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))

    @property
    def types(self) -> tuple[type, ...]:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    def type_ok(self, value: Any) -> bool:
        """Whether ``value`` has one of the declared types (bool is not an int, an int is a
        float)."""
        if value is None:
            return self.nullable
        for t in self.types:
            if t is bool and isinstance(value, bool):
                return True
            if t is int and isinstance(value, int) and not isinstance(value, bool):
                return True
            if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
            if t in (str, list) and isinstance(value, t):
                return True
        return False

    def describe_type(self) -> str:
        names = [TYPE_NAMES[t] for t in self.types] + (["null"] if self.nullable else [])
        return " or ".join(names)

    def problem(self, value: Any, context: Optional[Mapping[str, Any]] = None) -> Optional[str]:
        """Why ``value`` is invalid (one short phrase), or None when it is valid.

        ``context`` holds the run's other resolved hyperparameters, for bounds that name one.
        """
        if not self.type_ok(value):
            hint = ""
            if isinstance(value, str) and float in self.types and _looks_numeric(value):
                hint = " (YAML reads 1e-3 as a string: write 1.0e-3)"
            return f"{value!r} must be {self.describe_type()}{hint}"
        if value is None:
            return None
        if isinstance(value, list):
            return self._list_problem(value, context or {})
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {', '.join(map(repr, self.choices))}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._bound_problem(value, context or {})
        return None

    def _list_problem(self, value: list, context: Mapping[str, Any]) -> Optional[str]:
        if len(value) < self.min_items:
            return f"{value!r} needs at least {self.min_items} element(s)"
        if self.unique and len(set(map(repr, value))) != len(value):
            return f"{value!r} has repeated elements"
        if self.items is not None:
            for i, item in enumerate(value):
                problem = self.items.problem(item, context)
                if problem:
                    return f"{value!r}: element {i}: {problem}"
        return None

    def _bound_problem(self, value: float, context: Mapping[str, Any]) -> Optional[str]:
        low, low_name = _bound(self.min, context)
        high, high_name = _bound(self.max, context)
        if math.isnan(value):
            return "nan is not a valid value"
        if low is not None and (value <= low if self.min_open else value < low):
            what = "must be above" if self.min_open else "is below the minimum"
            return f"{value!r} {what} {low_name}"
        if high is not None and (value >= high if self.max_open else value > high):
            what = "must be below" if self.max_open else "is above the maximum"
            return f"{value!r} {what} {high_name}"
        return None

    def range_text(self) -> str:
        """The valid values in words, e.g. ``int >= 1`` or ``one of 'a', 'b'``."""
        parts = [self.describe_type()]
        if self.choices is not None:
            parts = [f"one of {', '.join(map(repr, self.choices))}"]
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {self.min}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {self.max}")
        return ", ".join(parts)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bound(bound: Bound, context: Mapping[str, Any]) -> tuple[Optional[float], str]:
    """(numeric bound, text) of a bound that may name another hyperparameter."""
    if bound is None:
        return None, ""
    if isinstance(bound, str):
        other = context.get(bound)
        if not isinstance(other, (int, float)) or isinstance(other, bool):
            return None, bound
        return float(other), f"{bound} = {other!r}"
    return float(bound), repr(bound)


@dataclass(frozen=True)
class Declaration:
    """An algorithm (method) of one study: name, class location and hyperparameters."""

    name: str
    study: str
    cls: str
    hparams: tuple[Hp, ...] = ()
    help: str = ""
    extends: Optional[str] = None
    shares: tuple[tuple[str, tuple[str, ...]], ...] = ()
    module: str = ""
    path: str = field(default="", compare=False)

    def qualified_cls(self) -> tuple[str, str]:
        """(module, attribute) of the class."""
        if ":" in self.cls:
            module, attr = self.cls.split(":", 1)
            return module, attr
        if not self.module:
            raise ValueError(f"declaration {self.name!r}: cls {self.cls!r} needs a module")
        return self.module, self.cls

    def load(self) -> Any:
        """Import and return the class (the only step that imports the module)."""
        module, attr = self.qualified_cls()
        return getattr(importlib.import_module(module), attr)


def declare(name: str, *, study: str, cls: str, hparams: Sequence[Hp] = (), help: str = "",
            extends: Optional[str] = None,
            shares: Optional[Mapping[str, Sequence[str]]] = None) -> Declaration:
    """Declare an algorithm; assign the result to a module-level ``DECLARATION``.

    ``extends``: read every hparam of that algorithm too; ``shares``: {algorithm: [names]},
    read those hparams of other algorithms (same declaration, declared once)."""
    if not name or name != name.lower():
        raise ValueError(f"algorithm names must be non-empty lowercase, got {name!r}")
    names = [h.name for h in hparams]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"declaration {name!r} declares hparam {dup[0]!r} twice")
    shared = tuple((k, tuple(v)) for k, v in (shares or {}).items())
    return Declaration(name=name, study=study, cls=cls, hparams=tuple(hparams), help=help,
                       extends=extends, shares=shared)


_NAMESPACE = {"declare": declare, "Hp": Hp, "int": int, "float": float, "bool": bool,
              "str": str, "list": list, "inf": math.inf, "__builtins__": {}}


class DeclarationError(ParamsError):
    """A module's ``DECLARATION`` cannot be read statically."""


def read_declaration(path: Union[str, Path], module: str = "") -> Optional[Declaration]:
    """The ``DECLARATION`` of the Python file ``path``, read without importing it (None when
    the file declares nothing)."""
    path = Path(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "DECLARATION" for t in node.targets):
            code = compile(ast.Expression(body=node.value), str(path), "eval")
            try:
                decl = eval(code, dict(_NAMESPACE))  # noqa: S307 - restricted namespace
            except NameError as exc:
                raise DeclarationError(
                    f"{path}:{node.lineno}: DECLARATION may use only declare(), Hp(), literals "
                    f"and int/float/bool/str/list/inf ({exc})") from None
            if not isinstance(decl, Declaration):
                raise DeclarationError(f"{path}:{node.lineno}: DECLARATION must be declare(...)")
            return replace(decl, module=module, path=str(path))
    return None


def module_file(module: str) -> Path:
    """The source file of ``module`` found without executing it (its parent packages are
    imported, as Python does)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ParamsError(f"plugin module {module!r} cannot be found: {exc}") from None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ParamsError(f"plugin module {module!r} cannot be found (is it on PYTHONPATH?)")
    return Path(spec.origin)


def package_declarations(package: str) -> list[Declaration]:
    """Declarations of every module directly inside ``package`` (not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package!r} is not a package")
    found = []
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            decl = read_declaration(path, f"{package}.{path.stem}")
            if decl is not None:
                found.append(decl)
    return found


def collect(packages: Iterable[str], plugins: Iterable[str] = ()) -> dict[tuple[str, str], Declaration]:
    """{(study, name): declaration} of the built-in ``packages`` and the ``plugins`` modules.

    A plugin module without a DECLARATION or a name declared twice in one study raises.
    """
    decls = [d for p in packages for d in package_declarations(p)]
    for module in plugins:
        decl = read_declaration(module_file(module), module)
        if decl is None:
            raise ParamsError(f"plugin module {module!r} has no DECLARATION = declare(...)")
        decls.append(decl)
    out: dict[tuple[str, str], Declaration] = {}
    for d in decls:
        key = (d.study, d.name)
        if key in out:
            raise ParamsError(f"algorithm {d.name!r} of study {d.study!r} is declared twice: "
                              f"{out[key].path} and {d.path}")
        out[key] = d
    return out


def hparam_table(decl: Declaration, by_name: Mapping[str, Declaration],
                 common: Sequence[Hp] = ()) -> dict[str, Hp]:
    """Every hyperparameter ``decl`` reads: the study's common ones, then those of the
    algorithms it extends (transitively), then its own (a later one replaces an earlier)."""
    chain: list[Declaration] = []
    seen: set[str] = set()
    cur: Optional[Declaration] = decl
    while cur is not None:
        if cur.name in seen:
            raise ValueError(f"declaration {decl.name!r}: 'extends' forms a cycle")
        seen.add(cur.name)
        chain.append(cur)
        if cur.extends is None:
            break
        if cur.extends not in by_name:
            raise ParamsError(f"{cur.path}: {cur.name!r} extends unknown algorithm "
                              f"{cur.extends!r}")
        cur = by_name[cur.extends]
    table = {h.name: h for h in common}
    for d in reversed(chain):
        for other, names in d.shares:
            if other not in by_name:
                raise ParamsError(f"{d.path}: {d.name!r} shares hparams of unknown algorithm "
                                  f"{other!r}")
            theirs = {h.name: h for h in by_name[other].hparams}
            missing = [n for n in names if n not in theirs]
            if missing:
                raise ParamsError(f"{d.path}: {other!r} declares no hparam {missing[0]!r}")
            table.update({n: theirs[n] for n in names})
        table.update({h.name: h for h in d.hparams})
    return table
