"""A candidate in a child process, for handover and failover:

    python -m leaderlib._bench.child PEER TARGET_JSON ELECTION IDENTITY

Campaigns with the named peer until SIGTERM/SIGINT (a graceful stop: the
peer releases if it can) or SIGKILL, and prints one JSON line per event on
stdout: ``{"event": "started" | "leading" | "renew", "mono": CLOCK_MONOTONIC}``.
It exits by itself after :data:`MAX_LIFETIME` seconds, and with its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time

from leaderlib.testing.servers import die_with_parent

from .peers import load_peer
from .stores import Target

MAX_LIFETIME = 300.0


def emit(event: str) -> None:
    sys.stdout.write(json.dumps({"event": event, "mono": time.monotonic()}) + "\n")
    sys.stdout.flush()


async def _main(peer_key: str, target: Target, election: str, identity: str) -> None:
    peer = load_peer(peer_key, target.store)
    campaign = asyncio.create_task(peer.campaign(target, election, identity, emit))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, campaign.cancel)
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(campaign, MAX_LIFETIME)


def main(argv: list[str]) -> int:
    die_with_parent()
    peer_key, target_json, election, identity = argv
    asyncio.run(_main(peer_key, Target.parse(target_json), election, identity))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
