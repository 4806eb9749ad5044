"""What a container changed: its overlay upperdir, read against the image's layers.

OverlayFS never writes to a lower layer. Every change lands in the upperdir, in one of
three forms, and this module says which one each upper entry is:

- ``A`` added: a path no image layer has.
- ``C`` changed: a path the image has, copied up before its first write (a chmod copies up
  too: minictr mounts with ``metacopy=off``), or a directory copied up to hold changes below.
- ``D`` deleted: a *whiteout*, a character device 0:0 that hides the image's entry.

A directory with the xattr ``trusted.overlay.opaque=y`` is *opaque*: the kernel made it when
a directory the image has was removed and made again, so the image's entries below it are
hidden without a whiteout each.

Everything here only reads (lstat, readlink, getxattr); nothing follows a symlink. The
upper is the container's, and may change while it is read: it is walked by fd
(minictr.fs.walk), so a symlink swapped in for a directory shows as a symlink, never as what it
points to.

Shell: find UPPER -printf '%y %m %s %p\\n'; getfattr -n trusted.overlay.opaque UPPER/DIR
See: https://docs.kernel.org/filesystems/overlayfs.html ("Whiteouts and opaque directories"),
     lstat(2), getxattr(2), xattr(7)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from minictr.fs import walk
from minictr.fs.walk import NO_XATTR, OPEN_DIR, Walk

OPAQUE_XATTR = "trusted.overlay.opaque"
# Set by the kernel on copy-up (when the lower fs can make file handles): "this came from a
# lower inode". On an added path it means the file was copied up, then renamed or hard-linked.
ORIGIN_XATTR = "trusted.overlay.origin"
# The same, as overlay writes them when mounted with `userxattr` in a user namespace
# (minictr run --userns): user.* xattrs, which need no root on the host.
USER_OPAQUE_XATTR = "user.overlay.opaque"
USER_ORIGIN_XATTR = "user.overlay.origin"
_CHUNK = 1 << 16

_FTYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}
_NOUNS = {"dir": "directory", "chardev": "char device", "blockdev": "block device"}

# The entry a lower layer has at a path: its directory's fd, its name there and its lstat.
_Lower = tuple[int, str, os.stat_result]
# An upper entry: its directory's fd and its name there.
_At = tuple[int, str]


class Change(NamedTuple):
    """One entry of the upperdir, and why it is there."""

    path: str  # absolute path inside the container, "/etc/passwd"
    kind: str  # "A", "C" or "D"
    ftype: str  # "file", "dir", ... (for D: the type the lower entry had)
    size: int  # bytes this entry takes in upper (st_size for files and symlinks, else 0)
    opaque: bool  # a directory with trusted.overlay.opaque=y
    reason: str  # one short sentence
    hidden: tuple[str, ...] = ()  # for opaque dirs: names of lower entries it hides


def scan(upper: Path, lowers: Sequence[Path]) -> list[Change]:
    """Every entry of ``upper``, classified against ``lowers`` (top-most first), by path.

    Shell: find UPPER -mindepth 1    (then, per entry, the lstat/getxattr done below)
    """
    return sorted(_walk(Path(upper), lowers), key=lambda c: c.path)


def docker_lines(changes: Sequence[Change]) -> list[str]:
    """The changes as ``docker diff`` prints them: ``A /x``, ``C /x``, ``D /x``, by path.

    Sorted as plain strings, as Docker sorts them ("/a.b" before "/a/b").

    The kinds are scan's, which the change report shows too (an entry made again inside an
    opaque directory is "C" in both, as Docker says); each name an opaque directory hides
    is a "D", and so is every parent of a change that is not one itself a "C".
    """
    kinds = {c.path: c.kind for c in changes}
    for c in changes:
        for name in c.hidden:
            kinds.setdefault(_join(c.path, name), "D")
    for path in list(kinds):
        # A parent of a change is a copied-up dir in upper. Up only to one already known:
        # a tree 5000 deep has 5000 parents for each path.
        parent = path.rpartition("/")[0]
        while parent and parent not in kinds:
            kinds[parent] = "C"
            parent = parent.rpartition("/")[0]
    kinds.pop("/", None)
    return [f"{kinds[p]} {p}" for p in sorted(kinds)]


def tree_bytes(root: Path) -> int:
    """Apparent bytes of the regular files and symlinks under ``root``, hard links once.

    Shell: du -s --apparent-size --bytes ROOT    (which also counts directories)
    """
    total, seen = 0, set()
    top = os.open(root, OPEN_DIR)
    try:
        with Walk(top, f"measure {root}") as w:
            for entry in w:
                st = entry.st
                if stat.S_ISDIR(st.st_mode):
                    if (fd := w.open_dir()) is not None:
                        w.enter(fd)
                elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    if st.st_nlink > 1 and (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    finally:
        os.close(top)
    return total


def is_whiteout(st: os.stat_result) -> bool:
    """A whiteout is a character device with device number 0:0.

    Shell: mknod NAME c 0 0       See: mknod(2), overlayfs.rst "whiteouts"
    """
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | Path) -> bool:
    """True if the directory has ``trusted.overlay.opaque`` (or, from a --userns container,
    ``user.overlay.opaque``) set to ``y``.

    Other values are not opaque: newer kernels write "x" for "has xattr whiteouts below".
    Shell: getfattr -n trusted.overlay.opaque DIR
    """
    return b"y" in (_xattr(path, OPAQUE_XATTR), _xattr(path, USER_OPAQUE_XATTR))


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


def _xattr(path: str | Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in NO_XATTR:
            return None
        raise


def is_opaque_fd(fd: int) -> bool:
    """is_opaque, for an open directory."""
    return b"y" in (walk.fd_xattr(fd, OPAQUE_XATTR), walk.fd_xattr(fd, USER_OPAQUE_XATTR))


def ftype_of(mode: int) -> str:
    return _FTYPES[stat.S_IFMT(mode)]


def noun(ftype: str) -> str:
    return _NOUNS.get(ftype, ftype)


# --- walking the upperdir beside the lower layers ---------------------------------------
#
# The upper is walked by minictr.fs.walk (by fd: the container may change it meanwhile), with a
# column for each lower layer: the directory at the same path in that layer, while the
# merged view still shows it (top-most first; None where a layer has none).


def _walk(upper: Path, lowers: Sequence[Path]) -> Iterator[Change]:
    top = os.open(upper, OPEN_DIR)
    try:
        columns = []
        for lower in lowers:  # the store's, not the container's
            columns.append(os.open(lower, OPEN_DIR))
        with Walk(top, "diff", columns=columns) as w:
            for entry in w:
                try:
                    changes = list(_scan_entry(w, entry, len(lowers)))
                except OSError as e:
                    if e.errno not in walk.CHANGED:
                        raise
                    continue  # a running container removed or replaced it meanwhile
                yield from changes
    finally:
        os.close(top)


def _scan_entry(w: Walk, entry: walk.Entry, n_lowers: int) -> Iterator[Change]:
    st, here = entry.st, w.dir_fd()
    assert here is not None
    lower_dirs = [(c, fd) for c in range(1, n_lowers + 1) if (fd := w.dir_fd(c)) is not None]
    lower = _find_lower(lower_dirs, entry.name)
    replaces_hidden = entry.name in (w.data or ())
    if is_whiteout(st):
        yield _deleted(entry.path, lower)
        return
    if not stat.S_ISDIR(st.st_mode):
        yield _non_dir(here, entry.name, entry.path, st, lower, replaces_hidden)
        return
    fd = w.open_dir()
    if fd is None:  # no longer a directory: the container changed it since it was listed
        yield _dir(entry.path, st, lower, replaces_hidden=replaces_hidden)
        return
    opaque = is_opaque_fd(fd)
    dirs_below = _lower_dirs_below(lower_dirs, entry.name)
    # An opaque directory ends the lookup: nothing below it comes from a lower layer. The
    # image's names under it that upper has too are made again (C); the others are hidden (D).
    image_names = _visible_names([d for _, d in dirs_below]) if opaque else ()
    remade = set(image_names).intersection(os.listdir(fd)) if image_names else set()
    hidden = tuple(name for name in image_names if name not in remade)
    if opaque:
        for _, d in dirs_below:
            os.close(d)
        dirs_below = []
    columns: list[int | None] = [None] * n_lowers
    for c, d in dirs_below:
        columns[c - 1] = d
    has_entries = w.enter(fd, columns, data=frozenset(image_names)) > 0
    yield _dir(entry.path, st, lower, opaque=opaque, hidden=hidden, remade=len(remade),
               has_changes_below=has_entries, replaces_hidden=replaces_hidden)


def _find_lower(lower_dirs: list[tuple[int, int]], name: str) -> _Lower | None:
    """The entry the merged view would show from the lower layers: the top-most one.

    A whiteout in a higher layer hides the name in all layers under it.
    """
    for _, d in lower_dirs:
        st = walk.lstat(d, name)
        if st is not None:
            return None if is_whiteout(st) else (d, name, st)
    return None


def _lower_dirs_below(lower_dirs: list[tuple[int, int]], name: str) -> list[tuple[int, int]]:
    """The lower directories merged at ``name`` (opened), stopping where a layer hides the
    rest. A non-directory (or a whiteout) hides every layer under it; so does an opaque
    directory, after its own entries."""
    dirs: list[tuple[int, int]] = []
    for column, d in lower_dirs:
        st = walk.lstat(d, name)
        if st is None:
            continue
        fd = walk.open_dir(d, name) if stat.S_ISDIR(st.st_mode) else None
        if fd is None:
            break
        dirs.append((column, fd))
        if is_opaque_fd(fd):
            break
    return dirs


def _visible_names(dirs: list[int]) -> tuple[str, ...]:
    """The names a merged listing of ``dirs`` (top-most first) would show.

    Shell: ls -A LOWER/DIR    (for one layer)
    """
    seen: set[str] = set()
    visible: list[str] = []
    for d in dirs:
        for name, st in walk.listing(d):
            if name not in seen:
                seen.add(name)
                if not is_whiteout(st):
                    visible.append(name)
    return tuple(sorted(visible))


# --- one Change per kind of entry ----------------------------------------------------------


def _deleted(path: str, lower: _Lower | None) -> Change:
    if lower is None:
        # Overlay only makes whiteouts over something; a hand-made upper may have others.
        reason = "whiteout (char 0:0), but no image layer has this path"
        return Change(path, "D", "chardev", 0, False, reason)
    ftype = ftype_of(lower[2].st_mode)
    reason = f"whiteout (char 0:0) hides the image's {noun(ftype)}"
    if ftype == "dir":
        reason += " and all below it"
    return Change(path, "D", ftype, 0, False, reason)


def _non_dir(dir_fd: int, name: str, path: str, st: os.stat_result, lower: _Lower | None,
             replaces_hidden: bool) -> Change:
    ftype = ftype_of(st.st_mode)
    size = st.st_size if ftype in ("file", "symlink") else 0
    if lower is not None:
        return Change(path, "C", ftype, size, False, _changed((dir_fd, name), st, lower))
    if replaces_hidden:  # Docker's rule too: the image had this path
        return Change(path, "C", ftype, size, False, _REMADE.format(noun=noun(ftype)))
    if any(walk.xattr(dir_fd, name, x) is not None for x in (ORIGIN_XATTR, USER_ORIGIN_XATTR)):
        reason = f"new name for an image {noun(ftype)}: copied up, then moved or linked"
    else:
        reason = f"new {_describe((dir_fd, name), st)}"
    return Change(path, "A", ftype, size, False, reason)


def _dir(
    path: str,
    st: os.stat_result,
    lower: _Lower | None,
    *,
    opaque: bool = False,
    hidden: tuple[str, ...] = (),
    remade: int = 0,
    has_changes_below: bool = False,
    replaces_hidden: bool = False,
) -> Change:
    if lower is None and replaces_hidden:  # Docker's rule too: the image had this path
        return Change(path, "C", "dir", 0, opaque, _REMADE.format(noun="dir"), hidden)
    if lower is None:
        return Change(path, "A", "dir", 0, opaque, "new directory")
    lower_st = lower[2]
    owner = _metadata(lower_st, st, with_mtime=False)
    if not stat.S_ISDIR(lower_st.st_mode):
        reason = _type_changed(lower_st, st)
    elif opaque:
        reason = ", ".join([_opaque(hidden, remade), *owner])
    else:
        # A directory's mtime changes with every entry made or removed in it, so it says
        # nothing new when changes below are listed anyway.
        parts = ["holds changes below", *owner] if has_changes_below else _metadata(lower_st, st)
        reason = _copied_up(parts) if parts else "copied up from the image, but nothing differs"
    return Change(path, "C", "dir", 0, opaque, reason, hidden)


# An entry made again inside an opaque directory, where the image had one: "C", as Docker
# says (the image had the path), although nothing of the image's entry is in it.
_REMADE = "made again: new, where the image's {noun} was removed"


def _opaque(hidden: tuple[str, ...], remade: int) -> str:
    """Overlay marks a directory opaque when it is made where the image's one was removed.
    The count is of what the merged view no longer shows, as `minictr layers` counts it."""
    if not hidden and not remade:
        return "opaque: removed and made again; the image's dir was empty"
    n = len(hidden)
    entries = "entry" if n == 1 else "entries"
    if not remade:
        return f"opaque: removed and made again; hides the image's {n} {entries}"
    return f"opaque: removed and made again; hides {n} of the image's {n + remade} entries"


def _changed(upper: _At, st: os.stat_result, lower: _Lower) -> str:
    """Why a non-directory the image has is in upper: what differs from the image's one."""
    lower_st = lower[2]
    if ftype_of(st.st_mode) != ftype_of(lower_st.st_mode):
        return _type_changed(lower_st, st)
    content = _content_change(upper, st, lower)
    if content:
        # Writing always moves mtime: name only the metadata a write does not explain.
        return _copied_up([content, *_metadata(lower_st, st, with_mtime=False)])
    metadata = _metadata(lower_st, st)
    if metadata:
        return _copied_up([*metadata, "content unchanged"])
    return "copied up, but nothing differs: metadata set to the same value, or opened for writing"


