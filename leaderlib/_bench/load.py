"""Load: requests per second the store's SERVER receives from 1 leader + N followers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

from .model import Row, progress
from .peers import Candidate, Peer
from .plan import Plan
from .processes import SETTLE
from .stores import RequestCounter, Target


class Recorder:
    """Events of in-process candidates: identity -> event -> CLOCK_MONOTONIC stamps."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, list[float]]] = {}

    def emitter(self, identity: str) -> Callable[[str], None]:
        def emit(event: str) -> None:
            self.events.setdefault(identity, {}).setdefault(event, []).append(time.monotonic())

        return emit

    def has(self, identity: str, event: str) -> bool:
        return bool(self.events.get(identity, {}).get(event))


async def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _in_process(target: Target, peer: Peer, followers: int, window: float) -> float:
    """Requests/s with ``followers`` + 1 candidates of ``peer`` in this process."""
    election = f"bench-load-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    tasks: list[asyncio.Task[None]] = []
    with RequestCounter(target) as counter:
        try:
            tasks.append(asyncio.create_task(peer.campaign(target, election, "l", recorder.emitter("l"))))
            if not await _wait(lambda: recorder.has("l", "leading"), 30.0):
                raise RuntimeError("the leader did not lead within 30 s")
            for i in range(followers):
                emit = recorder.emitter(f"f{i}")
                tasks.append(asyncio.create_task(peer.campaign(target, election, f"f{i}", emit)))
            started = lambda: all(recorder.has(f"f{i}", "started") for i in range(followers))  # noqa: E731
            if not await _wait(started, 60.0):
                raise RuntimeError("the followers did not start within 60 s")
            await asyncio.sleep(max(1.0, SETTLE.get(peer.key, 0.0)))  # set-up requests are not load
            before, begun = counter.read(), time.monotonic()
            await asyncio.sleep(window)
            after, ended = counter.read(), time.monotonic()
            return (after - before) / (ended - begun)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20.0)


async def _in_processes(target: Target, peer: Peer, followers: int, window: float) -> float:
    """Requests/s with ``followers`` + 1 candidates of ``peer`` each in a process (client-go)."""
    election = f"bench-load-{uuid.uuid4().hex[:8]}"
    candidates: list[Candidate] = []
    with RequestCounter(target) as counter:
        try:
            candidates.append(peer.spawn(target, election, "l"))
            if candidates[0].wait("leading", 30.0) is None:
                raise RuntimeError("the leader did not lead within 30 s")
            candidates += [peer.spawn(target, election, f"f{i}") for i in range(followers)]
            for candidate in candidates[1:]:
                if candidate.wait("started", 60.0) is None:
                    raise RuntimeError("a follower did not see the leader within 60 s")
            await asyncio.sleep(1.0)
            before, begun = counter.read(), time.monotonic()
            await asyncio.sleep(window)
            after, ended = counter.read(), time.monotonic()
            return (after - before) / (ended - begun)
        finally:
            for candidate in candidates:
                candidate.terminate()
            for candidate in candidates:
                with contextlib.suppress(Exception):
                    candidate.close(5.0)


async def load(target: Target, peer: Peer, plan: Plan) -> Row:
    row = Row(target.store, "load", peer.subject, settings=peer.settings, unit="requests/s")
    if "load" in peer.unsupported:
        row.status, row.why = "n/a", peer.unsupported["load"]
        return row
    measure = _in_processes if peer.key.startswith("client-go") else _in_process
    row.extra["counted_by"] = RequestCounter(target).kind
    for followers in plan.followers:
        progress(f"{target.store} · load · {peer.subject} · 1 leader + {followers} followers")
        try:
            rate = await measure(target, peer, followers, plan.load_window)
        except Exception as exc:
            row.status, row.why = "error", f"N={followers}: {type(exc).__name__}: {exc}"[:300]
            break
        row.points.append({"followers": followers, "requests_per_s": round(rate, 3)})
    base = next((p["requests_per_s"] for p in row.points if p["followers"] == 0), None)
    for point in row.points:
        if base is not None and point["followers"]:
            point["per_follower"] = round((point["requests_per_s"] - base) / point["followers"], 3)
    return row
