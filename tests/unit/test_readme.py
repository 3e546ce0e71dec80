"""README's embedded example runs as printed."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_embedded_example_in_readme_runs() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- embedded-example -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "README lost its embedded example"
    done = subprocess.run(
        [sys.executable, "-c", match.group(1)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    expected = r"alice said: hi bob \(msg_id \d+\)\n#1 alice: hi bob\n#2 bob: hi alice\n"
    assert re.fullmatch(expected, done.stdout), done.stdout


def test_the_serving_example_in_readme_runs() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- serving-example -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "README lost its serving example"
    done = subprocess.run(
        [sys.executable, "-c", match.group(1)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "PING answered with errno 0\n", done.stdout


def test_every_relative_link_in_readme_and_the_protocol_names_a_file_of_the_repository() -> None:
    """A clone is complete: nothing the README or docs/protocol.md links to lies outside it."""
    root = README.parent
    for document in (README, root / "docs" / "protocol.md"):
        links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text(encoding="utf-8"))
        local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
        assert local or document != README, "README lost its links"
        for link in local:
            target = (document.parent / link).resolve()
            assert target.is_relative_to(root), f"{document.name} links outside: {link}"
            assert target.exists(), f"{document.name} links to a missing file: {link}"


def test_every_anchor_link_of_a_docs_page_names_a_heading_of_that_page() -> None:
    """QA: docs/operations.md takes README's "The command line", whose table links to
    #operating-it-chatserver-admin, a section the page did not take: a dead link on the site
    (mkdocs only said so at INFO)."""
    import importlib.util
    import re

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("docs_hooks", root / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)

    def slug(heading: str) -> str:  # as mkdocs' toc makes them
        return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())

    for page in sorted((root / "docs").glob("*.md")):
        text = hooks.MARKER.sub(lambda m: hooks.readme_section(m.group(1)), page.read_text())
        headings = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
        for anchor in re.findall(r"\]\(#([^)]+)\)", text):
            assert anchor in headings, f"{page.name}: #{anchor} names no heading of the page"
