"""The container's merged view, entry by entry, each with the layer it comes from.

What a process inside the container sees at ``/`` is not a directory on the host: OverlayFS
builds it at each lookup from the layers, top-most first (``lowerdir=TOP:...:BOTTOM``):

- The first layer that has a name decides what the name is. So upper wins: a file there is a
  new file, or a *copy-up* of the image's one (made on the first write) that now hides it.
- A *whiteout* (a character device 0:0) decides "nothing here": the entry of every layer
  below is deleted from the view, although it is still in the image.
- A non-directory ends the lookup; a directory does not: the directories of the same name
  in the layers below are *merged*, and listing it lists them all together...
- ...down to an *opaque* directory (``trusted.overlay.opaque=y``): it is merged with nothing
  below it, so everything the layers below have there is hidden, without a whiteout each.

This module does that resolution itself, from the layer directories on the host: the overlay
is mounted only in the container's mount namespace, and is gone once the container exits.
tests/test_layers.py checks it against what the kernel shows through a real mount.

    $ minictr layers x --path /etc
    Layers, top first: upper = this container's (read-write) · image = shared (read-only)
    upper+image = a directory merged from both · ✗ = not in the merged view (deleted or hidden)
    /etc/       upper+image  copied up from the image: holds changes below
    ├── group   image
    ├── hosts   ✗ image      deleted: a whiteout in upper hides the image's file
    ├── motd    upper        new file
    └── passwd  upper        copied up from the image: content changed (123 → 158 bytes)
    3 visible: 2 from upper, 1 from image, 0 merged dirs · 1 deleted by whiteouts · 0 hidden ...

With no --path, long runs of entries that come unchanged from one layer (busybox's applet
symlinks) are drawn as one line, "… 74 entries"; with --path, every entry below it is drawn.

Shell: ls -la UPPER/DIR LOWER/DIR; getfattr -n trusted.overlay.opaque UPPER/DIR
See: https://docs.kernel.org/filesystems/overlayfs.html ("Upper and Lower",
     "Whiteouts and opaque directories", "Multiple lower layers"), lstat(2), xattr(7)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

from minictr.errors import StepError
from minictr.fs import walk
from minictr.show.diff import Change, ftype_of, is_opaque_fd, is_whiteout, noun, scan
from minictr.show.report import escaped

UPPER = 0  # layer numbers: 0 is upper, 1.. the lowers, top-most first, as in lowerdir=

VISIBLE = "visible"
DELETED = "deleted"  # a whiteout in a layer above hides it
HIDDEN = "hidden"  # an opaque directory above hides it

STEP = "show layers"

# With no --path, a directory of more than _BIG entries shows a run of at least _RUN entries
# that all come unchanged from one lower layer (busybox's /bin: 80 applet symlinks) as one
# line: "… 70 entries". --path DIR shows everything below DIR.
_BIG = 16
_RUN = 4
_LABEL_MAX = 40  # a longer name pushes only its own line's columns right

# SGR colours, see console_codes(4): upper green, deleted red and struck through, hidden (by
# an opaque dir) and opaque dirs magenta, as the change report paints them; collapsed dim.
_SGR = {"upper": "32", "deleted": "31;9", "hidden": "35;9", "opaque": "35", "gone": "31",
        "run": "2"}

# Below the shown directory, the tree is drawn this many levels deep; a directory deeper
# than that is drawn, with a note, and not its entries (a container may nest 100 000).
MAX_DEPTH = 32

# One directory of the merged view: (layer, an fd on its directory there) for each layer that
# takes part, top-most first. Every layer is read by fd (minictr.fs.walk): the upper is the
# container's, and a symlink it swaps in for a directory must not lead to the host.
_Stack = list[tuple[int, int]]
# One layer's entry at a name: (layer, the fd of the directory holding it, its lstat).
_Hit = tuple[int, int, os.stat_result]


@dataclass(frozen=True)
class Entry:
    """One name of the merged view, or one the view hides, and where it comes from."""

    path: str  # absolute path inside the container, "/etc/passwd"
    ftype: str  # "file", "dir", "symlink", ... (deleted, hidden: the type of the hidden entry)
    state: str  # VISIBLE, DELETED or HIDDEN
    # VISIBLE: the layers that provide it, top first; several only for a merged directory.
    # DELETED, HIDDEN: the layer whose entry is hidden (none: a whiteout over nothing).
    layers: tuple[int, ...]
    by: int | None = None  # DELETED, HIDDEN: the layer with the whiteout or the opaque dir
    target: str | None = None  # a symlink's target
    opaque: bool = False
    note: str = ""  # why it is there, for entries that a layer above changes
    children: tuple[Entry, ...] = ()  # a visible directory's entries, and those it hides
    cut: bool = False  # a directory MAX_DEPTH below the shown one: its entries not drawn

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1] or "/"

    def walk(self) -> Iterator[Entry]:
        """This entry and every entry below it, depth first, by name."""
        todo = [self]
        while todo:
            entry = todo.pop()
            yield entry
            todo += reversed(entry.children)


# What a lookup finds: the entry, the stack merged below it, the stack its opacity hides.
_Found = tuple[Entry, _Stack, _Stack]


def normalise(path: str) -> str:
    """``--path`` as the container sees it: absolute, without ``..``.

    ``/etc/``, ``//etc`` and ``/./etc`` are ``/etc``.
    """
    if not path.startswith("/"):
        raise StepError(STEP, f"--path {path!r} is not absolute",
                        hint=f"give the path as the container sees it: --path /{path}")
    if "\0" in path:
        raise StepError(STEP, "--path contains a NUL byte", hint="give a path such as /etc")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StepError(STEP, f"--path {path!r} contains '..'",
                        hint="give the path as the container sees it, e.g. --path /etc")
    return "/" + "/".join(parts)


def layer_names(n_lowers: int) -> list[str]:
    """Short names, by layer number (top first): ["upper", "image"], or ["upper", "L3", "L2",
    "L1"]: L1 is the image's bottom layer, as `images` and `--explain` number them."""
    if n_lowers == 1:
        return ["upper", "image"]
    return ["upper", *(f"L{i}" for i in range(n_lowers, 0, -1))]


