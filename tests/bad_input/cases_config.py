"""Cases for the config rows of docs/bad-input.md.

Each builds the bad input for real: in code, in an environment mapping handed to
``load_settings`` (as ``os.environ`` would be), or in a TOML file. A warning row
reports ``warning`` and the text a log handler prints.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from leaderlib import BackgroundService, ElectionConfig, NotLeader, Service, load_settings
from leaderlib._triggers import make_trigger
from leaderlib.backends.memory import MemoryBackend

from .cases import CASES, Context, Seen, case, leaderlib_command, raised  # noqa: F401


def _toml(context: Context, text: str, name: str = "leaderlib.toml") -> Path:
    path = context.tmp_path / name
    path.write_text(text)
    return path


def _job() -> None:
    return None


async def _warned(action: Any, logger: str = "leaderlib") -> Seen:
    """Run ``action`` and report the one WARNING it logged, as a handler prints it."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        action()
    finally:
        target.removeHandler(handler)
    if len(records) != 1:
        raise AssertionError(f"expected one warning, got {[r.getMessage() for r in records]}")
    return Seen("warning", records[0].getMessage())


# -- durations --------------------------------------------------------------------


@case("config.retry-period-nan")
async def _retry_period_nan(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(retry_period=float("nan")))


@case("config.retry-period-nan-env")
async def _retry_period_nan_env(context: Context) -> Seen:
    return await raised(lambda: load_settings(env={"LEADERLIB_RETRY_PERIOD": "nan"}))


@case("config.retry-period-nan-toml")
async def _retry_period_nan_toml(context: Context) -> Seen:
    path = _toml(context, "[leaderlib]\nretry_period = nan\n")
    return await raised(lambda: load_settings(file=path, env={}))


@case("config.lease-duration-inf")
async def _lease_duration_inf(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(lease_duration=float("inf")))


@case("config.renew-deadline-overflow")
async def _renew_deadline_overflow(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(renew_deadline=float("1e400")))


@case("config.shutdown-grace-nan")
async def _shutdown_grace_nan(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(shutdown_grace=float("nan")))


@case("config.negative-lease")
async def _negative_lease(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(lease_duration=-10))


@case("config.negative-grace")
async def _negative_grace(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(shutdown_grace=-1))


@case("config.lease-not-above-deadline")
async def _lease_not_above_deadline(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(lease_duration=7))


@case("config.deadline-not-above-interval")
async def _deadline_not_above_interval(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(renew_interval=7))


@case("config.deadline-env-breaks-invariant")
async def _deadline_env_breaks_invariant(context: Context) -> Seen:
    return await raised(lambda: load_settings(env={"LEADERLIB_RENEW_DEADLINE": "12"}))


@case("config.jitter-out-of-range")
async def _jitter_out_of_range(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(jitter=1.5))


@case("config.env-not-a-number")
async def _env_not_a_number(context: Context) -> Seen:
    return await raised(lambda: load_settings(env={"LEADERLIB_LEASE_DURATION": "ten"}))


# -- other fields ------------------------------------------------------------------


@case("config.release-on-shutdown-string")
async def _release_on_shutdown_string(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(release_on_shutdown="no"))  # type: ignore[arg-type]


@case("config.release-on-shutdown-env")
async def _release_on_shutdown_env(context: Context) -> Seen:
    return await raised(lambda: load_settings(env={"LEADERLIB_RELEASE_ON_SHUTDOWN": "maybe"}))


@case("config.identity-two-lines")
async def _identity_two_lines(context: Context) -> Seen:
    return await raised(lambda: ElectionConfig(identity="pod-a\npod-b"))


@case("config.unknown-keyword")
async def _unknown_keyword(context: Context) -> Seen:
    return await raised(lambda: load_settings(env={}, lease_durration=3.0))


# -- environment and files -----------------------------------------------------------


@case("config.unknown-env-variable")
async def _unknown_env_variable(context: Context) -> Seen:
    # A name of its own: each unknown variable is warned about once per process.
    return await _warned(lambda: load_settings(env={"LEADERLIB_RETRY_PERIOT": "1"}))


@case("config.code-shadows-env")
async def _code_shadows_env(context: Context) -> Seen:
    code = ElectionConfig(identity="from-code")
    return await _warned(lambda: load_settings(env={"LEADERLIB_SHUTDOWN_GRACE": "9"}, config=code))


@case("config.toml-unknown-key")
async def _toml_unknown_key(context: Context) -> Seen:
    path = _toml(context, "[leaderlib]\nlease_durration = 10\n")
    return await raised(lambda: load_settings(file=path, env={}))


