"""Every Python snippet of docs/migrating.md runs (issue 14).

Each is compiled and executed as a module not named ``__main__`` (so nothing
blocks); a snippet that makes a ``service`` then has it lead on ``memory://``
for a moment through ``BackgroundService``, and must have registered jobs.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from leaderlib import BackgroundService, Service

PAGE = Path(__file__).resolve().parents[2] / "docs" / "migrating.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)

pytestmark = pytest.mark.timeout(30)


def test_the_page_has_a_snippet_per_origin() -> None:
    assert len(SNIPPETS) >= 5


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERLIB_BACKEND", "memory://")
    code = compile(SNIPPETS[index], f"docs/migrating.md#snippet-{index + 1}", "exec")
    namespace: dict[str, object] = {"__name__": f"migrating_snippet_{index}"}
    exec(code, namespace)
    service = namespace.get("service")
    assert isinstance(service, Service), "each snippet makes a `service`"
    assert service.jobs
    runner = BackgroundService(service).start()
    try:
        deadline = time.monotonic() + 10
        while not runner.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runner.is_leader
    finally:
        runner.stop(timeout=10)
