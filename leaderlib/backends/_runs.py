"""The stored form of a :class:`JobRun`, the same JSON on every store.

One JSON object per job run (compact, keys sorted)::

    {"duration": 0.012, "fencing_token": 7, "identity": "pod-a", "job": "report",
     "next_tick": "2026-12-02T08:00:00+00:00", "outcome": "ok",
     "started_at": "2026-12-01T08:00:00.004211+00:00", "tick": "2026-12-01T08:00:00+00:00"}

Times are ISO 8601 with their offset; ``outcome``, ``duration`` and
``next_tick`` may be null. A record that does not read as this is reported as
:class:`CorruptLeaseRecord` naming the job and what was wrong, never guessed at.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from .._errors import CorruptLeaseRecord, LeaseLost
from . import JobRun

__all__ = ["decode_run", "encode_run", "fenced_out"]

_OUTCOMES = (None, "ok", "error", "cancelled")


def encode_run(run: JobRun) -> str:
    """The JSON a store keeps for ``run``."""
    return json.dumps(_as_object(run), sort_keys=True, separators=(",", ":"))


def _as_object(run: JobRun) -> dict[str, Any]:
    return {
        "job": run.job,
        "tick": run.tick.isoformat(),
        "fencing_token": run.fencing_token,
        "identity": run.identity,
        "started_at": run.started_at.isoformat(),
        "outcome": run.outcome,
        "duration": run.duration,
        "next_tick": None if run.next_tick is None else run.next_tick.isoformat(),
    }


def decode_run(raw: str | bytes, *, election: str, backend: str) -> JobRun:
    """Read one stored run record; :class:`CorruptLeaseRecord` if it is not one."""

    def corrupt(why: str) -> CorruptLeaseRecord:
        shown = repr(raw if len(raw) <= 200 else raw[:200]) + ("..." if len(raw) > 200 else "")
        return CorruptLeaseRecord(
            f"a job's run record is unreadable ({why}): {shown}; it was not written by "
            "leaderlib, or by a newer version. Delete it (the job only loses its last-run "
            "history) or fix the writer",
            election=election,
            backend=backend,
        )

    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise corrupt(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise corrupt("not a JSON object")
    try:
        job, identity, token = data["job"], data["identity"], data["fencing_token"]
        outcome, duration = data.get("outcome"), data.get("duration")
        if not isinstance(job, str) or not job:
            raise corrupt("'job' is not a non-empty string")
        if not isinstance(identity, str):
            raise corrupt("'identity' is not a string")
        if not isinstance(token, int) or isinstance(token, bool):
            raise corrupt("'fencing_token' is not an integer")
        if outcome not in _OUTCOMES:
            raise corrupt(f"'outcome' is {outcome!r}, not one of ok, error, cancelled or null")
        if duration is not None and (not isinstance(duration, int | float) or isinstance(duration, bool)):
            raise corrupt("'duration' is not a number")
        return JobRun(
            job=job,
            tick=_time(data["tick"], "tick", corrupt),
            fencing_token=token,
            identity=identity,
            started_at=_time(data["started_at"], "started_at", corrupt),
            outcome=outcome,
            duration=None if duration is None else float(duration),
            next_tick=None
            if data.get("next_tick") is None
            else _time(data["next_tick"], "next_tick", corrupt),
        )
    except KeyError as exc:
        raise corrupt(f"no {exc.args[0]!r}") from None


def _time(value: Any, key: str, corrupt: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise corrupt(f"{key!r} is not a string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise corrupt(f"{key!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise corrupt(f"{key!r} has no UTC offset")
    return parsed


def fenced_out(
    run: JobRun, *, holder: str | None, token: int | None, backend: str, election: str
) -> LeaseLost:
    """The :class:`LeaseLost` a store raises when ``run``'s term is not the current one.

    ``holder``/``token`` describe what the store holds now (None: no lease).
    """
    if not holder:
        now = "released or expired"
    elif holder != run.identity:
        now = f"held by {holder!r} (token {token})"
    else:
        now = f"in a later term of {holder!r} (token {token})"
    return LeaseLost(
        f"run record of job {run.job!r} refused: the term with fencing token "
        f"{run.fencing_token} is over; the lease is {now}",
        election=election,
        backend=backend,
    )
