"""The raw round trip for ``kubernetes://``: one GET of a Lease with the official client.

Same client and transport as the backend (one ``ApiClient``, its keep-alive
pool, one worker thread hop per request), no leaderlib: the floor the
backend's acquisition and handover times are compared with.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

LEASE_NAME = "leaderlib-raw-bench"


async def raw_round_trip(url: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """(one GET of a Lease, close) for ``kubernetes://NAMESPACE[?kubeconfig=...&context=...]``."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    namespace = parts.netloc or "default"
    configuration = k8s_client.Configuration()
    if "kubeconfig" not in options and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(
            config_file=options.get("kubeconfig"),
            context=options.get("context"),
            client_configuration=configuration,
            persist_config=False,
        )
    api_client = k8s_client.ApiClient(configuration)
    api = k8s_client.CoordinationV1Api(api_client)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-k8s")
    loop = asyncio.get_running_loop()

    def ensure_lease() -> None:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE_NAME}}
        try:
            api.create_namespaced_lease(namespace, body, _preload_content=False)
        except k8s_client.ApiException as exc:
            if exc.status != 409:
                raise

    def get() -> None:
        response = api.read_namespaced_lease(LEASE_NAME, namespace, _preload_content=False)
        response.read()

    await loop.run_in_executor(pool, ensure_lease)

    async def operation() -> None:
        await loop.run_in_executor(pool, get)

    async def close() -> None:
        pool.shutdown(wait=True)
        api_client.close()

    return operation, close
