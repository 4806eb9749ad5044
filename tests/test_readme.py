"""The README's sessions are what minictr prints today: run them, compare what they print.

A session is a fenced block of ``$ sudo minictr ...`` lines, each followed by what it prints:
its stdout, then its stderr (a command of these prints on one of them only). SESSIONS names
the sections whose first block is one; each command runs, in order, in one fresh MINICTR_ROOT
(the ``minictr`` fixture of tests/conftest.py),
and its lines are compared as the tutorial's samples are (tests/samples.py: ids, digests,
PIDs and times normalised; ``…`` matches anything in a line). The README shows the Vagrant
box's paths: this test's MINICTR_ROOT reads as /var/lib/minictr.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests import samples
from tests.conftest import Run

README = Path(__file__).resolve().parent.parent / "README.md"
SESSIONS = ["What you will see", "Resource limits (cgroups)"]
PROMPT = "$ sudo minictr "


def session(title: str) -> list[tuple[str, str]]:
    """(command, what it prints) for each ``$ sudo minictr`` line of the section's first
    fenced block."""
    text = README.read_text(encoding="utf-8")
    section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"README.md has no section {title!r}"
    block = re.search(r"^```[a-z]*\n(.*?)^```$", section[1], re.S | re.M)
    assert block, f"README.md, {title!r}: no fenced block"
    found: list[tuple[str, str]] = []
    for line in block[1].splitlines(keepends=True):
        if line.startswith(PROMPT):
            found.append((line[len(PROMPT):].strip(), ""))
        else:
            assert found, f"README.md, {title!r}: output before the first {PROMPT!r}"
            found[-1] = (found[-1][0], found[-1][1] + line)
    assert found, f"README.md, {title!r}: no {PROMPT!r} line"
    return found


def test_the_sessions_are_there() -> None:
    for title in SESSIONS:
        assert session(title)


@pytest.mark.root
@pytest.mark.parametrize("title", SESSIONS)
def test_a_readme_session_prints_what_it_shows(title: str, minictr: Run,
                                              minictr_root: Path) -> None:
    failures = []
    for command, shown in session(title):
        result = minictr(*shlex.split(command), timeout=120)
        wrong = samples.mismatch(shown, result.stdout + result.stderr,
                                 substitutions={str(minictr_root): "/var/lib/minictr"})
        if wrong:
            failures.append(f"README.md, {title!r}: $ sudo minictr {command}\n{wrong}")
    assert not failures, "\n\n".join(failures)
