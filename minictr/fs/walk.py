"""Walking a tree that a container can change: by directory fd, never by a joined path.

A container owns its upperdir, and it may run while minictr reads it: between two steps of a
walk it can swap a directory for a symlink to the host's /etc (``mv /d /d.old; ln -s /etc
/d``). A walk that joins paths (``upper + "/d/passwd"``) then reads the host. It can also
make a tree 100 000 deep, deeper than Python's recursion and than PATH_MAX. So every reader
of such a tree (diff and the change report, the layers view, commit and export, the sizes
``df`` shows) and its removal go through this one walker, which:

- opens each directory with openat(2) relative to its parent's fd, with O_NOFOLLOW and
  O_DIRECTORY: a symlink swapped in is never followed (the open fails, ELOOP or ENOTDIR);
- stats each entry relative to its directory's fd (fstatat(2), AT_SYMLINK_NOFOLLOW), reads
  a file only through an fd checked to be the same regular file, and an xattr through an
  O_PATH fd (never opening a device or a fifo the container made);
- never enters a directory on another mount than the top (EXDEV): a bind mount inside is
  not the container's;
- is iterative, and keeps at most MAX_OPEN_FDS fds open: an older directory is closed, and
  reopened through ".." on the way back up, checked to be the same (device, inode);
- walks several trees side by side if asked (*columns*: an upperdir, and the directory at
  the same path in each image layer), as overlay merges them.

Shell (what it reads): find TOP -xdev -printf '%y %m %s %p\\n'    (but find joins paths)
See: openat(2), fstatat(2), O_PATH in open(2), statx(2) STATX_MNT_ID, getxattr(2)
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from minictr import libc
from minictr.errors import StepError

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a fifo swapped in for a file must not block the open.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN_FDS = 64
NOT_A_DIR = (errno.ENOTDIR, errno.ELOOP)  # what openat(O_DIRECTORY|O_NOFOLLOW) says of a file
# What reading an entry says when a running container removed or replaced it since it was
# listed: the reader skips it (it is not there any more), and goes on.
CHANGED = frozenset({errno.ENOENT, errno.ESTALE, errno.ENOTDIR, errno.ELOOP})
# getxattr(2) errors that mean "no such xattr here": not there, not allowed (trusted.* needs
# CAP_SYS_ADMIN), or a filesystem without xattrs. ENOTSUP == EOPNOTSUPP on Linux.
NO_XATTR = frozenset({errno.ENODATA, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})

Ident = tuple[int, int]  # (st_dev, st_ino): a directory recognised when reopened


class Frame:
    """One directory of a walk: an fd per column (None: closed to save fds, or the column
    has no directory here), their (device, inode), its name in its parent, and what the
    walk has left to do in it. (A plain class: `run` walks its upper, and dataclasses costs
    an import.)"""

    __slots__ = ("data", "fds", "idents", "name", "path", "todo")

    def __init__(self, fds: list[int | None], idents: list[Ident | None], name: str,
                 path: str, todo: list[Any], data: Any = None) -> None:
        self.fds = fds
        self.idents = idents
        self.name = name
        self.path = path  # from the walk's top: "/usr/bin", "/" for the top
        self.todo = todo
        self.data = data  # the caller's, for this directory

    def fd(self, column: int = 0) -> int | None:
        return self.fds[column] if column < len(self.fds) else None


class DirStack:
    """The directories from a walk's top down to where it is, each open by fd.

    Column 0 is the tree walked; more columns are trees read beside it, and a column that a
    directory has, its parent has too. At most ``budget`` fds stay open: in each column
    only the deepest ``budget // columns`` directories are open, and a closed one is
    reopened through its child's "..". ``where`` names the tree in errors.
    """

    def __init__(self, tops: Sequence[int | None], where: str,
                 budget: int = MAX_OPEN_FDS) -> None:
        self.where = where
        self.keep = max(2, budget // max(1, len(tops)))
        self.frames: list[Frame] = []
        self.mounts = [None if fd is None else _mount(fd) for fd in tops]
        self.frames.append(Frame(list(tops), [None if fd is None else _ident(fd)
                                              for fd in tops], "", "/", []))

    def __enter__(self) -> DirStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def top(self) -> Frame:
        return self.frames[-1]


    def push(self, name: str, fds: Sequence[int | None],
             todo: list[Any] | None = None) -> Frame:
        """Make the directory ``name`` (opened in each column: ``fds``) the top; the stack
        owns the fds from here on. A column on another mount than the top's is refused."""
        fds = list(fds)
        path = f"{self.top.path.rstrip('/')}/{name}"
        frame = Frame(fds, [None if fd is None else _ident(fd) for fd in fds], name, path,
                      todo or [])
        self.frames.append(frame)
        for column, fd in enumerate(fds):
            if fd is not None and _mount(fd) != self.mounts[column]:
                raise StepError(self.where, f"a mount point inside it, at {path!r}: "
                                "refused to cross it", errno=errno.EXDEV,
                                hint="unmount it first (umount -l), then try again")
        if len(self.frames) > self.keep:
            old = self.frames[-self.keep - 1]
            for column, fd in enumerate(old.fds):
                if fd is not None and frame.fd(column) is not None:
                    os.close(fd)
                    old.fds[column] = None
        return frame

    def pop(self) -> Frame:
        """Close the top directory, and reopen what its parent had closed. Returns it."""
        frame = self.frames.pop()
        parent = self.frames[-1] if self.frames else None
        for column, fd in enumerate(frame.fds):
            if fd is None:
                continue
            if parent is not None and parent.fds[column] is None \
                    and parent.idents[column] is not None:
                parent.fds[column] = self._reopen_parent(fd, parent.idents[column])
            os.close(fd)
            frame.fds[column] = None
        return frame

    def close(self) -> None:
        while self.frames:
            frame = self.frames.pop()
            for fd in frame.fds:
                if fd is not None:
                    os.close(fd)

    def _reopen_parent(self, child_fd: int, ident: Ident | None) -> int:
        """A container that moved the tree meanwhile gets an error, not a walk elsewhere."""
        fd = os.open("..", OPEN_DIR, dir_fd=child_fd)
        if _ident(fd) != ident:
            os.close(fd)
            raise StepError(self.where, "a directory in it was moved while it was read: "
                            "stopped", errno=errno.ESTALE, hint="try again")
        return fd


