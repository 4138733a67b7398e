"""Every election's script calls, pipelined: one round trip for all the calls due together.

Each lease write is one EVALSHA (``_scripts``); the backend object sends
them through one :class:`~leaderlib.backends._batch.Batcher`, which hands
:func:`run_scripts` the calls queued while the previous pipeline was out.
Sent one by one, 10,000 elections' renewals cost the client about 200 us
of CPU each (a pooled connection, a write and a read per call); pipelined,
about 30 us each, and Redis runs them back to back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc

from ..._logging import get_logger
from ._connection import Wait
from ._scripts import Script

__all__ = ["Call", "run_scripts"]

logger = get_logger("leaderlib.backends.redis")

#: The most calls in one pipeline: Redis runs a pipeline's scripts back to
#: back, so this bounds how long one batch keeps other clients waiting (a few ms).
BATCH_LIMIT = 500


@dataclasses.dataclass(frozen=True)
class Call:
    """One script call: its keys and arguments, and whether replicas must confirm its writes."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    confirm: bool = False
    """With ``wait_replicas``: count the replicas that have this call's writes (``WAIT``)."""


#: A call's outcome: the script's reply and how many replicas confirmed it (0 when
#: not asked), or the error that call alone got.
Outcome = tuple[Any, int] | Exception


async def run_scripts(client: aioredis.Redis, wait: Wait, calls: Sequence[Call]) -> list[Outcome]:
    """Run ``calls`` in one pipeline; their outcomes, in order.

    A script the server does not know (NOSCRIPT: first use on this server,
    or it restarted or ran SCRIPT FLUSH) ran nothing, so it is loaded and
    its calls are sent again, in a second pipeline.
    """
    outcomes = await _pipelined(client, wait, calls)
    again = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, rexc.NoScriptError)]
    if again:
        for script in {calls[i].script for i in again}:
            logger.debug("loading lua script", extra={"script": script.name})
            await client.script_load(script.source)
        for i, outcome in zip(again, await _pipelined(client, wait, [calls[i] for i in again]), strict=True):
            outcomes[i] = outcome
    return outcomes


async def _pipelined(client: aioredis.Redis, wait: Wait, calls: Sequence[Call]) -> list[Outcome]:
    """One pipeline of EVALSHAs; with ``wait_replicas``, one ``WAIT`` after them all.

    A lone call with nothing to confirm is a plain EVALSHA: the same bytes on
    the wire, without redis-py's pipeline (which hands its connection back
    through a shielded task: a hop through the event loop per call).

    ``WAIT`` counts the replicas that have every write made on ITS
    connection so far, so one at the end confirms each call of the pipeline.
    """
    confirming = wait.replicas > 0 and any(call.confirm for call in calls)
    if len(calls) == 1 and not confirming:
        call = calls[0]
        try:
            return [(await client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args), 0)]
        except rexc.ResponseError as exc:
            return [exc]
    async with client.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        if confirming:
            pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    waited: Any = replies.pop() if confirming else 0
    outcomes: list[Outcome] = []
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            outcomes.append(reply)
        elif not call.confirm:
            outcomes.append((reply, 0))
        elif isinstance(waited, Exception):
            outcomes.append(waited)
        else:
            outcomes.append((reply, int(waited)))
    return outcomes
