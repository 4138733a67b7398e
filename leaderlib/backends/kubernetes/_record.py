"""The Lease on the wire: MicroTime, the record client-go writes, the names a Lease can have,
and the annotation that holds the election's job run records."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

from ..._errors import BackendError, ConfigError, CorruptLeaseRecord
from .. import FIRST_TOKEN, JobRun, LeaseRecord
from .._runs import decode_run, encode_run

__all__ = [
    "RUNS_ANNOTATION",
    "decode_runs",
    "format_microtime",
    "lease_duration_seconds",
    "lease_spec",
    "parse_microtime",
    "record_from_lease",
    "validate_lease_name",
    "with_run",
]

# RFC 1123 subdomain, as the API server validates object names.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def format_microtime(when: dt.datetime) -> str:
    """Return ``when`` as a Kubernetes MicroTime: UTC, exactly six fractional digits, ``Z``.

    The API server parses MicroTime with a fixed layout; ``+00:00`` or a missing
    fraction (what ``isoformat`` gives for a whole second) is rejected.
    """
    if when.tzinfo is None:
        raise ValueError("MicroTime needs an aware datetime")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_microtime(text: str) -> dt.datetime:
    """Return the aware UTC datetime of a MicroTime or RFC 3339 time; ValueError if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"expected a time string, got {text!r}")
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return when.astimezone(dt.UTC)


def lease_duration_seconds(lease_duration: float) -> int:
    """``leaseDurationSeconds`` for a duration in seconds: whole seconds, rounded up, at least 1.

    Rounding up keeps the leader safe: followers wait at least as long as the
    leader believes its lease lasts.
    """
    # The tolerance keeps 2.0000000001 (float noise) from becoming 3.
    return max(1, math.ceil(lease_duration - 1e-9))


def validate_lease_name(election: str) -> str:
    """Return ``election`` if it can name a Lease (a DNS-1123 subdomain); ConfigError otherwise."""
    if not isinstance(election, str) or len(election) > 253 or not _DNS_SUBDOMAIN.fullmatch(election):
        raise ConfigError(
            f"{election!r} cannot name a Kubernetes Lease: the election name must be a DNS-1123 "
            "subdomain (at most 253 characters of lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit), e.g. 'billing-cron'",
            field="election",
        )
    return election


def record_from_lease(election: str, lease: dict[str, Any], *, backend: str = "kubernetes") -> LeaseRecord:
    """Read a Lease object (as the API server returns it, decoded JSON) as a :class:`LeaseRecord`.

    A Lease with a holder but no positive ``leaseDurationSeconds`` cannot be
    judged (client-go would treat it as expired at once, leaderlib refuses to
    guess) and raises :class:`CorruptLeaseRecord`, as does any field of the
    wrong type. A Lease without a holder is free.
    """
    name = lease.get("metadata", {}).get("name", election) if isinstance(lease, dict) else election

    def corrupt(why: str) -> CorruptLeaseRecord:
        return CorruptLeaseRecord(
            f"Lease {name!r} is not a leader-election record: {why}; fix or delete it "
            f"(kubectl delete lease {name} -n NAMESPACE) and the electors will recreate it",
            election=election,
            backend=backend,
        )

    if not isinstance(lease, dict):
        raise corrupt("the API server returned something that is not an object")
    metadata = lease.get("metadata")
    spec = lease.get("spec") or {}
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        raise corrupt("metadata or spec is not an object")
    version = metadata.get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise corrupt("metadata.resourceVersion is missing")
    holder = spec.get("holderIdentity") or ""
    if not isinstance(holder, str):
        raise corrupt(f"holderIdentity is {holder!r}, not a string")
    duration = spec.get("leaseDurationSeconds")
    transitions = spec.get("leaseTransitions") or 0
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int)):
        raise corrupt(f"leaseDurationSeconds is {duration!r}, not an integer")
    if holder and (duration is None or duration <= 0):
        raise corrupt(f"holder {holder!r} is set but leaseDurationSeconds is {duration!r}")
    if isinstance(transitions, bool) or not isinstance(transitions, int) or transitions < 0:
        raise corrupt(f"leaseTransitions is {transitions!r}, not a non-negative integer")
    times: dict[str, dt.datetime | None] = {}
    for key in ("acquireTime", "renewTime"):
        raw = spec.get(key)
        try:
            times[key] = None if raw is None else parse_microtime(raw)
        except ValueError:
            raise corrupt(f"{key} is {raw!r}, not a time") from None
    return LeaseRecord(
        election=election,
        holder=holder,
        lease_duration=float(duration or 0),
        fencing_token=transitions + FIRST_TOKEN,
        version=version,
        transitions=transitions,
        acquire_time=times["acquireTime"],
        renew_time=times["renewTime"],
        expires_in=None,
    )


