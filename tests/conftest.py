"""Shared pytest configuration."""

pytest_plugins = ["leaderlib.testing.pytest_plugin"]
