"""DomainBed-style algorithms: one module per algorithm, each with a torch-free
``DECLARATION`` (name, class, hyperparameters) that the workflow reads without importing it.

``algorithm_class(name, plugins)`` imports and returns the class of a declared algorithm
(built-in or from a plugin module)."""
from __future__ import annotations

from typing import Iterable

from moebench.dg.algorithms.base import Algorithm, HparamsError, check_hparams, concat_minibatches
from moebench.dg.algorithms.erm import ERM, make_adam
from moebench.dg.algorithms.gmoe import GMoE, build_moe_network, moe_layer_kwargs
from moebench.dg.algorithms.mass import MASS
from moebench.dg.algorithms.mode import MoDE
from moebench.dg.algorithms.soft_moe import SoftMoE


def algorithm_class(name: str, plugins: Iterable[str] = ()) -> type:
    """The class of the declared algorithm ``name`` (one-line ParamsError if unknown)."""
    from moebench.dg.study import declarations
    from moebench.errors import ParamsError

    decls = declarations(plugins)
    if name not in decls:
        raise ParamsError(f"unknown algorithm {name!r}; valid: {', '.join(sorted(decls))}")
    return decls[name].load()


__all__ = [
    "Algorithm", "ERM", "GMoE", "HparamsError", "MASS", "MoDE", "SoftMoE", "algorithm_class",
    "build_moe_network", "check_hparams", "concat_minibatches", "make_adam", "moe_layer_kwargs",
]
