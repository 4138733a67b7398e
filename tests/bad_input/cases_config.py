"""Cases for the config rows of docs/bad-input.md."""

from __future__ import annotations

from .cases import CASES, Context, Seen, case, leaderlib_command, raised  # noqa: F401
