"""Show what a container changed: the explained tree, and Docker's ``A/C/D`` lines.

The tree is for people learning copy-on-write: one line per upperdir entry, under its
parent like ``tree`` draws it, with its size, its mark, and why it is there::

    ├── etc/             C    copied up from the image: holds changes below
    │   ├── group  53 B  C    copied up from the image: content changed (48 → 53 bytes)
    │   └── passwd       D    whiteout (char 0:0) hides the image's file
    └── home/            C O  opaque: removed and made again; hides the image's 2 entries
        ├── alice        D    hidden by the opaque dir above: no whiteout needed
        └── bob          D    hidden by the opaque dir above: no whiteout needed
    upper: 144 B in 12 entries · image busybox: 1.9 MiB shared, unchanged

``O`` marks an opaque directory. The entries it hides are drawn under it too, marked ``D``:
they are gone from the container although no whiteout exists for them.

Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple, TextIO

from minictr.show.diff import Change, docker_lines
from minictr.spec import Volume

# SGR colours, see console_codes(4): A green, C yellow, D red, opaque magenta.
_SGR = {"A": "32", "C": "33", "D": "31", "O": "35"}
MAX_DEPTH = 32  # levels of the tree drawn; a deeper entry is counted, not drawn
_LABEL_MAX = 40  # a longer name pushes only its own line's columns right
_HIDDEN_REASON = "hidden by the opaque dir above: no whiteout needed"


def use_color(stream: TextIO) -> bool:
    """Colour only for a person at a terminal who has not asked for none."""
    return not os.environ.get("NO_COLOR") and stream.isatty()


# How a name the container chose is shown: C's escapes for the usual controls, \ooo for
# any other byte that is not a printable character (as `ls -b` does), \\ for a backslash.
_C_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
              "\b": "\\b", "\f": "\\f", "\v": "\\v", "\x1b": "\\e"}


def escaped(text: str) -> str:
    """``text`` safe for a terminal: a file name can hold an escape sequence that clears the
    screen or sets the window title, or a newline that forges a line of `diff` (``D /etc``).
    Names come from os.fsdecode, so a byte that is not UTF-8 is a surrogate (U+DC80..).
    Shell: ls -b NAME"""
    if text.isprintable() and "\\" not in text:
        return text  # the usual case, at once
    out = []
    for ch in text:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\{ord(ch) - 0xDC00:03o}")
        elif not ch.isprintable():
            out.extend(f"\\{b:03o}" for b in ch.encode())
        else:
            out.append(ch)
    return "".join(out)


def render_docker(changes: Sequence[Change]) -> str:
    """The ``docker diff`` text: one ``A|C|D /path`` per line, the paths escaped."""
    lines = [escaped(line) for line in docker_lines(changes)]
    return "\n".join(lines) + "\n" if lines else ""


def render_tree(
    changes: Sequence[Change], *, upper_bytes: int, image_bytes: int, image: str, color: bool
) -> str:
    """The explained tree of ``changes`` and one summary line, ending in a newline."""
    shared = f"image {image}: {human_size(image_bytes)} shared, unchanged"
    if not changes:
        return f"no changes: the upper layer is empty · {shared}\n"
    rows = list(_rows(_build_tree(changes), ""))
    widths = [max(len(getattr(r, col)) for r in rows) for col in ("label", "size", "mark")]
    widths[0] = min(widths[0], _LABEL_MAX)
    lines = [_format(row, widths, color) for row in rows]
    n = len(changes)
    lines.append(f"upper: {human_size(upper_bytes)} in {n} {_plural(n)} · {shared}")
    return "\n".join(lines) + "\n"


def human_size(n: int) -> str:
    """Bytes as ``ls -sh`` would say them, in powers of 1024: 900 B, 1.2 KiB, 2.1 MiB."""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _plural(n: int) -> str:
    return "entry" if n == 1 else "entries"


# --- the tree -----------------------------------------------------------------------------


class _Node:
    """A name in the tree being built: its change, if it has one, and the names below it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.change: Change | None = None  # None: a name an opaque dir hides, or a parent
        self.hidden = False
        self.children: dict[str, _Node] = {}


class _Row(NamedTuple):
    branch: str  # the tree drawing before the name: "│   ├── "
    name: str
    size: str
    mark: str  # "A", "C", "D", or "C O" for an opaque directory
    reason: str
    color: str  # a key of _SGR, for the name

    @property
    def label(self) -> str:
        return self.branch + self.name


