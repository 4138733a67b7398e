"""What docs/configuration.md must say, read from the code.

``python -m tests.docs.reference`` prints the ElectionConfig table as the
page has it (paste it in when a field changes); the test in
``test_configuration.py`` fails until the page agrees with the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re

from leaderlib import ElectionConfig, _config

__all__ = ["field_docstrings", "field_rows", "known_options"]


def field_docstrings() -> dict[str, str]:
    """Each ElectionConfig field's docstring (the string literal after it), whitespace collapsed."""
    tree = ast.parse(inspect.getsource(_config))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "ElectionConfig":
            body = node.body
            for statement, following in itertools.pairwise(body):
                if (
                    isinstance(statement, ast.AnnAssign)
                    and isinstance(statement.target, ast.Name)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                ):
                    # reST literals (``x``) become Markdown ones (`x`).
                    text = " ".join(following.value.value.split()).replace("``", "`")
                    found[statement.target.id] = text
    return found


def _default(field: dataclasses.Field[object]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
        return (
            str(value).lower()
            if isinstance(value, bool)
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )
    return "hostname/pid/random"  # default_identity(), made per process


def field_rows() -> list[str]:
    """The Markdown rows of the ElectionConfig table: field, type, default, variable, TOML key, meaning."""
    docs = field_docstrings()
    rows = []
    for field in dataclasses.fields(ElectionConfig):
        rows.append(
            f"| `{field.name}` | {field.type} | `{_default(field)}` | `LEADERLIB_{field.name.upper()}` "
            f"| `{field.name}` | {docs[field.name]} |"
        )
    return rows


def known_options(url: str) -> set[str]:
    """The query-string options the backend of ``url`` accepts, as its own error message lists them."""
    from leaderlib import ConfigError, backend_from_url

    probe = url + ("&" if "?" in url else "?") + "zz_not_an_option=1"
    try:
        backend_from_url(probe)
    except ConfigError as exc:
        match = re.search(r"known options: (.*)$", str(exc))
        assert match, str(exc)
        listed = match.group(1)
        return set() if listed == "none" else {name.strip() for name in listed.split(",")}
    raise AssertionError(f"{url}: an unknown option was accepted")


if __name__ == "__main__":
    print("\n".join(field_rows()))
