"""``python -m leaderlib._bench``: the same as ``leaderlib bench``."""

from . import main

raise SystemExit(main())
