"""``python -m models.plan``: see :mod:`models.plan.cli`."""

import sys

from models.plan.cli import main

sys.exit(main())