@case("config.toml-no-table")
async def _toml_no_table(context: Context) -> Seen:
    path = _toml(context, '[project]\nname = "app"\n', name="pyproject.toml")
    return await raised(lambda: load_settings(file=path, env={}))


@case("config.toml-both-tables")
async def _toml_both_tables(context: Context) -> Seen:
    text = "[leaderlib]\nlease_duration = 12\n\n[tool.leaderlib]\nlease_duration = 15\n"
    path = _toml(context, text, name="pyproject.toml")
    return await raised(lambda: load_settings(file=path, env={}))


@case("config.toml-syntax")
async def _toml_syntax(context: Context) -> Seen:
    path = _toml(context, "[leaderlib]\nlease_duration = = 10\n")
    return await raised(lambda: load_settings(file=path, env={}))


@case("config.toml-missing-file")
async def _toml_missing_file(context: Context) -> Seen:
    return await raised(lambda: load_settings(file=context.tmp_path / "nope.toml", env={}))


# -- the service -----------------------------------------------------------------------


@case("config.service-bad-scheme")
async def _service_bad_scheme(context: Context) -> Seen:
    return await raised(lambda: Service("x", backend="bogus://x"))


@case("config.background-no-jobs")
async def _background_no_jobs(context: Context) -> Seen:
    return await raised(lambda: BackgroundService(Service("empty", backend="memory://bad-input")).start())


@case("config.per-job-kubernetes-name")
async def _per_job_kubernetes_name(context: Context) -> Seen:
    service = Service("billing", backend="kubernetes://default", mode="per-job")
    return await raised(lambda: service.add_job(_job, every=60, name="nightly report"))


@case("config.per-job-kubernetes-clash")
async def _per_job_kubernetes_clash(context: Context) -> Seen:
    service = Service("billing", backend="kubernetes://default", mode="per-job")
    service.add_job(_job, every=60, name="poll_invoices")
    return await raised(lambda: service.add_job(_job, every=60, name="poll-invoices"))


@case("config.not-leader")
async def _not_leader(context: Context) -> Seen:
    # A job that acts after its term ended: NotLeader, which `except BackendError` does not catch.
    from leaderlib import LeaderElector

    backend = MemoryBackend("bad-input-not-leader")
    config = ElectionConfig(lease_duration=1.0, renew_deadline=0.6, renew_interval=0.1, retry_period=0.1)
    ended: list[Any] = []
    elector = LeaderElector("nightly", backend, config, on_stopped_leading=ended.append)
    task = asyncio.create_task(elector.run())
    while not ended:
        if elector.is_leader:
            elector.stop()
        await asyncio.sleep(0.01)
    await task
    seen = await raised(ended[0].check)
    assert seen.error == NotLeader.__name__
    return seen


# -- triggers ----------------------------------------------------------------------------


@case("config.every-inf")
async def _every_inf(context: Context) -> Seen:
    return await raised(lambda: make_trigger(every=float("inf")))


@case("config.every-zero")
async def _every_zero(context: Context) -> Seen:
    return await raised(lambda: make_trigger(every=0))


@case("config.no-trigger")
async def _no_trigger(context: Context) -> Seen:
    return await raised(lambda: Service("x", backend="memory://").add_job(_job, name="nightly"))


@case("config.misfire-grace-negative")
async def _misfire_grace_negative(context: Context) -> Seen:
    return await raised(
        lambda: Service("x", backend="memory://").add_job(_job, every=1, name="report", misfire_grace=-1)
    )


@case("config.coalesce-without-misfire-grace")
async def _coalesce_without_grace(context: Context) -> Seen:
    return await raised(
        lambda: Service("x", backend="memory://").add_job(_job, every=1, name="report", coalesce=True)
    )


@case("config.cron-out-of-range")
async def _cron_out_of_range(context: Context) -> Seen:
    return await raised(lambda: Service("x", backend="memory://").add_job(_job, cron="61 * * * * *"))


@case("config.cron-zero-step")
async def _cron_zero_step(context: Context) -> Seen:
    return await raised(lambda: make_trigger(cron="*/0 * * * * *"))


@case("config.cron-field-count")
async def _cron_field_count(context: Context) -> Seen:
    return await raised(lambda: make_trigger(cron="* * *"))


@case("config.cron-reboot")
async def _cron_reboot(context: Context) -> Seen:
    return await raised(lambda: make_trigger(cron="@reboot"))


@case("config.cron-unknown-macro")
async def _cron_unknown_macro(context: Context) -> Seen:
    return await raised(lambda: make_trigger(cron="@fortnightly"))


@case("config.cron-garbage")
async def _cron_garbage(context: Context) -> Seen:
    return await raised(lambda: make_trigger(cron="run it every ten s"))
