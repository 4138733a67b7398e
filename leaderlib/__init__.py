"""leaderlib: leader election for Python services."""
