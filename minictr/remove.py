"""Removing a directory tree that a container could change, without ever reaching past it.

A container's directory holds mount points ($C/merged, and with --userns $C/lowers/N, where
the image's layers are bound). When something goes wrong those mounts can be visible on the
host: a mount namespace that was not cut off (a shared `/`, as systemd makes it), a runtime
killed halfway. `rm -rf` then walks through the mount point into the layer below and empties
the image of every container. And the tree itself is the container's: it can swap a
directory for a symlink to the host's /etc while the walk is under way.

So a removal here does what `umount -R` and `rm -rf --one-file-system` would, with no path
ever joined from names the container chose:
1. unmount, deepest first, every mount under the tree (lazily: a busy one goes when freed);
2. walk the tree by directory fd: each directory opened with openat(2) relative to its
   parent and O_NOFOLLOW|O_DIRECTORY, so a symlink is never followed (it is unlinked);
3. refuse, before deleting anything in it, a directory on another mount than the top: a
   mount that came back between 1 and 2 is left alone, with an error, not emptied.
The walk is iterative (a container can make a tree 100 000 deep) and keeps at most
MAX_OPEN_FDS directory fds open; an older one is reopened through ".." when the walk comes
back up, and checked to be the same directory (device and inode) it left.
See: openat(2), unlinkat(2), statx(2) (STATX_MNT_ID), umount2(2), proc_pid_mountinfo(5).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path

from minictr import libc
from minictr.errors import StepError

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN_FDS = 64
NOT_A_DIR = (errno.ENOTDIR, errno.ELOOP)  # what openat(O_DIRECTORY|O_NOFOLLOW) says of a file


def remove_tree(path: Path) -> None:
    """Unmount everything under ``path``, then delete it without crossing into any mount.

    A missing ``path`` is no error (it is what was wanted). Anything else is a StepError.
    Shell: see shell_line
    """
    # The parents are minictr's own (the store): resolved, so that mountinfo's paths match.
    path = Path(os.path.realpath(path.parent)) / path.name
    try:
        for point in mounts_under(path):
            libc.umount2(point, libc.MNT_DETACH)
        parent = os.open(path.parent, OPEN_DIR)
    except FileNotFoundError:
        return
    except OSError as e:
        raise StepError.from_os_error(f"remove {path}", e) from e
    try:
        remove_at(parent, path.name, path)
    except OSError as e:
        raise StepError.from_os_error(f"remove {path}", e,
                                      hint="nothing beyond it was touched; see what holds "
                                      "it (findmnt, lsof), then: minictr prune") from e
    finally:
        os.close(parent)


def shell_line(path: Path) -> str:
    """What remove_tree(path) does, as --explain shows it."""
    return (f"findmnt -rno TARGET | grep '^{path}' | sort -r | xargs -r umount -l\n"
            f"rm -rf --one-file-system {path}")


def mounts_under(path: Path) -> list[str]:
    """The mount points at or below ``path`` in this mount namespace, deepest first.

    mountinfo escapes space, tab, newline and backslash in a path as octal (\\040).
    Shell: findmnt --list --output TARGET | grep ^PATH   See: proc_pid_mountinfo(5)
    """
    top = str(path).rstrip("/")
    with open("/proc/self/mountinfo", "rb") as f:
        points = [_unescape(line.split()[4]) for line in f]
    inside = [p for p in points if p == top or p.startswith(top + "/")]
    return sorted(set(inside), key=lambda p: p.count("/"), reverse=True)


def _unescape(field_: bytes) -> str:
    out, i = bytearray(), 0
    while i < len(field_):
        if field_[i:i + 1] == b"\\" and field_[i + 1:i + 4].isdigit():
            out.append(int(field_[i + 1:i + 4], 8))
            i += 4
        else:
            out += field_[i:i + 1]
            i += 1
    return os.fsdecode(bytes(out))


class _Frame:
    """One directory of the walk: its fd (None while closed to save fds), its (device,
    inode) to recognise it when reopened, its name in its parent, and the names in it not
    yet removed. (A plain class: `run` removes a container, and dataclasses costs an import.)
    """

    __slots__ = ("fd", "ident", "name", "names")

    def __init__(self, fd: int, ident: tuple[int, int], name: str,
                 names: list[str] | None = None) -> None:
        self.fd: int | None = fd
        self.ident = ident
        self.name = name
        self.names = names or []


def remove_at(parent: int, name: str, shown: Path) -> None:
    """rm -rf --one-file-system NAME, relative to the directory fd ``parent`` (no unmounting:
    a mount inside is refused). ``shown`` names the tree in an error."""
    top_fd = _open_dir(parent, name)
    if top_fd is None:
        return
    stack = [_Frame(top_fd, _ident(top_fd), name, os.listdir(top_fd))]
    where = (os.fstat(top_fd).st_dev, libc.mount_id(top_fd))
    try:
        while stack:
            frame = stack[-1]
            assert frame.fd is not None  # the frame on top is always open
            if frame.names:
                child = frame.names.pop()
                fd = _open_dir(frame.fd, child)
                if fd is None:
                    continue  # it was not a directory: unlinked
                stack.append(_Frame(fd, _ident(fd), child))
                if (os.fstat(fd).st_dev, libc.mount_id(fd)) != where:
                    raise StepError(f"remove {shown}", f"a mount point inside it, at "
                                    f"{_shown_path(shown, stack)}: refused to cross it",
                                    errno=errno.EXDEV,
                                    hint="unmount it first (umount -l), then: minictr prune")
                stack[-1].names = os.listdir(fd)
                if len(stack) > MAX_OPEN_FDS:
                    old = stack[-MAX_OPEN_FDS - 1]
                    os.close(old.fd)  # type: ignore[arg-type]
                    old.fd = None
                continue
            stack.pop()
            above = stack[-1].fd if stack else parent
            if stack and above is None:
                above = stack[-1].fd = _reopen_parent(frame.fd, stack[-1], shown)
            os.close(frame.fd)
            frame.fd = None
            _ignore_gone(os.rmdir, frame.name, above)
    finally:
        for frame in stack:
            if frame.fd is not None:
                os.close(frame.fd)


def _open_dir(parent: int, name: str) -> int | None:
    """An fd on the directory ``name`` in ``parent``; a non-directory (a symlink too) is
    unlinked instead, and None returned. Opening with O_DIRECTORY never opens a fifo or a
    device: the kernel checks the type first."""
    try:
        return os.open(name, OPEN_DIR, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno not in NOT_A_DIR:
            raise
    _ignore_gone(os.unlink, name, parent)
    return None


def _reopen_parent(child_fd: int, frame: _Frame, shown: Path) -> int:
    """Reopen a directory whose fd was closed, through its child's "..", and check that it
    is the same one: a container that moved the tree meanwhile gets an error, not a walk
    somewhere else."""
    fd = os.open("..", OPEN_DIR, dir_fd=child_fd)
    if _ident(fd) != frame.ident:
        os.close(fd)
        raise StepError(f"remove {shown}", "a directory in it was moved while it was being "
                        "removed: stopped", hint="run the removal again: minictr prune")
    return fd


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _ignore_gone(remove: Callable[..., None], name: str, dir_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):  # removed meanwhile: what was wanted
        remove(name, dir_fd=dir_fd)


def _shown_path(top: Path, stack: list[_Frame]) -> str:
    """The path, quoted as repr() does: the names are the container's, and a control
    character in one must not reach the terminal."""
    return repr(str(top.joinpath(*(f.name for f in stack[1:]))))
