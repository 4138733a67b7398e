"""docs/configuration.md agrees with the code (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from leaderlib import _config

from .reference import field_rows, known_options

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

#: A URL per backend section of the page, to ask each backend which options it knows.
SECTIONS = {
    "`sqlite:///PATH`": "sqlite:///tmp/leaderlib-docs-check.sqlite3",
    "`memory://`": "memory://",
    "`redis://`, `rediss://`, `redis+sentinel://`": "redis://127.0.0.1:1/0",
    "`etcd://HOST:PORT[,HOST:PORT...]`, `etcds://`": "etcd://127.0.0.1:1",
    "`kubernetes://NAMESPACE`": "kubernetes://docs-check",
}


def _page() -> str:
    return PAGE.read_text()


def _section(title: str, level: str = "###") -> str:
    text = _page()
    start = text.index(f"\n{level} {title}\n")
    end = text.find(f"\n{level} ", start + 1)
    following = text.find("\n## ", start + 1)
    ends = [e for e in (end, following) if e != -1]
    return text[start : min(ends) if ends else len(text)]


def _first_column(section: str) -> set[str]:
    """The backtick-quoted names in the first column of a section's table rows."""
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def test_the_field_table_is_the_code() -> None:
    expected = field_rows()
    section = _section("ElectionConfig fields", "##")
    shown = [line for line in section.splitlines() if line.startswith("| `")]
    assert shown == expected, "regenerate the table with: python -m tests.docs.reference"


def test_every_setting_variable_is_documented() -> None:
    text = _page()
    documented = set(re.findall(r"`(LEADERLIB_[A-Z_]+)`", text))
    known = set(_config._SETTING_VARIABLES) | set(_config._OTHER_VARIABLES)
    assert known <= documented, f"not on the page: {sorted(known - documented)}"
    assert documented <= known, f"on the page but read by nobody: {sorted(documented - known)}"


def test_toml_keys_are_the_known_keys() -> None:
    # The file takes exactly the settings that have a variable: backend, election and the fields.
    keys = {name for name in _config._SETTING_VARIABLES.values()}
    rows = [line for line in _page().splitlines() if line.startswith("| ")]
    toml_column = {m for line in rows for m in re.findall(r"(?<=\| )`(\w+)`(?= \|)", line)}
    assert keys <= toml_column


@pytest.mark.parametrize("title", list(SECTIONS))
def test_backend_options_are_what_the_backend_accepts(title: str) -> None:
    section = _section(title)
    documented = _first_column(section)
    accepted = known_options(SECTIONS[title])
    assert documented == accepted, f"{title}: page {sorted(documented)} vs backend {sorted(accepted)}"
    if not accepted:
        assert "No options." in section


@pytest.mark.parametrize("title", [t for t in SECTIONS if t != "`memory://`"])
def test_documented_option_types_are_enforced(title: str) -> None:
    """A float or bool option given garbage is refused with the documented type."""
    from leaderlib import ConfigError, backend_from_url

    url = SECTIONS[title]
    for line in _section(title).splitlines():
        match = re.match(r"\| `(\w+)` \| (float|bool) \|", line)
        if not match:
            continue
        name, kind = match.groups()
        with pytest.raises(ConfigError, match=f"must be {kind}"):
            backend_from_url(f"{url}?{name}=not-a-{kind}")
