"""Every module of the project imports. A moved module leaves ``from editing import x`` lines
that only fail when the process that runs them starts (the service's subprocesses), so
this walks every package instead of waiting for an end-to-end test to find them."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ("app", "editing", "models", "bench")
SKIP = {"__main__"}


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if info.name.rsplit(".", 1)[-1] not in SKIP:
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", modules())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)