def merged_view(upper: Path, lowers: Sequence[Path], path: str = "/") -> Entry:
    """The entry at ``path`` (normalised) in the merged view, with everything below it.

    Raises StepError if the merged view has nothing at ``path``.
    """
    path, lowers = normalise(path), [Path(p) for p in lowers]
    view = _View(lowers, {c.path: c for c in scan(upper, lowers)})
    try:
        merged: _Stack = [(layer, view.open_top(p))
                          for layer, p in enumerate([Path(upper), *lowers])]
        hidden: _Stack = []
        here = Entry("/", "dir", VISIBLE, tuple(layer for layer, _ in merged))
        for name in (p for p in path.split("/") if p):
            if here.ftype != "dir":
                raise StepError(STEP, f"{here.path} is a {noun(here.ftype)}, not a directory",
                                hint=f"see it with --path {here.path}")
            found = view.lookup(here.path, name, merged)
            if found is None or found[0].state != VISIBLE:
                raise StepError(STEP, f"{_join(here.path, name)} is not in the merged view "
                                f"({view.why_not(here, name, found, hidden)})",
                                hint=f"see what is there: --path {here.path}")
            view.close(merged + hidden)  # down one level: the one above is not needed again
            here, merged, hidden = found
        return view.with_children(here, merged, hidden, MAX_DEPTH)
    finally:
        view.close_all()


def render(upper: Path, lowers: list[Path], path: str, *, color: bool) -> str:
    """The picture: a legend, the tree with a layer for each entry, and the counts.

    With no ``--path`` (``/``), long runs of unchanged entries are shown as one line.
    """
    path = normalise(path)
    try:
        top = merged_view(upper, lowers, path)
    except FileNotFoundError as e:
        raise StepError.from_os_error(
            STEP, e, hint="the container changed it meanwhile, or its image is gone; try again"
        ) from e
    except OSError as e:
        raise StepError.from_os_error(STEP, e) from e
    tags = layer_names(len(lowers))
    rows = [_row(top, "", path, tags), *_rows(top, "", tags, collapse=path == "/")]
    width = min(max(len(r.branch + r.name) for r in rows), _LABEL_MAX)
    layer_width = max(len(r.layer) for r in rows)
    lines = [*_legend(tags, color), *(_format(r, width, layer_width, color) for r in rows)]
    if top.ftype == "dir":
        lines.append(_summary(top, tags))
    return "\n".join(lines) + "\n"


# --- resolving names, the way overlay does ------------------------------------------------


