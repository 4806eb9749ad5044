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

Everything here only reads (lstat, readlink, getxattr); nothing follows a symlink.

Shell: find UPPER -printf '%y %m %s %p\\n'; getfattr -n trusted.overlay.opaque UPPER/DIR
See: https://docs.kernel.org/filesystems/overlayfs.html ("Whiteouts and opaque directories"),
     lstat(2), getxattr(2), xattr(7)
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

OPAQUE_XATTR = "trusted.overlay.opaque"
# Set by the kernel on copy-up (when the lower fs can make file handles): "this came from a
# lower inode". On an added path it means the file was copied up, then renamed or hard-linked.
ORIGIN_XATTR = "trusted.overlay.origin"
# The same, as overlay writes them when mounted with `userxattr` in a user namespace
# (minictr run --userns): user.* xattrs, which need no root on the host.
USER_OPAQUE_XATTR = "user.overlay.opaque"
USER_ORIGIN_XATTR = "user.overlay.origin"
# getxattr(2) errors that mean "no such xattr here": not there, not allowed (trusted.* needs
# CAP_SYS_ADMIN), or a filesystem without xattrs. ENOTSUP == EOPNOTSUPP on Linux.
_NO_XATTR = frozenset({errno.ENODATA, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})
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

# The entry a lower layer has at a path: where it is and its lstat.
_Lower = tuple[Path, os.stat_result]


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
    changes = _scan_dir(Path(upper), "/", [Path(p) for p in lowers], frozenset())
    return sorted(changes, key=lambda c: c.path)


def docker_lines(changes: Sequence[Change]) -> list[str]:
    """The changes as ``docker diff`` prints them: ``A /x``, ``C /x``, ``D /x``, by path.

    Sorted as plain strings, as Docker sorts them ("/a.b" before "/a/b").

    Docker calls a path "C" whenever the image had it, so an entry re-created inside an
    opaque directory is "C" here, and each hidden entry not re-created is a "D".
    """
    kinds: dict[str, str] = {}
    hidden_paths = {_join(c.path, name) for c in changes for name in c.hidden}
    for c in changes:
        kinds[c.path] = "C" if c.kind == "A" and c.path in hidden_paths else c.kind
    for path in hidden_paths:
        kinds.setdefault(path, "D")
    for path in list(kinds):
        for parent in _parents(path):
            kinds.setdefault(parent, "C")  # a parent of a change is a copied-up dir in upper
    kinds.pop("/", None)
    return [f"{kinds[p]} {p}" for p in sorted(kinds)]


