"""Metrics and spans through the OpenTelemetry API.

The library only uses the API: without an SDK configured by the application
(the CLI configures one), every instrument is a no-op that costs a function
call. Names follow ``leaderlib.<thing>.<measure>``; attributes are
``election``, ``backend``, ``job`` and ``outcome``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from opentelemetry import metrics, trace

__all__ = ["instruments", "span", "start_election", "start_job", "tracer"]

#: Fine buckets under 10 ms, where acquisition and renewal latency live on loopback.
_LATENCY_MS_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500, 5000)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

tracer = trace.get_tracer("leaderlib")

#: Tracer providers that record nothing: the API's default until an SDK is set, and its explicit no-op.
_NO_TRACING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
#: What :func:`span` returns without a provider (a nullcontext is reusable).
_NOTHING: contextlib.AbstractContextManager[object] = contextlib.nullcontext()


def span(name: str, attributes: Mapping[str, str | int]) -> contextlib.AbstractContextManager[object]:
    """A current span named ``name``; nothing at all while no tracer provider is set.

    The API's no-op span still attaches and detaches a context per call, which
    was a tenth of the elector's own time per acquisition; checking the
    provider costs a global lookup, and a provider set later is used from then on.
    """
    if isinstance(trace.get_tracer_provider(), _NO_TRACING):
        return _NOTHING
    return tracer.start_as_current_span(name, attributes=attributes)


#: The outcomes ``leaderlib.transitions`` counts: a term began (acquired), ended
#: because renewal failed or its deadline passed (lost), or ended by a graceful
#: stop (stopping; the lease is then released unless ``release_on_shutdown`` is
#: false, so "released" would not always be true).
TRANSITION_OUTCOMES = ("acquired", "lost", "stopping")

#: The outcomes ``leaderlib.job.runs`` counts.
JOB_OUTCOMES = ("ok", "error", "cancelled")


class _Instruments:
    """Every instrument leaderlib records to, created once."""

    def __init__(self) -> None:
        meter = metrics.get_meter("leaderlib")
        self.acquire_duration = meter.create_histogram(
            "leaderlib.acquire.duration",
            unit="ms",
            description="Time of one acquisition attempt, by outcome (acquired, held, error).",
            explicit_bucket_boundaries_advisory=_LATENCY_MS_BUCKETS,
        )
        self.renew_duration = meter.create_histogram(
            "leaderlib.renew.duration",
            unit="ms",
            description="Time of one renewal, retries included, by outcome (renewed, lost, error).",
            explicit_bucket_boundaries_advisory=_LATENCY_MS_BUCKETS,
        )
        self.is_leader = meter.create_up_down_counter(
            "leaderlib.is_leader",
            description="1 while this replica leads the election, else 0.",
        )
        self.transitions = meter.create_counter(
            "leaderlib.transitions",
            description=f"Leadership changes of this replica, by outcome ({', '.join(TRANSITION_OUTCOMES)}).",
        )
        self.failover = meter.create_histogram(
            "leaderlib.failover.duration",
            unit="s",
            description="From the last change seen of the previous holder's lease to this replica's acquisition.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.job_runs = meter.create_counter(
            "leaderlib.job.runs",
            description="Job runs, by outcome (ok, error, cancelled).",
        )
        self.job_skipped = meter.create_counter(
            "leaderlib.job.skipped",
            description="Ticks skipped because the previous run of the job was still going.",
        )
        self.ticks_recovered = meter.create_counter(
            "leaderlib.job.ticks_recovered",
            description="Missed ticks run late, within the job's misfire_grace, by this leader.",
        )
        self.ticks_already_run = meter.create_counter(
            "leaderlib.job.ticks_already_run",
            description="Ticks not started because the job's run record shows them run already "
            "(by a leader whose wall clock ran ahead).",
        )
        self.misfires = meter.create_counter(
            "leaderlib.job.misfires",
            description="Missed ticks not run: later than the job's misfire_grace, or coalesced into a later one.",
        )
        self.job_duration = meter.create_histogram(
            "leaderlib.job.duration",
            unit="s",
            description="Duration of job runs.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )


instruments = _Instruments()


# Series start at 0 the moment an election or job exists, not at their first
# event: a follower then reports is_leader 0 (no series at all cannot be told
# from a replica that was not scraped), and Prometheus's rate() and increase()
# see a counter's first increment (a series born at 1 hides it, so the first
# failover or the first failed run would go unseen by an alert).


def start_election(attributes: dict[str, str]) -> None:
    """Create an election's series (``election``, ``backend``) at 0."""
    instruments.is_leader.add(0, attributes)
    for outcome in TRANSITION_OUTCOMES:
        instruments.transitions.add(0, {**attributes, "outcome": outcome})


def start_job(attributes: dict[str, str]) -> None:
    """Create a job's counters (``job``, ``election``) at 0."""
    instruments.job_skipped.add(0, attributes)
    for counter in (instruments.ticks_recovered, instruments.ticks_already_run, instruments.misfires):
        counter.add(0, attributes)
    for outcome in JOB_OUTCOMES:
        instruments.job_runs.add(0, {**attributes, "outcome": outcome})
