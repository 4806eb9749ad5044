"""minictr.show.report: the explained tree, Docker's lines, and when to use colour."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator

import pytest

from minictr.show.diff import Change
from minictr.show.report import human_size, render_docker, render_tree, use_color

CHANGES = [
    Change(
        "/data",
        "C",
        "dir",
        0,
        True,
        "opaque: removed and made again; hides 1 of the image's 2 entries",
        ("sub",),
    ),
    Change("/data/f", "C", "file", 2, False, "made again: new, where the image's file was removed"),
    Change("/etc", "C", "dir", 0, False, "copied up from the image: holds changes below"),
    Change(
        "/etc/hosts",
        "C",
        "file",
        1536,
        False,
        "copied up from the image: content changed (6 → 1536 bytes)",
    ),
    Change("/etc/motd", "D", "file", 0, False, "whiteout (char 0:0) hides the image's file"),
    Change(
        "/etc/passwd",
        "C",
        "file",
        30,
        False,
        "copied up from the image: mode 0644→0600, content unchanged",
    ),
]

TREE = """\
├── data/                C O  opaque: removed and made again; hides 1 of the image's 2 entries
│   ├── f           2 B  C    made again: new, where the image's file was removed
│   └── sub              D    hidden by the opaque dir above: no whiteout needed
└── etc/                 C    copied up from the image: holds changes below
    ├── hosts   1.5 KiB  C    copied up from the image: content changed (6 → 1536 bytes)
    ├── motd             D    whiteout (char 0:0) hides the image's file
    └── passwd     30 B  C    copied up from the image: mode 0644→0600, content unchanged
upper: 1.5 KiB in 6 entries · image busybox: 2.1 MiB shared, unchanged
"""

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tree(changes: list[Change], color: bool = False) -> str:
    return render_tree(
        changes, upper_bytes=1568, image_bytes=2_200_000, image="busybox", color=color
    )


def test_tree_text() -> None:
    assert tree(CHANGES) == TREE


def test_tree_fits_a_100_column_terminal() -> None:
    assert max(len(line) for line in TREE.splitlines()) <= 100


def test_tree_is_the_same_in_any_input_order() -> None:
    assert tree(list(reversed(CHANGES))) == TREE


def test_tree_with_no_changes_is_one_line() -> None:
    assert tree([]) == (
        "no changes: the upper layer is empty · image busybox: 2.1 MiB shared, unchanged\n"
    )


def test_tree_summary_counts_one_entry() -> None:
    one = [Change("/new", "A", "file", 3, False, "new file")]
    assert tree(one).splitlines() == [
        "└── new  3 B  A  new file",
        "upper: 1.5 KiB in 1 entry · image busybox: 2.1 MiB shared, unchanged",
    ]


def test_colour_paints_names_and_marks_without_moving_columns() -> None:
    painted = tree(CHANGES, color=True)
    assert ANSI.sub("", painted) == TREE
    assert "\x1b[35mdata/\x1b[0m" in painted  # an opaque directory is magenta
    assert "\x1b[33mC\x1b[0m \x1b[35mO\x1b[0m" in painted
    assert "\x1b[31mmotd\x1b[0m" in painted
    assert "\x1b[32mA\x1b[0m" in tree([Change("/new", "A", "file", 3, False, "new file")], True)
    assert "\x1b[" not in tree(CHANGES, color=False)


def test_docker_text() -> None:
    assert render_docker(CHANGES) == (
        "C /data\nC /data/f\nD /data/sub\nC /etc\nC /etc/hosts\nD /etc/motd\nC /etc/passwd\n"
    )
    assert render_docker([]) == ""


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1229, "1.2 KiB"),
     (2_200_000, "2.1 MiB"), (3 * 1024**3, "3.0 GiB"), (5 * 1024**4, "5120.0 GiB")],
)  # fmt: skip
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


@pytest.fixture
def terminal() -> Iterator[io.TextIOWrapper]:
    """A stream that really is a terminal: the follower side of a new pty (see pty(7))."""
    leader, follower = os.openpty()
    stream = open(follower, "w")  # noqa: SIM115  (closed below, with the leader)
    try:
        yield stream
    finally:
        stream.close()
        os.close(leader)


def test_colour_on_a_terminal(terminal: io.TextIOWrapper, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(terminal) is True
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value counts
    assert use_color(terminal) is True


def test_no_colour_when_asked(terminal: io.TextIOWrapper, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color(terminal) is False


def test_no_colour_into_a_file_or_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(io.StringIO()) is False
