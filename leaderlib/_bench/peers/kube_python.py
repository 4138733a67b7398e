"""The ``kubernetes`` client's own electors with their ``LeaseLock``: ``kubernetes.leaderelection``
(threads, blocking) and ``kubernetes.aio.leaderelection`` (asyncio).

Neither can be stopped nor releases the Lease: a graceful stop is the process
exiting, and the follower waits out the lease (as after a crash). Both poll
every ``retry_period`` (at least 1 s, which their config enforces; their
example uses 5 s) and count expiry on the wall clock. Stopping one here makes
its lock raise, which ends its loop (the library offers no other way).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from typing import Any, ClassVar

from ..stores import Target
from . import BENCH_TIMING, Emit, Peer, in_thread_until_cancelled

RETRY = 1.0

_SETTINGS = (
    f"lease {BENCH_TIMING.lease:g} s, renew_deadline {BENCH_TIMING.renew_deadline:g} s, retry_period "
    f"{RETRY:g} s (matched as close as it allows: its minimum; its example uses 17/15/5 s)"
)
_NO_RELEASE = "no release on stop: the follower waits out the lease"


class _Stopped(Exception):
    """Raised by a stopped lock to end the elector's loop."""


def _sync_lock(target: Target, election: str, identity: str, stop: threading.Event, emit: Emit) -> Any:
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    class StoppableLeaseLock(LeaseLock):  # type: ignore[misc]
        leading = False

        def get(self, name: str, namespace: str) -> Any:
            if stop.is_set():
                raise _Stopped
            return super().get(name, namespace)

        def update(self, name: str, namespace: str, record: Any) -> Any:
            if self.leading:
                emit("renew")
            return super().update(name, namespace, record)

    return StoppableLeaseLock(election, target.namespace, identity)


def _sync_config(lock: Any, on_leading: Any) -> Any:
    from kubernetes.leaderelection import electionconfig

    return electionconfig.Config(
        lock, lease_duration=int(BENCH_TIMING.lease), renew_deadline=int(BENCH_TIMING.renew_deadline),
        retry_period=int(RETRY), onstarted_leading=on_leading, onstopped_leading=lambda: None,
    )  # fmt: skip


class KubeLeaseLockPeer(Peer):
    key = "kubernetes-leaselock"
    subject = "kubernetes LeaseLock"
    settings = _SETTINGS
    unsupported: ClassVar[dict[str, str]] = {
        "scale": "not measured: each election is a blocking run() in a thread of its own",
    }
    note = _NO_RELEASE

    def _configure(self, target: Target) -> None:
        from kubernetes import config

        config.load_kube_config(config_file=target.kubeconfig or None)

    async def acquire_samples(self, target: Target, n: int) -> list[float]:
        from kubernetes.leaderelection import leaderelection

        self._configure(target)

        def measure() -> list[float]:
            samples = []
            for _ in range(n):
                stop, leading = threading.Event(), threading.Event()
                lock = _sync_lock(target, f"bench-k8s-{uuid.uuid4().hex[:8]}", "bench", stop, lambda _e: None)
                election = leaderelection.LeaderElection(_sync_config(lock, leading.set))
                started = time.perf_counter()
                thread = threading.Thread(target=_run_until_stopped, args=(election,), daemon=True)
                thread.start()
                if not leading.wait(10.0):
                    raise RuntimeError("kubernetes LeaseLock did not lead within 10 s")
                samples.append(time.perf_counter() - started)
                stop.set()
            return samples

        return await asyncio.to_thread(measure)

    async def renew_samples(self, target: Target, n: int) -> list[float]:
        from kubernetes.leaderelection import leaderelection

        self._configure(target)

        def measure() -> list[float]:
            lock = _sync_lock(
                target, f"bench-k8s-{uuid.uuid4().hex[:8]}", "bench", threading.Event(), _ignore
            )
            election = leaderelection.LeaderElection(_sync_config(lock, lambda: None))
            assert election.try_acquire_or_renew()
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                assert election.try_acquire_or_renew()
                samples.append(time.perf_counter() - started)
            return samples

        return await asyncio.to_thread(measure)

    async def campaign(self, target: Target, election: str, identity: str, emit: Emit) -> None:
        from kubernetes.leaderelection import leaderelection

        self._configure(target)

        def loop(stop: threading.Event) -> None:
            lock = _sync_lock(target, election, identity, stop, emit)

            def leading() -> None:
                lock.leading = True
                emit("leading")

            emit("started")
            _run_until_stopped(leaderelection.LeaderElection(_sync_config(lock, leading)))

        await in_thread_until_cancelled(loop)


