"""Fixtures of the GLUE-study tests (helpers in glue_testlib.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from glue_testlib import save_tiny_bert, serve


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a locally saved tiny BERT (3 layers, hidden 32, FFN 64, 2 labels)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def http_server():
    """(base URL, routes dict {path: (status, bytes)}) of a server on 127.0.0.1."""
    routes: dict = {}
    base, stop = serve(routes)
    yield base, routes
    stop()