class _View:
    """The layers, and the change report's reason for every upper entry."""

    def __init__(self, lowers: list[Path], changes: dict[str, Change]) -> None:
        self.lowers = lowers
        self.changes = changes
        self.fds: set[int] = set()  # open now; closed as soon as not needed, all at the end

    def open_top(self, path: Path) -> int:
        fd = os.open(path, walk.OPEN_DIR)
        self.fds.add(fd)
        return fd

    def open_dir(self, parent: int, name: str) -> int | None:
        fd = walk.open_dir(parent, name)
        if fd is not None:
            self.fds.add(fd)
        return fd

    def close(self, stack: _Stack) -> None:
        for _, fd in stack:
            if fd in self.fds:
                self.fds.discard(fd)
                os.close(fd)

    def close_all(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def lookup(self, parent: str, name: str, stack: _Stack) -> _Found | None:
        """What the merged view has at ``name`` in the directory ``stack``, or None.

        Returns the entry (without children) and, for a visible directory, the stack merged
        below it and the stack its opacity hides. Overlay's lookup, layer by layer:
        Shell: ls -ld UPPER/PATH LOWER1/PATH LOWER2/PATH ...
        """
        path = _join(parent, name)
        hits: list[_Hit] = []
        for layer, d in stack:
            if (hit_st := walk.lstat(d, name)) is not None:
                hits.append((layer, d, hit_st))
        if not hits:
            return None
        layer, real, st = hits[0]
        # The entry right below the one that wins, if it is a real one (not a whiteout,
        # which already hid everything under it): what the winner hides.
        under = hits[1] if len(hits) > 1 and not is_whiteout(hits[1][2]) else None
        if is_whiteout(st):  # "nothing here": the lookup ends
            return self._deleted(path, layer, under), [], []
        if not stat.S_ISDIR(st.st_mode):  # a non-directory ends the lookup too
            ftype = ftype_of(st.st_mode)
            target = walk.readlink(real, name) if ftype == "symlink" else None
            note = self._note(path, layer, under)
            return Entry(path, ftype, VISIBLE, (layer,), target=target, note=note), [], []
        merged: _Stack = []
        hidden: _Stack = []
        for hit_layer, hit_dir, hit_st in hits:
            fd = self.open_dir(hit_dir, name) if stat.S_ISDIR(hit_st.st_mode) else None
            if fd is None:
                break  # a file or a whiteout under a directory hides everything below it
            opaque_above = bool(merged) and is_opaque_fd(merged[-1][1])
            (hidden if hidden or opaque_above else merged).append((hit_layer, fd))
        if not merged:  # the upper's directory became a file since it was listed
            self.close(hidden)
            return None
        opaque = is_opaque_fd(merged[0][1])
        if under is not None and stat.S_ISDIR(under[2].st_mode):
            under = None  # merged with it, or hidden by opacity: not replaced
        note = self._note(path, layer, under, opaque=opaque and bool(hidden))
        layers = tuple(hit_layer for hit_layer, _ in merged)
        return Entry(path, "dir", VISIBLE, layers, opaque=opaque, note=note), merged, hidden

    def with_children(self, entry: Entry, merged: _Stack, hidden: _Stack, depth: int) -> Entry:
        """``entry`` with its subtree, ``depth`` levels deep: the merged listing of
        ``merged``, then what it hides. Closes the fds of both stacks.

        Shell: ls -A UPPER/DIR LOWER/DIR | sort -u    (minus whiteouts and what they hide)
        """
        try:
            if entry.ftype != "dir" or entry.state != VISIBLE:
                return entry
            if depth == 0:
                return replace(entry, cut=True)
            names = {n for _, d in merged for n, _ in walk.listing(d)}
            children = []
            for name in sorted(names):
                found = self.lookup(entry.path, name, merged)
                if found is not None:
                    children.append(self.with_children(*found, depth - 1))
            # What the layers under an opaque directory have there: in no listing, so shown
            # apart. Not looked into further: one level says enough.
            for name in sorted({n for _, d in hidden for n, _ in walk.listing(d)} - names):
                found = self.lookup(entry.path, name, hidden)
                if found is not None:
                    self.close(found[1] + found[2])
                    if found[0].state == VISIBLE:
                        children.append(self._hidden(found[0], by=merged[-1][0]))
            children.sort(key=lambda e: e.name)
            return replace(entry, children=tuple(children))
        finally:
            self.close(merged + hidden)

    def why_not(self, parent: Entry, name: str, found: _Found | None, hidden: _Stack) -> str:
        """Why ``name`` is not in the merged listing of ``parent``, for an error message."""
        if found is not None:
            return found[0].note
        below = self.lookup(parent.path, name, hidden) if hidden else None
        if below is not None:
            self.close(below[1] + below[2])
        if below is not None and below[0].state == VISIBLE:
            return f"{parent.path} is opaque and hides {self._whose(below[0].layers[0])} one"
        return f"no layer has {name} in {parent.path}"

    # --- what each entry says -------------------------------------------------------------

    def _deleted(self, path: str, by: int, under: _Hit | None) -> Entry:
        if under is None:  # overlay makes none like this; a hand-made layer may
            note = f"a whiteout in {self._name(by)}, over nothing"
            return Entry(path, "chardev", DELETED, (), by=by, note=note)
        layer, real, st = under
        ftype = ftype_of(st.st_mode)
        note = f"deleted: a whiteout in {self._name(by)} hides {self._whose(layer)} {noun(ftype)}"
        if ftype == "dir":
            note += " and all below it"
        target = walk.readlink(real, path.rsplit("/", 1)[-1]) if ftype == "symlink" else None
        return Entry(path, ftype, DELETED, (layer,), by=by, target=target, note=note)

    def _hidden(self, entry: Entry, by: int) -> Entry:
        note = f"hidden by the opaque dir above (in {self._name(by)}): no whiteout needed"
        return Entry(entry.path, entry.ftype, HIDDEN, entry.layers[:1], by=by,
                     target=entry.target, note=note)

    def _note(self, path: str, layer: int, under: _Hit | None, *, opaque: bool = False) -> str:
        """Upper entries: the change report's reason. Lower ones: what they hide, if anything."""
        if layer == UPPER:
            change = self.changes.get(path)
            return change.reason if change else ""
        if under is not None:
            return f"hides {self._whose(under[0])} {noun(ftype_of(under[2].st_mode))}"
        if opaque:
            return "opaque: hides what the layers below have here"
        return ""

    def _name(self, layer: int) -> str:
        if layer == UPPER:
            return "upper"
        return "the image" if len(self.lowers) == 1 else f"layer {len(self.lowers) - layer + 1}"

    def _whose(self, layer: int) -> str:
        return f"{self._name(layer)}'s"


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


# --- drawing it ---------------------------------------------------------------------------


class _Row(NamedTuple):
    branch: str  # the tree drawing before the name: "│   ├── "
    name: str  # "passwd", "etc/", "arch -> /bin/busybox", "… 70 entries"
    layer: str  # "upper", "upper+image", "✗ image"
    note: str
    style: str  # a key of _SGR for the name, or ""


def _rows(entry: Entry, indent: str, tags: list[str], *, collapse: bool) -> Iterator[_Row]:
    """The entries below ``entry``, depth first, with the connectors ``tree`` draws."""
    items = _collapsed(entry.children) if collapse else [[c] for c in entry.children]
    hinted = False
    for i, item in enumerate(items):
        last = i == len(items) - 1
        branch = indent + ("└── " if last else "├── ")
        if len(item) > 1:
            yield _run_row(item, branch, entry.path, tags, hint=not hinted)
            hinted = True
            continue
        yield _row(item[0], branch, item[0].name, tags)
        yield from _rows(item[0], indent + ("    " if last else "│   "), tags, collapse=collapse)


def _collapsed(children: Sequence[Entry]) -> list[list[Entry]]:
    """Children in groups: a run of unchanged entries of one layer, or one entry alone."""
    if len(children) <= _BIG:
        return [[c] for c in children]
    items: list[list[Entry]] = []
    for key, group in groupby(children, key=_run_key):
        run = list(group)
        if key is not None and len(run) >= _RUN:
            items.append(run)
        else:
            items += [[c] for c in run]
    return items


def _run_key(e: Entry) -> tuple[object, ...] | None:
    """Entries with the same key may share a line: unchanged ones of one lower layer, or
    ones the same layer deletes (rm /usr/bin/*) or hides with an opaque directory. Visible
    directories, upper's entries and entries that hide something never do."""
    if e.state == VISIBLE and e.ftype != "dir" and e.layers[0] != UPPER and not e.note:
        return (VISIBLE, e.layers)
    if e.state != VISIBLE and e.layers:  # not a whiteout over nothing
        return (e.state, e.layers, e.by)
    return None


def _row(e: Entry, branch: str, name: str, tags: list[str]) -> _Row:
    name = escaped(name)  # the container's names and link targets: see report.escaped
    if e.ftype == "dir" and name != "/":
        name += "/"
    if e.target is not None:
        name += f" -> {escaped(e.target)}"
    if e.state != VISIBLE:
        layer = "✗ " + "+".join(tags[i] for i in e.layers) if e.layers else "✗"
        return _Row(branch, name, layer.rstrip(), escaped(e.note), e.state)
    style = "opaque" if e.opaque else "upper" if e.layers[0] == UPPER else ""
    note = escaped(e.note)
    if e.cut:
        note = (note + " · " if note else "") + (f"{MAX_DEPTH} levels down: what is below "
                                                 f"is not drawn (--path {escaped(e.path)})")
    return _Row(branch, name, "+".join(tags[i] for i in e.layers), note, style)


def _run_row(run: list[Entry], branch: str, parent: str, tags: list[str], *, hint: bool) -> _Row:
    first = run[0]
    where, tag = f"{escaped(first.name)} … {escaped(run[-1].name)}", tags[first.layers[0]]
    if first.state == VISIBLE:
        layer, note = tag, f"{where}: unchanged"
    elif first.state == DELETED:
        layer, note = f"✗ {tag}", f"{where}: deleted by whiteouts in {tags[first.by or 0]}"
    else:
        layer, note = f"✗ {tag}", f"{where}: hidden by the opaque dir above"
    if hint:
        note += f" (all of them: --path {parent})"
    return _Row(branch, f"… {len(run)} entries", layer, note, "run")


def _legend(tags: list[str], color: bool) -> list[str]:
    """What the layer names and marks mean: two lines above the tree."""
    upper, gone = _paint("upper", "upper", color), _paint("✗", "gone", color)
    parts = [f"{upper} = this container's (read-write)"]
    if len(tags) == 1:
        return [f"Layers: {parts[0]} · no lower layers", f"{gone} = not in the merged view"]
    if len(tags) == 2:
        parts.append("image = shared (read-only)")
        merged = f"{upper}+image = a directory merged from both"
    else:
        parts.append(f"{tags[1]} (top)" + "".join(f", {t}" for t in tags[2:])
                     + " = the image's layers (shared, read-only)")
        merged = f"{upper}+{tags[1]} = a directory merged from those layers"
    return [f"Layers, top first: {' · '.join(parts)}",
            f"{merged} · {gone} = not in the merged view (deleted or hidden)"]


def _summary(top: Entry, tags: list[str]) -> str:
    """How many entries below ``top`` each layer provides, and how many are gone."""
    below = list(top.walk())[1:]
    visible = [e for e in below if e.state == VISIBLE]
    counts = [sum(1 for e in visible if e.layers == (layer,)) for layer in range(len(tags))]
    parts = [f"{n} from {tag}" for n, tag in zip(counts, tags, strict=True)]
    merged = sum(1 for e in visible if len(e.layers) > 1)
    parts.append(f"{merged} merged {'dir' if merged == 1 else 'dirs'}")
    deleted = sum(1 for e in below if e.state == DELETED)
    hidden = sum(1 for e in below if e.state == HIDDEN)
    return (f"{len(visible)} visible: {', '.join(parts)} · {deleted} deleted by whiteouts · "
            f"{hidden} hidden by opaque dirs")


def _format(row: _Row, width: int, layer_width: int, color: bool) -> str:
    """Pad first, then paint, so escape codes do not shift the columns."""
    pad = " " * max(0, width - len(row.branch) - len(row.name))
    name = _paint(row.name, row.style, color)
    layer_style = "gone" if row.layer.startswith("✗") else row.layer.split("+")[0]
    layer = _paint(row.layer, layer_style, color) + " " * (layer_width - len(row.layer))
    return f"{row.branch}{name}{pad}  {layer}  {row.note}".rstrip()


def _paint(text: str, key: str, color: bool) -> str:
    if not color or key not in _SGR or not text:
        return text
    return f"\x1b[{_SGR[key]}m{text}\x1b[0m"
