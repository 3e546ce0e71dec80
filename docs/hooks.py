"""mkdocs hook: pages take sections of README.md, so that the README stays the one source.

A line `<!-- readme: Heading -->` in a page becomes README's section under `## Heading` or
`### Heading` (down to the next heading of the same or a higher level, the heading included).
Links in it are made right for the site: `docs/x.md` becomes `x.md`; a link to another file of
the repository becomes its text (the site has no copy of it).
"""

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"^<!-- readme: (.+?) -->$", re.MULTILINE)
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _headings(lines: list[str]) -> list[int]:
    """Each line's heading level, 0 for text and for lines inside ``` fences."""
    levels, fenced = [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        level = len(line) - len(line.lstrip("#"))
        heading = not fenced and level and line[level:level + 1] == " "
        levels.append(level if heading else 0)
    return levels


def readme_section(heading: str) -> str:
    lines = README.read_text(encoding="utf-8").splitlines()
    levels = _headings(lines)
    starts = [i for i, line in enumerate(lines)
              if levels[i] and line.lstrip("#").strip() == heading]
    if not starts:
        raise ValueError(f"README.md has no section {heading!r}")
    start = starts[0]
    end = start + 1
    while end < len(lines) and not 0 < levels[end] <= levels[start]:
        end += 1
    return "\n".join(lines[start:end])


def _site_link(match: re.Match[str]) -> str:
    text, target = match.groups()
    if "://" in target or target.startswith(("#", "mailto:")):
        return match.group(0)
    if target.startswith("docs/"):
        return f"[{text}]({target.removeprefix('docs/')})"
    return text


def on_page_markdown(markdown: str, **_: Any) -> str:
    return MARKER.sub(lambda m: LINK.sub(_site_link, readme_section(m.group(1))), markdown)