class Entry(NamedTuple):
    """One entry met by walk(): its path from the top ("/etc/passwd"), name and lstat."""

    path: str
    name: str
    st: os.stat_result


class Walk:
    """The entries of a tree, depth first, each directory's in ``order`` (default: by name).

    A directory is entered only if the caller asks, right after it is given::

        with Walk(top_fd, "diff") as walk:
            for entry in walk:
                if stat.S_ISDIR(entry.st.st_mode) and (fd := walk.open_dir()) is not None:
                    walk.enter(fd)           # its entries come next

    ``walk.dir_fd(column)`` is the directory that holds the entry just given, and
    ``leave(path, fd)``, if given, is called for each directory entered, once all below it
    has been given, before it is closed.
    """

    def __init__(self, top_fd: int, where: str, *, columns: Sequence[int | None] = (),
                 order: Callable[[tuple[str, os.stat_result]], object] | None = None,
                 leave: Callable[[str, int], None] | None = None) -> None:
        """``top_fd`` (duplicated: the caller keeps its own) and, as more columns, the
        directories read beside it (the walk owns those)."""
        self.stack = DirStack([os.dup(top_fd), *columns], where)
        self.order = order
        self.leave = leave
        self.stack.top.todo = self._listing(self.stack.top.fds[0])  # type: ignore[arg-type]
        self._current: tuple[str, os.stat_result] | None = None

    def __enter__(self) -> Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def __iter__(self) -> Iterator[Entry]:
        stack = self.stack
        while stack:
            frame = stack.top
            if not frame.todo:
                if self.leave is not None and len(stack) > 1:
                    self.leave(frame.path, frame.fds[0])  # type: ignore[arg-type]
                stack.pop()
                continue
            self._current = frame.todo.pop()
            name, st = self._current
            yield Entry(f"{frame.path.rstrip('/')}/{name}", name, st)

    def dir_fd(self, column: int = 0) -> int | None:
        """The fd, in ``column``, of the directory holding the entry just given."""
        return self.stack.top.fd(column)

    def open_dir(self, column: int = 0) -> int | None:
        """An fd on the entry just given, in ``column``, if it is a directory there now."""
        parent = self.dir_fd(column)
        assert self._current is not None
        return None if parent is None else open_dir(parent, self._current[0])

    @property
    def data(self) -> Any:
        """What the caller gave enter() for the directory holding the entry just given."""
        return self.stack.top.data

    def enter(self, fd: int, columns: Sequence[int | None] = (), data: Any = None) -> int:
        """Walk into the directory just given (``fd``, from open_dir; the walk owns it),
        reading ``columns`` beside it (a column its parent lacks cannot be added), and keep
        ``data`` for it. Returns how many entries it has."""
        assert self._current is not None
        frame = self.stack.push(self._current[0], [fd, *columns])
        frame.todo, frame.data = self._listing(fd), data
        return len(frame.todo)

    def _listing(self, fd: int) -> list[tuple[str, os.stat_result]]:
        """Reversed, so that pop() gives them in order."""
        names = listing(fd)
        names.sort(key=self.order or (lambda e: os.fsencode(e[0])), reverse=True)
        return names


