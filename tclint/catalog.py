"""Rule pages: ``rules/CODE.md`` in the repository, shipped as ``tclint/_rule_pages`` in wheels."""

from __future__ import annotations

from pathlib import Path


def pages_dir() -> Path:
    shipped = Path(__file__).parent / "_rule_pages"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parent.parent / "rules"


def rule_page(code: str) -> str:
    path = pages_dir() / f"{code}.md"
    if not path.is_file():
        from tclint.rules import RULES

        r = RULES[code]
        return f"# {r.code} {r.name}\n\n{r.summary}\n"
    return path.read_text()
