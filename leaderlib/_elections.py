"""Which election each job campaigns in, and whether the store can name it.

Per-job mode makes an election of each job, ``SERVICE.JOB``; on Kubernetes
that name must be a valid Lease name, which is checked when the job is
registered rather than when the service first campaigns.
"""

from __future__ import annotations

from collections.abc import Collection

from ._errors import ConfigError, LeaderlibError
from .backends import known_schemes, split_url

__all__ = ["check_backend_url", "check_per_job_elections", "per_job_election", "sole_cause"]


def per_job_election(service_election: str, job: str, scheme: str) -> str:
    """The election of ``job`` in per-job mode; on Kubernetes its part is lowercase, ``_`` as ``-``."""
    part = job.lower().replace("_", "-") if scheme == "kubernetes" else job
    return f"{service_election}.{part}"


def check_per_job_elections(service_election: str, jobs: Collection[str], scheme: str) -> None:
    """Refuse job names whose per-job elections the store cannot hold (Kubernetes only)."""
    if scheme != "kubernetes":
        return
    try:
        from .backends.kubernetes import validate_lease_name
    except ImportError:  # no kubernetes extra: run() says what to install
        return
    seen: dict[str, str] = {}
    for job in jobs:
        election = per_job_election(service_election, job, scheme)
        try:
            validate_lease_name(election)
        except ConfigError as exc:
            raise ConfigError(
                f"job {job!r} would campaign in the Kubernetes Lease {election!r}, which is not "
                f"a valid name: {exc.reason}. Rename the job (name=...) to lowercase letters, "
                "digits and '-'",
                field="name",
            ) from None
        if election in seen:
            raise ConfigError(
                f"jobs {seen[election]!r} and {job!r} map to the same election {election!r} on "
                "Kubernetes ('_' becomes '-', letters lowercase); rename one (name=...)",
                field="name",
            )
        seen[election] = job


def check_backend_url(url: str) -> None:
    """Refuse, when a service is made, a URL whose scheme no backend serves.

    Only the scheme: a backend's options are checked when ``Service.run``
    makes it (making it here could open files or connections too early).
    """
    scheme = split_url(url).scheme
    if scheme not in known_schemes():
        raise ConfigError(
            f"unknown backend scheme {scheme!r} in {url!r}; known schemes: {', '.join(known_schemes())}",
            field="backend",
        )


def sole_cause(group: ExceptionGroup[Exception]) -> Exception:
    """The first leaderlib error in ``group`` if every error in it is one, else ``group``.

    Several electors (per-job mode) usually fail for one reason, such as a
    refused password; anything else is a bug whose whole group must be seen."""
    leaves: list[Exception] = []
    pending: list[Exception] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, ExceptionGroup):
            pending.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    if leaves and all(isinstance(error, LeaderlibError) for error in leaves):
        return leaves[0]
    return group
