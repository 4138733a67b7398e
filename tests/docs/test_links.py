"""Relative links in README.md, CHANGELOG.md and docs/ point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def test_readme_links_every_doc() -> None:
    readme = REPO / "README.md"
    linked = {(REPO / t.split("#", 1)[0]).resolve() for t in _LINK.findall(readme.read_text())}
    # docs/backends/ is linked as a directory; its pages link each other.
    docs = {p.resolve() for p in (REPO / "docs").glob("*.md")}
    assert not docs - linked, sorted(str(p.relative_to(REPO)) for p in docs - linked)
