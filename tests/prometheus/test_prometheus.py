"""leaderlib's metrics as Prometheus scrapes them, across a failover (issue 14).

Three ``leaderlib run --metrics-port`` replicas of ``metrics_service.py`` on a
real store, with short leases. Each endpoint is scraped over HTTP before and
after the leader is SIGKILLed; the checks read the series by the names the
endpoint exposes, as a dashboard or an alert would. The Grafana dashboard in
``examples/grafana/`` is checked against the names the same scrapes showed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from leaderlib.testing.servers import free_port

from .prometheus import Scrape, scrape

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
SERVICE = Path(__file__).with_name("metrics_service.py")
DASHBOARD = REPO / "examples" / "grafana" / "leaderlib-dashboard.json"

LEASE = 2.0
SHORT_LEASES = {
    "LEADERLIB_LEASE_DURATION": str(LEASE),
    "LEADERLIB_RENEW_DEADLINE": "1.5",
    "LEADERLIB_RENEW_INTERVAL": "0.3",
    "LEADERLIB_RETRY_PERIOD": "0.3",
}
ELECTION = "metrics-test"


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    def scrape(self) -> Scrape:
        return scrape(self.port)

    def is_leader(self, scraped: Scrape) -> float | None:
        return scraped.value("leaderlib_is_leader", election=ELECTION)


@dataclass
class Failover:
    """What the scrapes showed: before the SIGKILL, and after the new leader took over."""

    store: str
    before: dict[str, Scrape]
    after: dict[str, Scrape]
    leader: str
    heir: str
    bystander: str
    killed_after: float
    """Seconds from the SIGKILL to the scrape that showed the heir leading."""


def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _scrape_all(replicas: dict[str, Replica]) -> dict[str, Scrape]:
    return {name: replica.scrape() for name, replica in replicas.items()}


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def failover(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failover]:
    store = request.param
    tmp = tmp_path_factory.mktemp(f"metrics-{store}")
    if store == "sqlite":
        url = f"sqlite:///{(tmp / 'leases.sqlite3').as_posix().lstrip('/')}"
    else:
        # A prefix of its own: the session's Redis is shared with other tests.
        url = f"{request.getfixturevalue('redis_server').url}?prefix=metrics-{secrets.token_hex(4)}:"
    env = {**os.environ, **SHORT_LEASES, "LEADERLIB_BACKEND": url}
    replicas: dict[str, Replica] = {}
    logs: list[IO[bytes]] = []
    try:
        for index in range(3):
            name = f"r{index}"
            port = free_port()
            log = (tmp / f"{name}.log").open("wb")
            logs.append(log)
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "leaderlib", "run", f"{SERVICE}:service"),
                    *("--log-format", "json", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
            replicas[name] = Replica(name, port, process)

        def settled() -> bool:
            scrapes = _scrape_all(replicas)
            leaders = [name for name, s in scrapes.items() if replicas[name].is_leader(s) == 1]
            if len(leaders) != 1:
                return False
            lead = scrapes[leaders[0]]
            # Enough of the leader's work to see every job outcome and a skipped tick.
            return (
                lead.count("leaderlib_job_runs_total", job="fast", outcome="ok") >= 2
                and lead.count("leaderlib_job_runs_total", job="failing", outcome="error") >= 1
                and lead.count("leaderlib_job_skipped_total", job="slow") >= 1
                and lead.count("leaderlib_renew_duration_milliseconds_count", outcome="renewed") >= 2
            )

        _until("one leader that ran every job", settled, timeout=20)
        before = _scrape_all(replicas)
        leader = next(n for n, s in before.items() if replicas[n].is_leader(s) == 1)
        replicas[leader].process.send_signal(signal.SIGKILL)
        replicas[leader].process.wait(5)
        killed_at = time.monotonic()
        survivors = {n: r for n, r in replicas.items() if n != leader}

        def taken_over() -> bool:
            scrapes = _scrape_all(survivors)
            return any(
                survivors[n].is_leader(s) == 1
                and s.count("leaderlib_job_runs_total", job="fast", outcome="ok") >= 1
                for n, s in scrapes.items()
            )

        _until("a survivor to lead and run a job", taken_over, timeout=LEASE + 10)
        killed_after = time.monotonic() - killed_at
        after = _scrape_all(survivors)
        heir = next(n for n, s in after.items() if survivors[n].is_leader(s) == 1)
        bystander = next(n for n in survivors if n != heir)
        yield Failover(store, before, after, leader, heir, bystander, killed_after)
    finally:
        for replica in replicas.values():
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in replicas.values():
            try:
                replica.process.wait(10)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
        for log in logs:
            log.close()


def test_is_leader_is_one_on_the_leader_and_zero_on_followers(failover: Failover) -> None:
    # A follower that never led must still say 0 (it used to expose no series at
    # all, so a "leader per election" panel could not tell a follower from a
    # replica that was not scraped).
    values = {name: s.value("leaderlib_is_leader", election=ELECTION) for name, s in failover.before.items()}
    assert sorted(v for v in values.values()) == [0.0, 0.0, 1.0], values
    assert failover.before[failover.leader].families["leaderlib_is_leader"] == "gauge"
    assert sum(s.count("leaderlib_is_leader", election=ELECTION) for s in failover.after.values()) == 1


def test_the_leaders_series(failover: Failover) -> None:
    lead = failover.before[failover.leader]
    store = {"election": ELECTION, "backend": failover.store}
    assert lead.value("leaderlib_transitions_total", outcome="acquired", **store) == 1
    assert lead.count("leaderlib_transitions_total", outcome="lost", **store) == 0
    acquired = lead.value("leaderlib_acquire_duration_milliseconds_count", outcome="acquired", **store)
    assert acquired == 1
    assert lead.count("leaderlib_acquire_duration_milliseconds_sum", outcome="acquired", **store) > 0
    renewals = lead.count("leaderlib_renew_duration_milliseconds_count", outcome="renewed", **store)
    assert renewals >= 2
    # The histograms keep their fine buckets under 10 ms.
    buckets = {
        float(labels["le"])
        for name, labels, _ in lead.samples
        if name == "leaderlib_renew_duration_milliseconds_bucket"
    }
    assert {0.25, 0.5, 1, 2, 5, 10} <= buckets, buckets
    for job, outcome in (("fast", "ok"), ("failing", "error")):
        runs = lead.count("leaderlib_job_runs_total", election=ELECTION, job=job, outcome=outcome)
        assert runs >= 1, (job, outcome)
        # Every finished run is timed once.
        timed = lead.count("leaderlib_job_duration_seconds_count", election=ELECTION, job=job)
        assert timed == lead.count("leaderlib_job_runs_total", election=ELECTION, job=job)
    assert lead.count("leaderlib_job_skipped_total", election=ELECTION, job="slow") >= 1
    assert lead.count("leaderlib_job_skipped_total", election=ELECTION, job="fast") == 0
    assert lead.count("leaderlib_job_duration_seconds_sum", job="slow") >= 0.5 * lead.count(
        "leaderlib_job_duration_seconds_count", job="slow"
    )
    # Nobody failed over to the first leader: there was no previous holder.
    assert lead.count("leaderlib_failover_duration_seconds_count") == 0


def test_followers_series(failover: Failover) -> None:
    for name in (failover.heir, failover.bystander):
        follower = failover.before[name]
        store = {"election": ELECTION, "backend": failover.store}
        assert follower.count("leaderlib_acquire_duration_milliseconds_count", outcome="held", **store) >= 1
        # The counter exists at 0 before the first transition, so that rate() and
        # increase() see the failover's first increment (a series born at 1 hides it).
        assert follower.value("leaderlib_transitions_total", outcome="acquired", **store) == 0
        assert follower.count("leaderlib_job_runs_total") == 0
        assert follower.count("leaderlib_renew_duration_milliseconds_count") == 0


def test_failover_is_counted_by_the_new_leader(failover: Failover) -> None:
    heir_before, heir = failover.before[failover.heir], failover.after[failover.heir]
    store = {"election": ELECTION, "backend": failover.store}
    assert heir_before.value("leaderlib_is_leader", election=ELECTION) == 0
    assert heir.value("leaderlib_is_leader", election=ELECTION) == 1
    assert heir.value("leaderlib_transitions_total", outcome="acquired", **store) == 1
    assert heir.count("leaderlib_failover_duration_seconds_count", **store) == 1
    failover_seconds = heir.count("leaderlib_failover_duration_seconds_sum", **store)
    # From the killed leader's last renewal seen to the takeover: about a lease.
    assert 0 < failover_seconds <= LEASE + 1.5, failover_seconds
    assert failover_seconds <= failover.killed_after + 1.5
    assert heir.count("leaderlib_job_runs_total", job="fast", outcome="ok") >= 1
    assert heir.count("leaderlib_renew_duration_milliseconds_count", outcome="renewed", **store) >= 0
    bystander = failover.after[failover.bystander]
    assert bystander.value("leaderlib_is_leader", election=ELECTION) == 0
    assert bystander.count("leaderlib_failover_duration_seconds_count") == 0
    assert bystander.value("leaderlib_transitions_total", outcome="acquired", **store) == 0


# --- the Grafana dashboard -------------------------------------------------------------

#: A series name in a PromQL query (functions, label names and $variables are not).
_SERIES = re.compile(r"\bleaderlib_[a-z_]+\b")


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard (panels and template variables)."""
    document = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in document["panels"] for target in panel.get("targets", [])]
    for variable in document.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue  # a data source variable's "query" is a plugin type, not PromQL
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query:
            queries.append(query)
    return queries


def test_every_dashboard_query_names_a_series_leaderlib_exposes(failover: Failover) -> None:
    exposed = set().union(*(s.names for s in [*failover.before.values(), *failover.after.values()]))
    queries = dashboard_queries()
    assert queries
    used: set[str] = set()
    for query in queries:
        names = set(_SERIES.findall(query))
        assert names, f"a query names no leaderlib series: {query}"
        assert names <= exposed, f"{query} names {sorted(names - exposed)}, which no replica exposed"
        used |= names
    # And the dashboard shows every metric leaderlib has.
    families = {name for name in exposed if name.startswith("leaderlib_")}
    shown = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    missing = {re.sub(r"_(bucket|count|sum)$", "", name) for name in families} - shown
    assert not missing, f"the dashboard shows nothing of {sorted(missing)}"
