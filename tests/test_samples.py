"""Samples the tutorial shows but cannot check as output (their numbers change with every
run) must still tell the truth that the checked blocks around them state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parent.parent / "tutorial"


def text_block_after(chapter: str, command: str) -> str:
    """The ```text block that follows the ```bash block holding exactly ``command``."""
    match = re.search(rf"```bash\n{re.escape(command)}\n```\n\n```text\n(.*?)```", chapter,
                      re.S)
    assert match, f"no sample after: {command}"
    return match.group(1)


def namespaces_of(listing: str) -> dict[str, str]:
    """`ls -l /proc/self/ns` lines -> {"uts": "4026531838", ...}"""
    return dict(re.findall(r" (\w+) -> \w+:\[(\d+)\]$", listing, re.M))


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_chapter_03_listings_differ_where_its_checked_table_says(lang):
    """The host's and a container's /proc/self/ns, as chapter 03 shows them: the same
    namespaces are shared (time, user) as in the checked loop's table below them. A sample
    once showed the container's uts equal to the host's."""
    chapter = (TUTORIAL / lang / "03-namespaces.md").read_text()
    host = namespaces_of(text_block_after(chapter, "ls -l /proc/self/ns"))
    inside = namespaces_of(text_block_after(chapter,
                                            "sudo minictr run --rm busybox ls -l /proc/self/ns"))
    loop = re.search(r"for ns in cgroup ipc mnt net pid time user uts; do\n.*?```\n\n"
                     r"<!--pytest-codeblocks:expected-output-->\n```text\n(.*?)```", chapter, re.S)
    assert loop, "the checked loop over the namespaces"
    table = dict(re.findall(r"^(\w+): (same|differs)$", loop.group(1), re.M))
    assert set(table) == {"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"}
    for ns, verdict in table.items():
        assert (host[ns] == inside[ns]) == (verdict == "same"), (lang, ns, verdict)


def test_the_readme_names_only_functions_that_exist():
    """Every `minictr.module.function` the README names (its step table, its layout) is
    there to be read: a rename that forgets the README fails here."""
    import importlib

    readme = (TUTORIAL.parent / "README.md").read_text()
    missing = []
    for name in sorted(set(re.findall(r"`(minictr(?:\.\w+)+)`", readme))):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                found: object = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute, None)
        if found is None:
            missing.append(name)
    assert missing == []
