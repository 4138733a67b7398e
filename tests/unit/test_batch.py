"""The Batcher: requests queued together go out together, one batch at a time; errors and
cancellations stay with their own request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import pytest

from leaderlib.backends._batch import Batcher


class Store:
    """A store that answers each batch after ``gate`` opens, and records the batches it got."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, requests: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(requests))
        await self.gate.wait()
        return [ValueError(f"odd {r}") if r % 2 else r * 10 for r in requests]


async def test_requests_queued_while_a_batch_is_out_go_in_the_next_one() -> None:
    store = Store()
    batcher: Batcher[int, int] = Batcher(store.send, limit=100)
    store.gate.clear()
    first = batcher.submit(0)
    await asyncio.sleep(0)  # the first batch goes out alone
    rest = [batcher.submit(n) for n in range(2, 12, 2)]
    store.gate.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [20, 40, 60, 80, 100]
    assert store.batches == [[0], [2, 4, 6, 8, 10]]


async def test_a_batch_holds_at_most_limit_requests() -> None:
    store = Store()
    batcher: Batcher[int, int] = Batcher(store.send, limit=3)
    assert await asyncio.gather(*(batcher.submit(n) for n in range(0, 14, 2))) == list(range(0, 140, 20))
    assert [len(batch) for batch in store.batches] == [3, 3, 1]


async def test_an_error_belongs_to_its_request_and_a_failed_batch_to_all_of_it() -> None:
    store = Store()
    batcher: Batcher[int, int] = Batcher(store.send, limit=10)
    two, three = batcher.submit(2), batcher.submit(3)
    assert await two == 20
    with pytest.raises(ValueError, match="odd 3"):
        await three

    async def broken(requests: Sequence[int]) -> list[int | Exception]:
        raise ConnectionError("store gone")

    batcher = Batcher(broken, limit=10)
    calls = [batcher.submit(n) for n in (2, 4)]
    for call in calls:
        with pytest.raises(ConnectionError, match="store gone"):
            await call


async def test_a_request_whose_caller_stopped_waiting_is_not_sent() -> None:
    store = Store()
    batcher: Batcher[int, int] = Batcher(store.send, limit=10)
    store.gate.clear()
    first = batcher.submit(0)
    await asyncio.sleep(0)
    late, kept = batcher.submit(2), batcher.submit(4)
    late.cancel()  # its deadline passed while it was queued
    store.gate.set()
    assert (await first, await kept) == (0, 40)
    assert store.batches == [[0], [4]]


async def test_aclose_fails_what_is_queued_or_in_flight() -> None:
    store = Store()
    batcher: Batcher[int, int] = Batcher(store.send, limit=10)
    store.gate.clear()
    in_flight = batcher.submit(0)
    await asyncio.sleep(0)
    queued = batcher.submit(2)
    await batcher.aclose()
    for call in (in_flight, queued):
        with pytest.raises(ConnectionError, match="closed"):
            await call


async def test_a_lone_call_goes_out_at_once_in_the_callers_task() -> None:
    """Nothing out or queued: call() sends in the calling task (no batch task, no hop)."""
    senders: list[asyncio.Task[object] | None] = []

    async def send(requests: Sequence[int]) -> list[int | Exception]:
        senders.append(asyncio.current_task())
        return [r * 10 for r in requests]

    batcher: Batcher[int, int] = Batcher(send, limit=10)
    assert await batcher.call(2) == 20
    assert senders == [asyncio.current_task()]
    with pytest.raises(ValueError, match="odd 3"):
        await Batcher(Store().send, limit=10).call(3)


async def test_calls_made_while_a_lone_call_is_out_go_together_after_it() -> None:
    store = Store()
    batcher: Batcher[int, int] = Batcher(store.send, limit=10)
    store.gate.clear()
    lone = asyncio.create_task(batcher.call(0))
    await asyncio.sleep(0)  # out, in its own task
    rest = [asyncio.create_task(batcher.call(n)) for n in (2, 4, 6)]
    await asyncio.sleep(0)
    assert store.batches == [[0]]
    store.gate.set()
    assert await lone == 0
    assert await asyncio.gather(*rest) == [20, 40, 60]
    assert store.batches == [[0], [2, 4, 6]]


async def test_a_lone_caller_cancelled_leaves_the_queue_to_go_out() -> None:
    store = Store()
    batcher: Batcher[int, int] = Batcher(store.send, limit=10)
    store.gate.clear()
    lone = asyncio.create_task(batcher.call(0))
    await asyncio.sleep(0)
    queued = asyncio.create_task(batcher.call(2))
    await asyncio.sleep(0)
    lone.cancel()  # its deadline passed: the driver's call is cancelled with it
    with pytest.raises(asyncio.CancelledError):
        await lone
    store.gate.set()
    assert await queued == 20
    assert store.batches == [[0], [2]]


async def test_a_cancellation_the_driver_lost_is_raised_by_a_lone_call() -> None:
    """redis-py under Python 3.11's wait_for may finish a call it was asked to cancel."""
    release = asyncio.Event()

    async def deaf(requests: Sequence[int]) -> list[int | Exception]:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        return list(requests)

    batcher: Batcher[int, int] = Batcher(deaf, limit=10)
    lone = asyncio.create_task(batcher.call(1))
    await asyncio.sleep(0)
    lone.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await lone
