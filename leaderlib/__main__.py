"""``python -m leaderlib``: the same as the ``leaderlib`` command."""

import sys

from .cli import main

sys.exit(main())
