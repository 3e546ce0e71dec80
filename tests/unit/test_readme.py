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
