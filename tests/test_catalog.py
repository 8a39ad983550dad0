"""The parse-time catalog equals the registries (so the workflow can skip importing torch)."""
import moebench.algorithms  # noqa: F401
import moebench.datasets  # noqa: F401
from moebench.catalog import ALGORITHM_NAMES, DATASET_ENV_COUNTS, FOLDER_DATASETS
from moebench.datasets.domainbed import ImageFolderDomains
from moebench.registry import ALGORITHMS, DATASETS


def test_catalog_matches_the_registries():
    assert sorted(ALGORITHM_NAMES) == ALGORITHMS.names()
    assert DATASET_ENV_COUNTS == {n: len(DATASETS.get(n).ENVIRONMENTS) for n in DATASETS.names()}
    assert FOLDER_DATASETS == {n for n in DATASETS.names() if issubclass(DATASETS.get(n), ImageFolderDomains)}
