"""Names the workflow needs while Snakemake parses it, importable without torch.

Importing the registries pulls in torch, torchvision and timm (about 4-5 s); parsing the
Snakefile needs only the registered algorithm names and each dataset's environment count.
``tests/test_catalog.py`` checks that these tables equal the registries.
"""
from __future__ import annotations

ALGORITHM_NAMES: tuple[str, ...] = ("erm", "gmoe", "mass", "mode", "soft_moe")
DATASET_ENV_COUNTS: dict[str, int] = {
    "rotated_digits": 6, "colored_digits": 3, "pacs": 4, "vlcs": 4, "office_home": 4,
    "terra_incognita": 4, "domain_net": 6}
# datasets built as a folder (DomainBed's image layout) rather than one file: data rules
# declare them with Snakemake's directory()
FOLDER_DATASETS: frozenset[str] = frozenset(
    {"pacs", "vlcs", "office_home", "terra_incognita", "domain_net"})
