"""Cases for the cli rows of docs/bad-input.md.

Each runs the ``leaderlib`` command in a subprocess, as a user would; rows
about a store run it against the real one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .cases import CASES, Context, Seen, case, leaderlib_command, raised  # noqa: F401

#: A service of one job, written to a file by the cases that need one.
SERVICE = """\
from leaderlib import Service

service = Service({name!r})


@service.job(every=60)
def tick() -> None:
    pass
"""


def service_file(ctx: Context, name: str = "mysvc", election: str = "bad-input") -> Path:
    path = ctx.tmp_path / f"{name}.py"
    path.write_text(SERVICE.format(name=election))
    return path


def no_traceback(seen: Seen) -> Seen:
    """A fatal error is one line: any traceback fails the row."""
    if "Traceback" in seen.message:
        raise AssertionError(f"a traceback instead of one line:\n{seen.message}")
    return seen


@contextmanager
def port_in_use() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


# --- the command itself ------------------------------------------------------------


@case("cli.unknown-command")
async def unknown_command(ctx: Context) -> Seen:
    return leaderlib_command("frobnicate")


@case("cli.no-command")
async def no_command(ctx: Context) -> Seen:
    return leaderlib_command()


@case("cli.version")
async def version(ctx: Context) -> Seen:
    return leaderlib_command("--version")


# --- leaderlib run: what to run ------------------------------------------------------


@case("cli.run-not-module-attr")
async def run_not_module_attr(ctx: Context) -> Seen:
    return leaderlib_command("run", "no_colon")


@case("cli.run-missing-file")
async def run_missing_file(ctx: Context) -> Seen:
    return leaderlib_command("run", "missing.py:service", cwd=ctx.tmp_path)


@case("cli.run-missing-module")
async def run_missing_module(ctx: Context) -> Seen:
    return no_traceback(leaderlib_command("run", "no_such_module:service", cwd=ctx.tmp_path))


@case("cli.run-module-from-its-directory")
async def run_module_from_its_directory(ctx: Context) -> Seen:
    # uvicorn-style: `mysvc:...` from the directory that holds mysvc.py imports it;
    # the misspelt attribute then shows that the module was found. The installed
    # `leaderlib` script, not `python -m` (which puts the working directory on
    # sys.path by itself).
    service_file(ctx)
    script = Path(sys.executable).with_name("leaderlib")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LEADERLIB_")}
    done = subprocess.run(
        [str(script), "run", "mysvc:servic"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ctx.tmp_path,
        timeout=60,
        check=False,
    )
    return no_traceback(Seen(f"exit {done.returncode}", done.stderr.strip()))


@case("cli.run-missing-attribute")
async def run_missing_attribute(ctx: Context) -> Seen:
    return leaderlib_command("run", "leaderlib:nothing_here")


@case("cli.run-not-a-service")
async def run_not_a_service(ctx: Context) -> Seen:
    return leaderlib_command("run", "leaderlib:DEFAULT_BACKEND")


@case("cli.run-arbitrary-callable")
async def run_arbitrary_callable(ctx: Context) -> Seen:
    # A function with side effects must not be called to find out what it returns.
    marker = ctx.tmp_path / "called"
    (ctx.tmp_path / "effects.py").write_text(
        f"from pathlib import Path\n\ndef launch():\n    Path({str(marker)!r}).write_text('called')\n"
    )
    seen = leaderlib_command("run", "effects:launch", cwd=ctx.tmp_path)
    if marker.exists():
        raise AssertionError("leaderlib run called a function that is not a Service factory")
    return seen


@case("cli.run-a-class")
async def run_a_class(ctx: Context) -> Seen:
    return leaderlib_command("run", "leaderlib:Service")


@case("cli.run-factory-returns-no-service")
async def run_factory_returns_no_service(ctx: Context) -> Seen:
    (ctx.tmp_path / "factory.py").write_text(
        "from leaderlib import Service\n\n\ndef make() -> Service:\n    return None  # type: ignore\n"
    )
    return leaderlib_command("run", "factory:make", cwd=ctx.tmp_path)


@case("cli.run-service-without-jobs")
async def run_service_without_jobs(ctx: Context) -> Seen:
    (ctx.tmp_path / "empty.py").write_text("from leaderlib import Service\n\nservice = Service('empty')\n")
    return leaderlib_command("run", "empty.py:service", "--backend", "memory://", cwd=ctx.tmp_path)


# --- leaderlib run: options ----------------------------------------------------------


@case("cli.run-log-level")
async def run_log_level(ctx: Context) -> Seen:
    return leaderlib_command("run", f"{service_file(ctx)}:service", "--log-level", "LOUD")


@case("cli.run-log-format")
async def run_log_format(ctx: Context) -> Seen:
    return leaderlib_command("run", f"{service_file(ctx)}:service", "--log-format", "xml")


@case("cli.run-health-port-out-of-range")
async def run_health_port_out_of_range(ctx: Context) -> Seen:
    return leaderlib_command("run", f"{service_file(ctx)}:service", "--health-port", "70000")


@case("cli.run-health-port-in-use")
async def run_health_port_in_use(ctx: Context) -> Seen:
    target = f"{service_file(ctx)}:service"
    with port_in_use() as port:
        seen = leaderlib_command("run", target, "--backend", "memory://", "--health-port", str(port))
    return no_traceback(seen)


@case("cli.run-metrics-port-in-use")
async def run_metrics_port_in_use(ctx: Context) -> Seen:
    target = f"{service_file(ctx)}:service"
    with port_in_use() as port:
        seen = leaderlib_command(
            "run",
            target,
            "--backend",
            "memory://",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(port),
        )
    return no_traceback(seen)


# --- leaderlib run: the store says no ------------------------------------------------


@case("cli.run-redis-wrong-password")
async def run_redis_wrong_password(ctx: Context) -> Seen:
    redis = ctx.server("redis_server")
    url = redis.url_for("nobody", "wrong-password")
    return no_traceback(leaderlib_command("run", f"{service_file(ctx)}:service", "--backend", url))


@case("cli.run-redis-wrong-password-json")
async def run_redis_wrong_password_json(ctx: Context) -> Seen:
    redis = ctx.server("redis_server")
    url = redis.url_for("nobody", "wrong-password")
    seen = leaderlib_command("run", f"{service_file(ctx)}:service", "--backend", url, "--log-format", "json")
    lines = seen.message.splitlines()
    for line in lines:
        json.loads(line)  # every line of stderr is a JSON record, the error's too
    return Seen(seen.error, lines[-1])


@case("cli.run-kubernetes-missing-rbac")
async def run_kubernetes_missing_rbac(ctx: Context) -> Seen:
    # `elector` may manage leases in the test namespace only, not in `default`.
    kube = ctx.server("kube_apiserver")
    url = f"kubernetes://default?kubeconfig={kube.kubeconfig}"
    return no_traceback(leaderlib_command("run", f"{service_file(ctx)}:service", "--backend", url))


@case("cli.run-kubernetes-bad-election-name")
async def run_kubernetes_bad_election_name(ctx: Context) -> Seen:
    kube = ctx.server("kube_apiserver")
    url = f"kubernetes://{kube.namespace}?kubeconfig={kube.kubeconfig}"
    target = f"{service_file(ctx, election='Nightly_Report')}:service"
    return no_traceback(leaderlib_command("run", target, "--backend", url))


# --- leaderlib status ----------------------------------------------------------------


@case("cli.status-unknown-scheme")
async def status_unknown_scheme(ctx: Context) -> Seen:
    return leaderlib_command("status", "x", "--backend", "nope://x")


@case("cli.status-not-a-url")
async def status_not_a_url(ctx: Context) -> Seen:
    return leaderlib_command("status", "x", "--backend", "not a url")


@case("cli.status-unknown-option")
async def status_unknown_option(ctx: Context) -> Seen:
    return leaderlib_command("status", "x", "--backend", "memory://x?colour=blue")


@case("cli.status-sqlite-missing-directory")
async def status_sqlite_missing_directory(ctx: Context) -> Seen:
    return leaderlib_command("status", "x", "--backend", "sqlite:///no/such/dir/leases.db")


@case("cli.status-sqlite-missing-file")
async def status_sqlite_missing_file(ctx: Context) -> Seen:
    path = ctx.tmp_path / "leases.db"
    seen = leaderlib_command("status", "x", "--backend", f"sqlite:///{path}")
    if path.exists():
        raise AssertionError("leaderlib status created a store")
    return seen


@case("cli.status-corrupt-run-record")
async def status_corrupt_run_record(ctx: Context) -> Seen:
    import sqlite3

    from leaderlib.backends.sqlite import SQLiteBackend

    path = ctx.tmp_path / "leases.db"
    backend = SQLiteBackend.from_url(f"sqlite:///{path}")
    await backend.lease("billing").try_acquire("pod-a", 30.0, None)
    await backend.aclose()
    with sqlite3.connect(path) as db:  # as an operator's sqlite3 shell would
        db.execute("INSERT INTO leaderlib_runs (election, job, record) VALUES ('billing', 'report', '{oops')")
    return leaderlib_command("status", "billing", "--backend", f"sqlite:///{path}")


@case("cli.status-password-in-url")
async def status_password_in_url(ctx: Context) -> Seen:
    redis = ctx.server("redis_server")
    url = redis.url_for("default", "s3cret-pw")  # the default user takes any password (nopass)
    seen = leaderlib_command("status", "x", "--backend", url, "--json")
    text = leaderlib_command("status", "x", "--backend", url)
    if "s3cret-pw" in seen.message + text.message:
        raise AssertionError(f"status printed the password:\n{seen.message}\n{text.message}")
    return Seen(seen.error, json.loads(seen.message)["backend"] + " / " + text.message)


@case("cli.status-redis-wrong-password")
async def status_redis_wrong_password(ctx: Context) -> Seen:
    url = ctx.server("redis_server").url_for("nobody", "wrong-password")
    return leaderlib_command("status", "x", "--backend", url)


@case("cli.status-unreachable")
async def status_unreachable(ctx: Context) -> Seen:
    with port_in_use() as port:  # listening but never answering would hang; a closed port refuses
        pass
    return leaderlib_command("status", "x", "--backend", f"redis://127.0.0.1:{port}/0")


# --- leaderlib demo, testenv ------------------------------------------------------


@case("cli.demo-short-duration")
async def demo_short_duration(ctx: Context) -> Seen:
    return leaderlib_command("demo", "--duration", "2")


@case("cli.demo-one-replica")
async def demo_one_replica(ctx: Context) -> Seen:
    return leaderlib_command("demo", "--replicas", "1")


@case("cli.testenv-without-testing-extra")
async def testenv_without_testing_extra(ctx: Context) -> Seen:
    # An importable `cryptography` that fails as a missing one does.
    stub = ctx.tmp_path / "no-extras" / "cryptography"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'cryptography'\", name='cryptography')\n"
    )
    return no_traceback(leaderlib_command("testenv", "--redis", env={"PYTHONPATH": str(stub.parent)}))


@case("cli.testenv-no-server")
async def testenv_no_server(ctx: Context) -> Seen:
    return leaderlib_command("testenv")
