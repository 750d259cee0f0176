"""Where shared data lives (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``$MODELEDIT_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("MODELEDIT_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"
