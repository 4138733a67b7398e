"""A FastAPI app whose scheduled jobs run on one replica only.

The jobs start and stop with the app's lifespan: the Service campaigns in
a task on uvicorn's event loop, and a graceful stop (SIGTERM to uvicorn)
lets running jobs finish, then releases the lease so a standby takes over
at once. ``GET /leader`` says whether this replica leads; ``GET /healthz``
fails when a leader has missed its renew deadline (for a liveness probe).

    pip install 'leaderlib[examples]'
    uvicorn fastapi_service:app --app-dir examples --port 8000          # SQLite, this host
    LEADERLIB_BACKEND=redis://127.0.0.1:6379/0 uvicorn fastapi_service:app --app-dir examples

Start two on different ports; ``curl localhost:8000/leader`` on each.
Run uvicorn with one worker per replica: each worker process is a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Response

from leaderlib import JobContext, Service

logger = logging.getLogger("fastapi_service")

service = Service("fastapi-example")
runs = {"refresh-cache": 0}


@service.job(every=1, name="refresh-cache")
async def refresh_cache(ctx: JobContext) -> None:
    """A periodic job that must run once per tick across all replicas."""
    ctx.check()  # before the side effect: a paused ex-leader must not act
    runs["refresh-cache"] += 1
    logger.info("cache refreshed", extra={"fencing_token": ctx.fencing_token})


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    campaign = asyncio.create_task(service.run(), name="leaderlib")
    app.state.campaign = campaign
    try:
        yield
    finally:
        service.stop()  # no new runs; running ones get shutdown_grace; then the lease is released
        await campaign


app = FastAPI(lifespan=lifespan)


@app.get("/leader")
async def leader(response: Response) -> dict[str, Any]:
    """This replica's part in the election: 200 on the leader, 503 on a follower
    (so a readiness probe or a load balancer can route to the leader alone)."""
    leading = service.is_leader
    response.status_code = 200 if leading else 503
    return {"election": service.election, "is_leader": leading, "runs": dict(runs)}


@app.get("/healthz")
async def healthz(response: Response) -> dict[str, Any]:
    """200 while the election loop works; 503 if it ended or a leader outlived its deadline."""
    campaign: asyncio.Task[None] = app.state.campaign
    ok = not campaign.done() and service.healthy()
    response.status_code = 200 if ok else 503
    return {"ok": ok}
