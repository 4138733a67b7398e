"""Test support for leaderlib: real servers on free ports and pytest fixtures.

:mod:`leaderlib.testing.servers` starts real Redis, etcd and kube-apiserver
processes (binaries from ``backends/install``); :mod:`leaderlib.testing.pytest_plugin`
wraps them in fixtures; :mod:`leaderlib.testing.testenv` is ``leaderlib testenv``.
"""
