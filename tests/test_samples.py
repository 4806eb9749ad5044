"""Samples the tutorial checks only after normalising their numbers away (they change with
every run, tests/samples.py) must still tell the truth that the exact blocks around them
state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parent.parent / "tutorial"


def text_block_after(chapter: str, command: str) -> str:
    """The ```text block that follows the ```bash block holding exactly ``command`` (and the
    marker line of its kind, if it has one)."""
    match = re.search(rf"```bash\n{re.escape(command)}\n```\n\n(?:<!--[^\n]*-->\n)?```text\n"
                      r"(.*?)```", chapter, re.S)
    assert match, f"no sample after: {command}"
    return match.group(1)


def namespaces_of(listing: str) -> dict[str, str]:
    """`ls -l /proc/self/ns` lines -> {"uts": "4026531838", ...}"""
    return dict(re.findall(r" (\w+) -> \w+:\[(\d+)\]$", listing, re.M))


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_chapter_04_listings_differ_where_its_checked_table_says(lang):
    """The host's and a container's /proc/self/ns, as chapter 04 shows them: the same
    namespaces are shared (time, user) as in the checked loop's table below them. A sample
    once showed the container's uts equal to the host's."""
    chapter = (TUTORIAL / lang / "04-namespaces.md").read_text()
    host = namespaces_of(text_block_after(chapter, "sudo ls -l /proc/self/ns"))
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


# --- the comparison itself (tests/samples.py) -----------------------------------------------


def test_ids_pids_and_times_are_normalised_on_both_sides():
    from tests.samples import mismatch

    shown = ("minictr: first exited with code 0; what it changed, in its upper layer "
             "(/var/lib/minictr/containers/1f39…/upper):\n"
             "minictr:      the container's init is PID 9811 on the host\n"
             "busybox-5c1e2a   Exited (0) 20 seconds ago\n")
    got = ("minictr: first exited with code 0; what it changed, in its upper layer "
           f"(/var/tmp/r/containers/{'ab12' * 16}/upper):\n"
           "minictr:      the container's init is PID 41 on the host\n"
           "busybox-0f0f0f  Exited (0) 2 minutes ago\n")
    assert mismatch(shown, got, substitutions={"/var/tmp/r": "/var/lib/minictr"}) is None
    assert mismatch(shown, got) is not None  # the root is not the reader's
    assert "exited with code 1" in mismatch(shown.replace("code 0", "code 1"), got,
                                             substitutions={"/var/tmp/r": "/var/lib/minictr"})


def test_gaps_excerpts_and_ellipses():
    from tests.samples import mismatch

    got = "a\nb\nc\nd\n"
    assert mismatch("a\n...\nd\n", got) is None
    assert mismatch("a\n...\nb\n...\n", got) is None
    assert mismatch("a\nd\n", got) is not None  # whole, unless it says where lines are left out
    assert mismatch("b\nd\n", got, excerpt=True) is None
    assert mismatch("d\nb\n", got, excerpt=True) is not None  # in their order
    assert mismatch("a\n…\nc\nd\n", got) is None  # … is anything within one line
    assert mismatch("\nreal\t0m0.139s\n", "\nreal\t0m1.005s\n") is None


def test_sizes_and_numbers_only_when_asked():
    from tests.samples import mismatch

    assert mismatch("2.0M\tcopies\n", "1.9M\tcopies\n") is not None
    assert mismatch("2.0M\tcopies\n", "1.9M\tcopies\n", sizes=True) is None
    assert mismatch("29213 29138 sleep 2\n", "812 790 sleep 2\n") is not None
    assert mismatch("29213 29138 sleep 2\n", "812 790 sleep 2\n", numbers=True) is None
    assert mismatch("29213 29138 sleep 2\n", "812 790 sleep 3\n", numbers=True) is not None
