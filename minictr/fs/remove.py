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
The walk is minictr.fs.walk's DirStack: iterative (a container can make a tree 100 000 deep),
with at most MAX_OPEN_FDS directory fds open; an older one is reopened through ".." when the
walk comes back up, and checked to be the same directory (device and inode) it left.
See: openat(2), unlinkat(2), statx(2) (STATX_MNT_ID), umount2(2), proc_pid_mountinfo(5).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from minictr import libc
from minictr.errors import StepError
from minictr.fs.walk import OPEN_DIR, DirStack, open_dir


def remove_tree(path: Path, last: str | None = None) -> None:
    """Unmount everything under ``path``, then delete it without crossing into any mount.
    The entry ``last`` of ``path`` (a lock file) is removed after all the others.

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
        remove_at(parent, path.name, path, last)
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


def remove_at(parent: int, name: str, shown: Path, last: str | None = None) -> None:
    """rm -rf --one-file-system NAME, relative to the directory fd ``parent`` (no unmounting:
    a mount inside is refused). ``shown`` names the tree in an error.

    The walk is minictr.fs.walk's DirStack, depth first, each directory removed last."""
    top_fd = _open_dir(parent, name)
    if top_fd is None:
        return
    with DirStack([top_fd], f"remove {shown}") as stack:
        # todo is taken from its end: ``last`` first in the list is removed last
        stack.top.name = name
        stack.top.todo = sorted(os.listdir(top_fd), key=lambda entry: entry != last)
        while stack:
            frame = stack.top
            fd = frame.fd()
            assert fd is not None  # the frame on top is always open
            if frame.todo:
                name = frame.todo.pop()
                child = _open_dir(fd, name)
                if child is not None:  # else it was not a directory: unlinked
                    stack.push(name, [child]).todo = os.listdir(child)
                continue
            done = stack.pop()
            above = stack.top.fd() if stack else parent
            assert above is not None
            _ignore_gone(os.rmdir, done.name, above)


def _open_dir(parent: int, name: str) -> int | None:
    """An fd on the directory ``name`` in ``parent``; a non-directory (a symlink too) is
    unlinked instead, and None returned."""
    fd = open_dir(parent, name)
    if fd is None:
        _ignore_gone(os.unlink, name, parent)
    return fd


def _ignore_gone(remove: Callable[..., None], name: str, dir_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):  # removed meanwhile: what was wanted
        remove(name, dir_fd=dir_fd)