def tree_bytes(root: Path) -> int:
    """Apparent bytes of the regular files and symlinks under ``root``, hard links once.

    Shell: du -s --apparent-size --bytes ROOT    (which also counts directories)
    """
    total, seen, todo = 0, set(), [os.fspath(root)]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    todo.append(entry.path)
                elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    if st.st_nlink > 1 and (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
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


def _parents(path: str) -> list[str]:
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _xattr(path: str | Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in _NO_XATTR:
            return None
        raise


def ftype_of(mode: int) -> str:
    return _FTYPES[stat.S_IFMT(mode)]


def noun(ftype: str) -> str:
    return _NOUNS.get(ftype, ftype)


# --- walking the upperdir beside the lower layers ---------------------------------------


def _scan_dir(
    upper_dir: Path, path: str, lower_dirs: list[Path], hidden: frozenset[str]
) -> list[Change]:
    """The changes below one upper directory.

    ``lower_dirs`` are the directories at ``path`` in the lower layers that the merged view
    still shows (top-most first); ``hidden`` the names an opaque ``upper_dir`` hides.
    """
    changes: list[Change] = []
    with os.scandir(upper_dir) as entries:
        for entry in entries:
            here = _join(path, entry.name)
            changes += _scan_entry(entry, here, lower_dirs, entry.name in hidden)
    return changes


def _scan_entry(
    entry: os.DirEntry[str], path: str, lower_dirs: list[Path], replaces_hidden: bool
) -> list[Change]:
    st = entry.stat(follow_symlinks=False)
    lower = _find_lower(lower_dirs, entry.name)
    if is_whiteout(st):
        return [_deleted(path, lower)]
    if not stat.S_ISDIR(st.st_mode):
        return [_non_dir(Path(entry.path), path, st, lower, replaces_hidden)]
    opaque = is_opaque(entry.path)
    dirs_below = _lower_dirs_below(lower_dirs, entry.name)
    # An opaque directory ends the lookup: nothing below it comes from a lower layer.
    hidden = _visible_names(dirs_below) if opaque else ()
    below = [] if opaque else dirs_below
    children = _scan_dir(Path(entry.path), path, below, frozenset(hidden))
    this = _dir(path, st, lower, opaque, hidden, bool(children), replaces_hidden)
    return [this, *children]


def _find_lower(lower_dirs: list[Path], name: str) -> _Lower | None:
    """The entry the merged view would show from the lower layers: the top-most one.

    A whiteout in a higher layer hides the name in all layers under it.
    """
    for d in lower_dirs:
        try:
            st = os.lstat(d / name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        return None if is_whiteout(st) else (d / name, st)
    return None


def _lower_dirs_below(lower_dirs: list[Path], name: str) -> list[Path]:
    """The lower directories merged at ``name``, stopping where a layer hides the rest.

    A non-directory (or a whiteout) hides every layer under it; so does an opaque directory,
    after its own entries.
    """
    dirs: list[Path] = []
    for d in lower_dirs:
        try:
            st = os.lstat(d / name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISDIR(st.st_mode):
            break
        dirs.append(d / name)
        if is_opaque(d / name):
            break
    return dirs


def _visible_names(dirs: list[Path]) -> tuple[str, ...]:
    """The names a merged listing of ``dirs`` (top-most first) would show.

    Shell: ls -A LOWER/DIR    (for one layer)
    """
    seen: set[str] = set()
    visible: list[str] = []
    for d in dirs:
        with os.scandir(d) as entries:
            for entry in entries:
                if entry.name not in seen:
                    seen.add(entry.name)
                    if not is_whiteout(entry.stat(follow_symlinks=False)):
                        visible.append(entry.name)
    return tuple(sorted(visible))


# --- one Change per kind of entry ----------------------------------------------------------


def _deleted(path: str, lower: _Lower | None) -> Change:
    if lower is None:
        # Overlay only makes whiteouts over something; a hand-made upper may have others.
        reason = "whiteout (char 0:0), but no image layer has this path"
        return Change(path, "D", "chardev", 0, False, reason)
    ftype = ftype_of(lower[1].st_mode)
    reason = f"whiteout (char 0:0) hides the image's {noun(ftype)}"
    if ftype == "dir":
        reason += " and all below it"
    return Change(path, "D", ftype, 0, False, reason)


def _non_dir(
    upper_path: Path, path: str, st: os.stat_result, lower: _Lower | None, replaces_hidden: bool
) -> Change:
    ftype = ftype_of(st.st_mode)
    size = st.st_size if ftype in ("file", "symlink") else 0
    if lower is not None:
        return Change(path, "C", ftype, size, False, _changed(upper_path, st, *lower))
    if replaces_hidden:
        reason = f"new {noun(ftype)}; the image's one stays hidden by the opaque dir"
    elif any(_xattr(upper_path, x) is not None for x in (ORIGIN_XATTR, USER_ORIGIN_XATTR)):
        reason = f"new name for an image {noun(ftype)}: copied up, then moved or linked"
    else:
        reason = f"new {_describe(upper_path, st)}"
    return Change(path, "A", ftype, size, False, reason)


def _dir(
    path: str,
    st: os.stat_result,
    lower: _Lower | None,
    opaque: bool,
    hidden: tuple[str, ...],
    has_changes_below: bool,
    replaces_hidden: bool,
) -> Change:
    if lower is None:
        reason = "new directory"
        if replaces_hidden:
            reason += "; the image's one stays hidden by the opaque dir"
        return Change(path, "A", "dir", 0, opaque, reason)
    lower_st = lower[1]
    owner = _metadata(lower_st, st, with_mtime=False)
    if not stat.S_ISDIR(lower_st.st_mode):
        reason = _type_changed(lower_st, st)
    elif opaque:
        reason = ", ".join([_opaque(hidden), *owner])
    else:
        # A directory's mtime changes with every entry made or removed in it, so it says
        # nothing new when changes below are listed anyway.
        parts = ["holds changes below", *owner] if has_changes_below else _metadata(lower_st, st)
        reason = _copied_up(parts) if parts else "copied up from the image, but nothing differs"
    return Change(path, "C", "dir", 0, opaque, reason, hidden)


def _opaque(hidden: tuple[str, ...]) -> str:
    """Overlay marks a directory opaque when it is made where the image's one was removed."""
    if not hidden:
        return "opaque: removed and made again; the image's dir was empty"
    n = len(hidden)
    return (
        f"opaque: removed and made again; hides the image's {n} {'entry' if n == 1 else 'entries'}"
    )


def _changed(
    upper_path: Path, st: os.stat_result, lower_path: Path, lower_st: os.stat_result
) -> str:
    """Why a non-directory the image has is in upper: what differs from the image's one."""
    if ftype_of(st.st_mode) != ftype_of(lower_st.st_mode):
        return _type_changed(lower_st, st)
    content = _content_change(upper_path, st, lower_path, lower_st)
    if content:
        # Writing always moves mtime: name only the metadata a write does not explain.
        return _copied_up([content, *_metadata(lower_st, st, with_mtime=False)])
    metadata = _metadata(lower_st, st)
    if metadata:
        return _copied_up([*metadata, "content unchanged"])
    return "copied up from the image, but nothing differs (opened for writing?)"


def _copied_up(parts: list[str]) -> str:
    return "copied up from the image: " + ", ".join(parts)


def _type_changed(lower_st: os.stat_result, st: os.stat_result) -> str:
    old, new = noun(ftype_of(lower_st.st_mode)), noun(ftype_of(st.st_mode))
    return f"type changed: the image's {old} is now a {new}"


def _content_change(a: Path, st: os.stat_result, b: Path, lower_st: os.stat_result) -> str | None:
    """What changed in the content of two entries of the same type, or None."""
    if stat.S_ISREG(st.st_mode):
        if lower_st.st_size != st.st_size:
            return f"content changed ({lower_st.st_size} → {st.st_size} bytes)"
        return None if _same_bytes(a, b) else "content changed (same size)"
    if stat.S_ISLNK(st.st_mode):
        old, new = os.readlink(b), os.readlink(a)
        return None if old == new else f"target changed: {old} → {new}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        old, new = _devno(lower_st), _devno(st)
        return None if old == new else f"device changed: {old} → {new}"
    return None  # a fifo or a socket has no content


def _same_bytes(a: Path, b: Path) -> bool:
    """Compare two files of equal size, a chunk at a time.  Shell: cmp -s A B"""
    with open(a, "rb") as fa, open(b, "rb") as fb:
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


def _describe(upper_path: Path, st: os.stat_result) -> str:
    """'file', 'symlink to hosts', 'char device 1:3', ..."""
    ftype = ftype_of(st.st_mode)
    if ftype == "symlink":
        return f"symlink to {os.readlink(upper_path)}"
    if ftype in ("chardev", "blockdev"):
        return f"{noun(ftype)} {_devno(st)}"
    return noun(ftype)


def _devno(st: os.stat_result) -> str:
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