def _run_until_stopped(election: Any) -> None:
    with contextlib.suppress(_Stopped):
        election.run()


class KubeAioLeaseLockPeer(Peer):
    key = "kubernetes-aio-leaselock"
    subject = "kubernetes.aio LeaseLock"
    settings = _SETTINGS + "; create() patched (37.0.2 passes pretty=True, which its validation rejects)"
    unsupported: ClassVar[dict[str, str]] = {
        "scale": "not measured: no shared client or multiplexing; one run() task and poller per election",
    }
    note = _NO_RELEASE

    async def _api_client(self, target: Target) -> Any:
        from kubernetes.aio import client, config

        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=target.kubeconfig or None, client_configuration=configuration, persist_config=False
        )
        return client.ApiClient(configuration)

    def _election(self, api: Any, name: str, identity: str, on_leading: Any, emit: Emit | None) -> Any:
        from kubernetes.aio.leaderelection.electionconfig import Config
        from kubernetes.aio.leaderelection.leaderelection import LeaderElection
        from kubernetes.aio.leaderelection.resourcelock.leaselock import LeaseLock

        class ObservedLeaseLock(LeaseLock):  # type: ignore[misc]
            leading = False

            async def update(self, *args: Any, **kwargs: Any) -> Any:
                if self.leading and emit is not None:
                    emit("renew")
                return await super().update(*args, **kwargs)

            async def create(self, name: str, namespace: str, election_record: Any) -> bool:
                # As LeaseLock.create, without its pretty=True, which the client's own
                # validation rejects (kubernetes 37.0.2): unpatched, it never creates a Lease.
                from kubernetes.aio import client
                from kubernetes.aio.client.exceptions import ApiException

                body = client.V1Lease(
                    metadata=client.V1ObjectMeta(name=name), spec=self.update_lease(election_record)
                )
                try:
                    await self.api_instance.create_namespaced_lease(namespace, body)
                except ApiException:
                    return False
                return True

        lock = ObservedLeaseLock(name, self.namespace, identity, api)

        async def leading() -> None:
            lock.leading = True
            await on_leading()

        async def stopped() -> None:
            pass

        # Whole seconds: it writes leaseDurationSeconds as str(lease_duration).
        config = Config(
            lock, int(BENCH_TIMING.lease), int(BENCH_TIMING.renew_deadline), int(RETRY), leading, stopped
        )
        return LeaderElection(config)

    async def acquire_samples(self, target: Target, n: int) -> list[float]:
        self.namespace = target.namespace
        api = await self._api_client(target)
        samples = []
        try:
            for _ in range(n):
                leading = asyncio.Event()

                async def on_leading(leading: asyncio.Event = leading) -> None:
                    leading.set()

                election = self._election(api, f"bench-k8s-{uuid.uuid4().hex[:8]}", "bench", on_leading, None)
                started = time.perf_counter()
                task = asyncio.create_task(election.run())
                await asyncio.wait_for(leading.wait(), 10.0)
                samples.append(time.perf_counter() - started)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await api.close()
        return samples

    async def renew_samples(self, target: Target, n: int) -> list[float]:
        self.namespace = target.namespace
        api = await self._api_client(target)
        try:
            election = self._election(api, f"bench-k8s-{uuid.uuid4().hex[:8]}", "bench", _nothing, None)
            assert await election.try_acquire_or_renew()
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                assert await election.try_acquire_or_renew()
                samples.append(time.perf_counter() - started)
        finally:
            await api.close()
        return samples

    async def campaign(self, target: Target, election: str, identity: str, emit: Emit) -> None:
        self.namespace = target.namespace
        api = await self._api_client(target)

        async def on_leading() -> None:
            emit("leading")

        try:
            emit("started")
            await self._election(api, election, identity, on_leading, emit).run()
        finally:
            await api.close()


def _ignore(_event: str) -> None:
    pass


async def _nothing() -> None:
    pass
