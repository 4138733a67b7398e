"""The conformance suite on ``etcd://`` (the session's single-member etcd).

Foreign candidates are written as ``etcdctl elect`` writes them (Go's
``concurrency.Election.Campaign``): a lease of their own and the key
``PREFIX + ELECTION + "/" + <lease id hex>`` put with it in a transaction
guarded by ``create_revision == 0``. They are not kept alive, so etcd expires
them after the lease. The writes go through a plain ``aetcd.Client``, not
through leaderlib.
"""

from __future__ import annotations

import aetcd
import pytest

from leaderlib.backends import Backend
from leaderlib.backends.etcd import DEFAULT_PREFIX, EtcdBackend, candidate_key, lease_ttl, run_key

CORRUPTIBLE = True


class EtcdHarness:
    corruptible = True
    # Nested names: "jobs/nightly"'s keys would lie under election "jobs"'s prefix;
    # "jobs~runs"'s among election "jobs"'s job run records.
    bad_election_names = ("jobs/nightly", "/leading", "jobs~runs")
    # The token is the candidate key's create revision: etcd's store-wide counter.
    consecutive_tokens = False

    def __init__(self, url: str, endpoint: str) -> None:
        self.url = url
        self.host, _, port = endpoint.rpartition(":")
        self.port = int(port)

    def backend(self) -> Backend:
        return EtcdBackend.from_url(self.url)

    async def write_foreign(self, election: str, holder: str, lease_duration: float) -> None:
        async with aetcd.Client(host=self.host, port=self.port) as client:
            lease = await client.lease(lease_ttl(lease_duration))
            key = candidate_key(DEFAULT_PREFIX, election, lease.id)
            await client.transaction(
                compare=[client.transactions.create(key) == 0],
                success=[client.transactions.put(key, holder.encode(), lease=lease)],
                failure=[client.transactions.get(key)],
            )

    async def write_corrupt(self, election: str) -> None:
        # Under the election prefix, but neither named after a lease nor
        # attached to one, with a value that is not UTF-8: no reader can
        # take it for a candidate, and it never expires.
        async with aetcd.Client(host=self.host, port=self.port) as client:
            await client.put(f"{DEFAULT_PREFIX}{election}/not-a-lease".encode(), b"\xff\xfe\x00corrupt")

    async def write_corrupt_run(self, election: str, job: str) -> None:
        async with aetcd.Client(host=self.host, port=self.port) as client:
            await client.put(run_key(DEFAULT_PREFIX, election, job), b"\xff\xfe{not json")


def make_harness(request: pytest.FixtureRequest) -> EtcdHarness:
    server = request.getfixturevalue("etcd_server")
    return EtcdHarness(server.url, server.endpoint)
