from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    TINY_HPARAMS,
    Service,
    running,
    save_tiny_model,
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Statistics and templates of the tiny model, shared by the tests of one session."""
    return tmp_path_factory.mktemp("modeledit-cache")


@pytest.fixture
def tiny_service(
    tmp_path: Path, tiny_model_dir: Path, tiny_cache_dir: Path
) -> Iterator[Service]:
    """A service on the tiny model; its processes and Redis keys are removed afterwards."""
    service = Service(
        tmp_path,
        str(tiny_model_dir),
        extra_env={
            "MODELEDIT_HPARAMS": json.dumps(TINY_HPARAMS),
            "MODELEDIT_CACHE_DIR": str(tiny_cache_dir),
        },
    )
    with running(service):
        yield service
