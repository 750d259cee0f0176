"""``editing``'s public surface: every exported name loads, and loading stays lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest

import editing


def test_every_exported_name_loads() -> None:
    for name in editing.__all__:
        assert getattr(editing, name) is not None, name
    assert set(editing.__all__) <= set(dir(editing))


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        editing.no_such_thing  # noqa: B018


def test_hyper_parameters_import_without_torch() -> None:
    """The API's request schemas and the settings check hyper-parameter names: that must not
    cost a torch import (the CLI's --help, a settings check)."""
    code = ("import sys; from editing import EditHparams, STORED_NAMES, retired_name_error; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