def lease_spec(
    holder: str, duration_seconds: int, acquire_time: str, renew_time: str, transitions: int
) -> dict[str, Any]:
    """The spec client-go's ``LeaderElectionRecordToLeaseSpec`` writes; times already MicroTime."""
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration_seconds,
        "acquireTime": acquire_time,
        "renewTime": renew_time,
        "leaseTransitions": transitions,
    }


# --- reading fields of a Lease object ------------------------------------------------


def version_of(lease: dict[str, Any]) -> str:
    return str((lease.get("metadata") or {}).get("resourceVersion") or "")


def holder_of(lease: dict[str, Any]) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def spec_time(lease: dict[str, Any], key: str, default: str) -> str:
    """The spec's time ``key`` re-formatted as MicroTime, or ``default``."""
    raw = (lease.get("spec") or {}).get(key)
    try:
        return format_microtime(parse_microtime(raw)) if raw else default
    except ValueError:
        return default


def spec_int(lease: dict[str, Any], key: str, default: int) -> int:
    value = (lease.get("spec") or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def format_or(when: dt.datetime | None, default: str) -> str:
    return default if when is None else format_microtime(when)


def term_of(lease: dict[str, Any]) -> tuple[str, int]:
    """The term a Lease object shows: (holderIdentity, leaseTransitions); holder "" if released."""
    return holder_of(lease), spec_int(lease, "leaseTransitions", 0)


# --- job run records: one annotation on the election's own Lease -------------------

#: The annotation holding every job's last run: a JSON object, job name -> the
#: run as ``_runs.encode_run`` writes it. A qualified name (prefix a DNS
#: subdomain, name at most 63 characters); job names only appear in the value,
#: so any job name fits. client-go ignores annotations and keeps them on update.
RUNS_ANNOTATION = "leaderlib.dev/last-runs"

#: The API server's limit on a Lease's annotations, keys plus values
#: (TotalAnnotationSizeLimitB, 256 KiB); a write above it is refused with 422.
ANNOTATIONS_LIMIT = 256 * 1024


def _stored_runs(lease: dict[str, Any], *, election: str, backend: str) -> dict[str, Any]:
    """The annotation's JSON object (job -> stored run, undecoded); {} if there is none."""
    raw = ((lease.get("metadata") or {}).get("annotations") or {}).get(RUNS_ANNOTATION)
    if raw is None:
        return {}
    try:
        runs = json.loads(raw)
    except ValueError:
        runs = None
    if not isinstance(runs, dict):
        shown = repr(raw if len(raw) <= 200 else raw[:200] + "...")
        raise CorruptLeaseRecord(
            f"the Lease's annotation {RUNS_ANNOTATION} is not a JSON object of job run records: "
            f"{shown}; remove it (kubectl annotate lease {election} {RUNS_ANNOTATION}-), which "
            "only loses the jobs' last-run history",
            election=election,
            backend=backend,
        )
    return runs


def decode_runs(lease: dict[str, Any], *, election: str, backend: str) -> dict[str, JobRun]:
    """Every job's last run stored on the Lease object; CorruptLeaseRecord if one is unreadable."""
    runs = {}
    for job, stored in _stored_runs(lease, election=election, backend=backend).items():
        # Each job's value is the one codec's JSON object: decoded by that codec.
        run = decode_run(json.dumps(stored), election=election, backend=backend)
        if run.job != job:
            raise CorruptLeaseRecord(
                f"the run record stored for job {job!r} in annotation {RUNS_ANNOTATION} is job "
                f"{run.job!r}'s; it was not written by leaderlib",
                election=election,
                backend=backend,
            )
        runs[job] = run
    return runs


def with_run(lease: dict[str, Any], run: JobRun, *, election: str, backend: str) -> dict[str, str]:
    """The Lease's annotations with ``run`` as its job's last run; other jobs' records kept as stored.

    BackendError if the annotations would exceed the API server's 256 KiB,
    rather than a write the server refuses with a less helpful 422.
    """
    runs = _stored_runs(lease, election=election, backend=backend)
    runs[run.job] = json.loads(encode_run(run))
    annotations = dict((lease.get("metadata") or {}).get("annotations") or {})
    # Compact with sorted keys, as encode_run: each job's part is exactly its JSON.
    annotations[RUNS_ANNOTATION] = json.dumps(runs, sort_keys=True, separators=(",", ":"))
    size = sum(len(key.encode()) + len(value.encode()) for key, value in annotations.items())
    if size > ANNOTATIONS_LIMIT:
        ours = len(RUNS_ANNOTATION) + len(annotations[RUNS_ANNOTATION].encode())
        raise BackendError(
            f"cannot record the run of job {run.job!r}: the Lease's annotations would take "
            f"{size} bytes, over the API server's limit of {ANNOTATIONS_LIMIT} (256 KiB); the "
            f"run records of {len(runs)} jobs take {ours} bytes of it. Use fewer jobs with "
            "misfire_grace in this election (or per-job mode, one Lease per job), or remove "
            "other annotations from the Lease",
            election=election,
            backend=backend,
        )
    return annotations