# --- one entry, relative to its directory's fd -----------------------------------------------


def listing(fd: int) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of the open directory. Shell: ls -A (with ls -l's stat)"""
    with os.scandir(fd) as entries:
        found = []
        for entry in entries:
            try:
                found.append((entry.name, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # removed since it was listed
        return found


def open_dir(parent: int, name: str) -> int | None:
    """An fd on the directory ``name`` in ``parent``, or None if it is not one (any more).
    O_DIRECTORY never opens a fifo or a device: the kernel checks the type first."""
    try:
        return os.open(name, OPEN_DIR, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in NOT_A_DIR:
            return None
        raise


def lstat(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def open_regular(parent: int, name: str, st: os.stat_result) -> int:
    """An fd to read the regular file ``name``, checked to be the one ``st`` describes: a
    fifo, a device or a symlink swapped in meanwhile is refused (ESTALE), not opened."""
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", name)
    fd = os.open(name, _OPEN_FILE, dir_fd=parent)
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise OSError(errno.ESTALE, "replaced while it was read", name)
    return fd


def readlink(parent: int, name: str) -> str:
    """The target of the symlink ``name``.  Shell: readlink NAME

    EINVAL means it is no symlink any more (readlinkat(2)): a running container replaced it
    since it was listed, so it reads as ESTALE, one of CHANGED, as open_regular's does."""
    try:
        return os.readlink(name, dir_fd=parent)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        raise OSError(errno.ESTALE, "no symlink any more: replaced while it was read",
                      name) from None


def xattr(parent: int, name: str, attr: str) -> bytes | None:
    """The xattr ``attr`` of ``name`` (not followed if a symlink), or None if it has none.

    getxattr(2) takes no directory fd, and fgetxattr(2) no O_PATH fd; /proc/self/fd/N of an
    O_PATH fd names the very inode, so nothing is opened for reading (no device, no fifo).
    Shell: getfattr -h -n ATTR NAME
    """
    try:
        fd = os.open(name, _OPEN_PATH, dir_fd=parent)
    except FileNotFoundError:
        return None
    try:
        return os.getxattr(f"/proc/self/fd/{fd}", attr)
    except OSError as e:
        if e.errno in NO_XATTR:
            return None
        raise
    finally:
        os.close(fd)


def fd_xattr(fd: int, attr: str) -> bytes | None:
    """The xattr ``attr`` of an open directory or file, or None."""
    try:
        return os.getxattr(fd, attr)
    except OSError as e:
        if e.errno in NO_XATTR:
            return None
        raise


def _ident(fd: int) -> Ident:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _mount(fd: int) -> tuple[int, int]:
    """(device, mount id): two bind mounts of one filesystem share the device."""
    return os.fstat(fd).st_dev, libc.mount_id(fd)
