"""The DomainBed study's torch-free tables and declarations agree with the code they describe."""
import importlib
import subprocess
import sys

import pytest

import moebench.dg.datasets  # noqa: F401  (registers the datasets)
from moebench.declare import Hp
from moebench.dg import study
from moebench.dg.datasets.domainbed import ImageFolderDomains
from moebench.registry import DATASETS


def test_dataset_tables_match_the_registry():
    assert study.DATASET_ENV_COUNTS == {n: len(DATASETS.get(n).ENVIRONMENTS)
                                        for n in DATASETS.names()}
    assert study.FOLDER_DATASETS == {n for n in DATASETS.names()
                                     if issubclass(DATASETS.get(n), ImageFolderDomains)}


def test_every_algorithm_module_is_declared_in_order():
    assert list(study.declarations()) == ["erm", "gmoe", "mass", "mode", "soft_moe"]


@pytest.mark.parametrize("name", list(study.declarations()))
def test_static_declaration_equals_the_imported_one(name):
    decl = study.declarations()[name]
    module = importlib.import_module(decl.module)
    assert module.DECLARATION.name == decl.name
    assert module.DECLARATION.hparams == decl.hparams
    assert decl.load().NAME == name and decl.load() is getattr(module, decl.cls)


def test_reading_the_declarations_does_not_import_torch():
    code = ("import sys; from moebench.dg import params, study; study.hparam_tables(); "
            "print('torch' in sys.modules, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_hparam_has_a_meaning_and_a_type():
    for name, table in study.hparam_tables().items():
        for key, hp in table.items():
            assert isinstance(hp, Hp) and hp.help, (name, key)
