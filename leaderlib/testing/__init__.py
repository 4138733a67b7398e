"""Test support for leaderlib: real servers on free ports and pytest fixtures.

:mod:`leaderlib.testing.servers` starts real Redis, etcd and kube-apiserver
processes (binaries from ``backends/install``); :mod:`leaderlib.testing.sentinel`
runs a Redis master, replica and three Sentinels; :mod:`leaderlib.testing.toxiproxy`
puts network faults between a client and a server; :mod:`leaderlib.testing.clientgo`
runs a real client-go elector for mixed elections; :mod:`leaderlib.testing.pytest_plugin`
wraps them in fixtures; :mod:`leaderlib.testing.testenv` is ``leaderlib testenv``.
"""