def _copied_up(parts: list[str]) -> str:
    return "copied up from the image: " + ", ".join(parts)


def _type_changed(lower_st: os.stat_result, st: os.stat_result) -> str:
    old, new = noun(ftype_of(lower_st.st_mode)), noun(ftype_of(st.st_mode))
    return f"type changed: the image's {old} is now a {new}"


def _content_change(upper: _At, st: os.stat_result, lower: _Lower) -> str | None:
    """What changed in the content of two entries of the same type, or None."""
    lower_st = lower[2]
    if stat.S_ISREG(st.st_mode):
        if lower_st.st_size != st.st_size:
            return f"content changed ({lower_st.st_size} → {st.st_size} bytes)"
        same = _same_bytes((*upper, st), lower)
        return None if same else "content changed (same size)"
    if stat.S_ISLNK(st.st_mode):
        old, new = walk.readlink(lower[0], lower[1]), walk.readlink(*upper)
        return None if old == new else f"target changed: {old} → {new}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        old, new = _devno(lower_st), _devno(st)
        return None if old == new else f"device changed: {old} → {new}"
    return None  # a fifo or a socket has no content


def _same_bytes(a: _Lower, b: _Lower) -> bool:
    """Compare two files of equal size, a chunk at a time.  Shell: cmp -s A B"""
    with open(walk.open_regular(*a), "rb") as fa, open(walk.open_regular(*b), "rb") as fb:
        while True:
            chunk = fa.read(_CHUNK)
            if chunk != fb.read(_CHUNK):
                return False
            if not chunk:
                return True


def _metadata(old: os.stat_result, new: os.stat_result, *, with_mtime: bool = True) -> list[str]:
    """The metadata that differs, named: ["mode 0644→0600", "uid 0→1000", "mtime"]."""
    parts = []
    if stat.S_IMODE(old.st_mode) != stat.S_IMODE(new.st_mode):
        parts.append(f"mode {stat.S_IMODE(old.st_mode):04o}→{stat.S_IMODE(new.st_mode):04o}")
    if old.st_uid != new.st_uid:
        parts.append(f"uid {old.st_uid}→{new.st_uid}")
    if old.st_gid != new.st_gid:
        parts.append(f"gid {old.st_gid}→{new.st_gid}")
    if with_mtime and old.st_mtime_ns != new.st_mtime_ns:
        parts.append("mtime changed")
    return parts


def _describe(upper: _At, st: os.stat_result) -> str:
    """'file', 'symlink to hosts', 'char device 1:3', ..."""
    ftype = ftype_of(st.st_mode)
    if ftype == "symlink":
        return f"symlink to {walk.readlink(*upper)}"
    if ftype in ("chardev", "blockdev"):
        return f"{noun(ftype)} {_devno(st)}"
    return noun(ftype)


def _devno(st: os.stat_result) -> str:
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
