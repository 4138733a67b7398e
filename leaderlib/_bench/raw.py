"""The physical limit under each store's figures: ONE request of the kind an acquisition makes,
with the same client library the backend uses, and no election logic.

============  ==========================================================================
store         one operation
============  ==========================================================================
redis         ``SET key value NX PX`` on a fresh key (redis.asyncio, as the backend)
etcd          ``Txn: IF create_revision(k) == 0 THEN put(k, lease) ELSE get(k)`` on a
              fresh key, under one granted lease (aetcd, as the backend)
kubernetes    a Lease update (``PUT`` with the last ``resourceVersion``), the official
              client's ApiClient in a worker thread (as the backend)
sqlite        ``BEGIN IMMEDIATE; UPDATE ... WHERE version = ?; COMMIT`` (WAL,
              synchronous=NORMAL, as the backend), on the calling thread
============  ==========================================================================
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from .stores import Target

Operation = Callable[[], Awaitable[None]]
Close = Callable[[], Awaitable[None]]

DESCRIPTION = {
    "redis": "SET NX PX (redis.asyncio)",
    "etcd": "put-if-absent Txn with a lease (aetcd)",
    "kubernetes": "Lease update PUT (kubernetes ApiClient, worker thread)",
    "sqlite": "BEGIN IMMEDIATE CAS (sqlite3)",
}


async def raw_round_trip(target: Target) -> tuple[Operation, Close]:
    """(one raw request, close) for ``target``'s store."""
    make = {"redis": _redis, "etcd": _etcd, "kubernetes": _kubernetes, "sqlite": _sqlite}[target.store]
    return await make(target)


async def _redis(target: Target) -> tuple[Operation, Close]:
    from leaderlib.backends.redis import RedisBackend

    backend = RedisBackend.from_url(target.url)
    client = backend._client  # the very client the backend would use, not its logic
    prefix = f"{backend.prefix}raw-bench-{uuid.uuid4().hex[:8]}:"
    counter = itertools.count()
    await client.ping()

    async def operation() -> None:
        await client.set(f"{prefix}{next(counter)}", b"raw", nx=True, px=60_000)

    return operation, backend.aclose


async def _etcd(target: Target) -> tuple[Operation, Close]:
    import aetcd

    host, port = target.hostport
    client = aetcd.Client(host=host, port=port)
    await client.connect()
    lease = await client.lease(60)
    prefix = f"/leaderlib-bench/raw-{uuid.uuid4().hex[:8]}/"
    counter = itertools.count()

    async def operation() -> None:
        key = f"{prefix}{next(counter)}".encode()
        succeeded, _ = await client.transaction(
            compare=[client.transactions.create(key) == 0],
            success=[client.transactions.put(key, b"bench", lease=lease)],
            failure=[client.transactions.get(key)],
        )
        if not succeeded:
            raise RuntimeError("the raw transaction found its fresh scratch key already there")

    async def close() -> None:
        try:
            await lease.revoke()
        finally:
            await client.close()

    return operation, close


async def _kubernetes(target: Target) -> tuple[Operation, Close]:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(
        config_file=target.kubeconfig or None, client_configuration=configuration, persist_config=False
    )
    api_client: Any = k8s_client.ApiClient(configuration)
    api: Any = k8s_client.CoordinationV1Api(api_client)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-k8s")
    loop = asyncio.get_running_loop()
    name = f"leaderlib-raw-{uuid.uuid4().hex[:8]}"
    namespace = target.namespace
    body: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": "raw", "leaseDurationSeconds": 10},
    }
    version = [""]

    def create() -> None:
        response = api.create_namespaced_lease(namespace, body, _preload_content=False)
        version[0] = json.loads(response.data)["metadata"]["resourceVersion"]

    def update() -> None:
        body["metadata"] = {"name": name, "resourceVersion": version[0]}
        response = api.replace_namespaced_lease(name, namespace, body, _preload_content=False)
        version[0] = json.loads(response.data)["metadata"]["resourceVersion"]

    await loop.run_in_executor(pool, create)

    async def operation() -> None:
        await loop.run_in_executor(pool, update)

    async def close() -> None:
        # The Lease stays: a least-privileged elector may not delete leases.
        pool.shutdown(wait=True)
        api_client.close()

    return operation, close


async def _sqlite(target: Target) -> tuple[Operation, Close]:
    table = "leaderlib_raw_bench"
    conn = sqlite3.connect(target.sqlite_path, timeout=2.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (k TEXT PRIMARY KEY, version INTEGER)")
    conn.execute(f"INSERT OR REPLACE INTO {table} VALUES ('bench', 0)")
    version = 0

    async def operation() -> None:
        nonlocal version
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(
            f"UPDATE {table} SET version = version + 1 WHERE k = 'bench' AND version = ?", (version,)
        )
        conn.execute("COMMIT")
        if cursor.rowcount != 1:
            raise RuntimeError("the raw compare-and-swap lost: another writer on the bench row")
        version += 1

    async def close() -> None:
        conn.close()

    return operation, close
