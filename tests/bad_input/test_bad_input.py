"""ONE test for every row of docs/bad-input.md, so the table cannot drift from the code.

Each row names a case (``tests/bad_input/cases_*.py``) that makes the bad
input happen for real, against the real store where the row is about one.
The test checks the error the user saw against the row: the error column
exactly, the message column as a pattern in which ``…`` stands for any text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from . import cases_cli, cases_config, cases_stores  # noqa: F401  (they register the cases)
from .cases import CASES, Context

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"
_ROW = re.compile(r"^\|\s*`(?P<id>[a-z0-9.-]+)`\s*\|(?P<cells>.*)\|\s*$")


def _rows() -> dict[str, tuple[str, str]]:
    rows: dict[str, tuple[str, str]] = {}
    for line in DOC.read_text().splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        cells = [cell.strip() for cell in match["cells"].split(" | ")]
        if len(cells) != 4:
            raise AssertionError(f"docs/bad-input.md row {match['id']!r} needs 5 cells: {line}")
        _input, _where, error, message = cells
        if match["id"] in rows:
            raise AssertionError(f"docs/bad-input.md has row {match['id']!r} twice")
        rows[match["id"]] = (error.strip("`"), message)
    return rows


ROWS = _rows()


def _pattern(message: str) -> re.Pattern[str]:
    """The message cell as a regex: backticks and Markdown escapes dropped, ``…`` as ``.*``."""
    text = message.replace("\\|", "|")
    if text.startswith("`") and text.endswith("`"):
        text = text[1:-1]
    return re.compile(".*".join(re.escape(part) for part in text.split("…")), re.DOTALL)


def test_every_row_has_a_case_and_every_case_a_row() -> None:
    assert sorted(set(ROWS) - set(CASES)) == [], "rows without a case"
    assert sorted(set(CASES) - set(ROWS)) == [], "cases without a row in docs/bad-input.md"


@pytest.mark.parametrize("row_id", sorted(ROWS))
async def test_bad_input(row_id: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    error, message = ROWS[row_id]
    seen = await CASES[row_id](Context(request=request, tmp_path=tmp_path))
    assert seen.error == error, f"{row_id}: expected {error}, saw {seen.error}: {seen.message}"
    assert _pattern(message).search(seen.message), (
        f"{row_id}: the message differs from the table\n  table: {message}\n  saw:   {seen.message}"
    )
