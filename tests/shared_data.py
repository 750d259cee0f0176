"""The shared data files (``../shared/data`` or ``$MODELEDIT_SHARED_DATA``) for the tests that need them.

A checkout without that folder (someone trying the project out) gets a skip that says what
to provide. CI sets ``MODELEDIT_REQUIRE_SHARED_DATA=1`` (in ``.ci/run``), where the data must
be present, so a missing file fails there instead of being skipped silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from editing.paths import shared_data_dir


def shared_data_file(name: str) -> Path:
    """``name`` in the shared data folder; skip (or fail, on CI) when it is not there."""
    path = shared_data_dir() / name
    if not path.exists():
        message = (f"{path} not found: put the shared data folder beside the checkout "
                   "(../shared/data) or set MODELEDIT_SHARED_DATA")
        if os.environ.get("MODELEDIT_REQUIRE_SHARED_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return path
