"""etcd followers while the leader renews, counted at the server: they wait on the watch.

A follower's session keeps its place in the queue with a keepalive every
TTL/3 (Go's ``Session``); nothing else should reach etcd while the leader
renews and the watch is live. The count is etcd's own
(``grpc_server_msg_received_total`` on ``/metrics``), per gRPC method.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import urllib.request
import uuid

from leaderlib import LeaderElector
from leaderlib.backends.etcd import EtcdBackend
from leaderlib.testing.servers import EtcdServer
from tests.electing import config, running, until

#: Lease 2 s (TTL 2 s), renewals every 0.3 s: a follower counting the leader's lease
#: from its last read would wake several times in the window.
SETTINGS = {"lease_duration": 2.0, "renew_deadline": 1.5, "renew_interval": 0.3, "retry_period": 0.5}
WINDOW = 6.0


def received(server: EtcdServer) -> collections.Counter[str]:
    """Messages etcd has received so far, per gRPC method."""
    with urllib.request.urlopen(f"{server.client_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        if line.startswith("grpc_server_msg_received_total{"):
            method = re.search(r'grpc_method="(\w+)"', line)
            assert method is not None, line
            counts[method.group(1)] += round(float(line.rsplit(" ", 1)[1]))
    return counts


async def test_followers_further_back_hear_the_leaders_renewals_without_asking(
    etcd_server: EtcdServer,
) -> None:
    """Three candidates: the leader, the next in line (which waits on the leader's key)
    and one behind it (which waits on the next in line's key). None but the leader
    reads or writes anything while the leader renews: no follower reads the leader's
    remaining TTL (LeaseTimeToLive) or campaigns again (Txn beyond the renewals)."""
    election = f"etcd-followers-{uuid.uuid4().hex[:8]}"
    backends = [EtcdBackend.from_url(etcd_server.url) for _ in range(3)]
    electors = [
        LeaderElector(election, backend, config(f"candidate-{i}", **SETTINGS))
        for i, backend in enumerate(backends)
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(running(electors[0]))
            await until(lambda: electors[0].is_leader, 10, "a first leader")
            for elector in electors[1:]:
                await stack.enter_async_context(running(elector))
                await asyncio.sleep(0.5)  # queued in this order
            await asyncio.sleep(SETTINGS["lease_duration"])  # every follower waits on its watch
            before = received(etcd_server)
            await asyncio.sleep(WINDOW)
            after = received(etcd_server)
            assert electors[0].is_leader
    finally:
        for backend in backends:
            await backend.aclose()
    sent = {method: after[method] - before[method] for method in after if after[method] > before[method]}
    print(f"etcd received in {WINDOW:.0f} s: {sent}")
    renewals = WINDOW / SETTINGS["renew_interval"]
    assert sent.get("LeaseTimeToLive", 0) == 0, f"a follower asked for the leader's TTL: {sent}"
    # The leader's renewals are one Txn each (a Proclaim); a follower's attempt would be more.
    assert sent.get("Txn", 0) <= renewals + 1, f"more transactions than the leader's renewals: {sent}"