def _build_tree(changes: Sequence[Change]) -> _Node:
    root = _Node("")
    nodes = {"": root}  # by path: a parent is found at once, however deep
    for change in changes:
        parent, _, name = change.path.rpartition("/")
        above = nodes.get(parent) or _node_at(root, parent)
        node = nodes[change.path] = above.children.setdefault(name, _Node(name))
        node.change = change
        for name in change.hidden:
            node.children.setdefault(name, _Node(name)).hidden = True
    return root


def _node_at(root: _Node, path: str) -> _Node:
    node = root
    for name in path.strip("/").split("/"):
        if name:
            node = node.children.setdefault(name, _Node(name))
    return node


def _rows(node: _Node, indent: str) -> Iterator[_Row]:
    """Depth first, by name, with the connectors ``tree`` draws, MAX_DEPTH levels deep.
    Iterative, with a stack of the directories still to finish: a container can make a tree
    thousands deep."""
    todo = [(indent, iter(_sorted_kids(node)))]
    while todo:
        indent, kids = todo[-1]
        kid = next(kids, None)
        if kid is None:
            todo.pop()
            continue
        node, last = kid
        yield _row(node, indent + ("└── " if last else "├── "))
        below = indent + ("    " if last else "│   ")
        if len(todo) < MAX_DEPTH:
            todo.append((below, iter(_sorted_kids(node))))
        elif node.children:
            n = _count_below(node)
            yield _Row(below + "└── ", f"… {n} {_plural(n)}", "", "",
                       f"{MAX_DEPTH} levels down, not drawn: minictr diff lists them all", "")


def _count_below(node: _Node) -> int:
    n, todo = 0, [node]
    while todo:
        kids = todo.pop().children.values()
        n += len(kids)
        todo += kids
    return n


def _sorted_kids(node: _Node) -> list[tuple[_Node, bool]]:
    """The children by name, each with whether it is the last one."""
    kids = sorted(node.children.values(), key=lambda k: k.name)
    return [(kid, i == len(kids) - 1) for i, kid in enumerate(kids)]


def _row(node: _Node, branch: str) -> _Row:
    c = node.change
    if c is None:
        if node.hidden:
            return _Row(branch, escaped(node.name), "", "D", _HIDDEN_REASON, "D")
        return _Row(branch, escaped(node.name) + "/", "", "", "", "")
    name = escaped(node.name) + ("/" if c.ftype == "dir" else "")
    size = human_size(c.size) if c.kind != "D" and c.ftype in ("file", "symlink") else ""
    mark = c.kind + (" O" if c.opaque else "")
    return _Row(branch, name, size, mark, escaped(c.reason), "O" if c.opaque else c.kind)


def _format(row: _Row, widths: list[int], color: bool) -> str:
    """Pad first, then paint, so escape codes do not shift the columns."""
    pad = " " * max(0, widths[0] - len(row.label))
    name = _paint(row.name, row.color, color)
    mark = " ".join(_paint(m, m, color) for m in row.mark.split(" "))
    mark += " " * (widths[2] - len(row.mark))
    line = f"{row.branch}{name}{pad}  {row.size:>{widths[1]}}  {mark}  {row.reason}"
    return line.rstrip()


def _paint(text: str, key: str, color: bool) -> str:
    if not color or key not in _SGR or not text:
        return text
    return f"\x1b[{_SGR[key]}m{text}\x1b[0m"


# --- what was not in the upper ------------------------------------------------------------


def volumes_line(volumes: Sequence[Volume], tmpfs: Sequence[str], *, read_only: bool) -> str:
    """One line under the tree, for the writes the tree cannot show: those to volumes (on the
    host) and to tmpfs mounts (in memory, gone); "" when the run had neither nor --read-only.
    The paths are the user's, escaped all the same."""
    parts = []
    if volumes:
        its = "its writes are" if len(volumes) == 1 else "their writes are"
        shown = ", ".join(escaped(str(v)) for v in volumes)
        parts.append(f"volumes: {shown}: {its} on the host, not in upper")
    if tmpfs:
        parts.append(f"tmpfs: {', '.join(escaped(t) for t in tmpfs)}: in memory, gone with "
                     "the container, not in upper")
    if read_only:
        parts.append("root: mounted read-only (--read-only): the command could not write "
                     "to the upper")
    return "\n".join(parts)
