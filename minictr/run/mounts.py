"""One mount(2) call, and the one shell line that does the same: so --explain cannot drift.

A step that mounts builds the call's arguments once, as a ``Mount``, shows ``shell(m)`` and
makes the call with the very same tuple, ``libc.mount(*m)``:

    m = Mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777")
    with step("mount /dev/shm", shell(m)):        # mount -t tmpfs -o nosuid,nodev,noexec,...
        libc.mount(*m)

A module of its own, and pure (no kernel call): rootfs, security, overlay and network all
mount, and none of them should import another one for a formatter; and the rendering is
tested without root (tests/test_mounts.py).

The forms are mount(8)'s, one for each kind of mount(2) call (mount(2), "DESCRIPTION"):
    a new mount              mount -t FSTYPE -o FLAGS,DATA SOURCE TARGET
    a bind mount             mount --bind SOURCE TARGET      (MS_REC: --rbind)
    a remount                mount -o remount[,bind],FLAGS TARGET
    a propagation change     mount --make-private TARGET     (MS_REC: --make-rprivate)
    a move                   mount --move SOURCE TARGET
A flag this table does not name is an error, never left out of the line.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from minictr import libc

# The per-mount and superblock flags of mount(2), <sys/mount.h>, with mount(8)'s option names
# (in mount(8)'s order: ro first). libc defines those minictr passes; the others are here so
# that a line can name any flag it is given.
FLAG_NAMES = (
    (libc.MS_RDONLY, "ro"),
    (libc.MS_NOSUID, "nosuid"),
    (libc.MS_NODEV, "nodev"),
    (libc.MS_NOEXEC, "noexec"),
    (16, "sync"),  # MS_SYNCHRONOUS
    (64, "mand"),  # MS_MANDLOCK
    (128, "dirsync"),  # MS_DIRSYNC
    (256, "nosymfollow"),  # MS_NOSYMFOLLOW (Linux 5.10)
    (1024, "noatime"),  # MS_NOATIME
    (2048, "nodiratime"),  # MS_NODIRATIME
    (1 << 21, "relatime"),  # MS_RELATIME (the default since Linux 2.6.30)
    (1 << 24, "strictatime"),  # MS_STRICTATIME
    (1 << 25, "lazytime"),  # MS_LAZYTIME
)
MS_SILENT = 32768  # "do not log": nothing to show
MS_MOVE = 8192
MS_UNBINDABLE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 19, 1 << 20
PROPAGATION = ((MS_UNBINDABLE, "unbindable"), (libc.MS_PRIVATE, "private"),
               (MS_SLAVE, "slave"), (MS_SHARED, "shared"))


class Mount(NamedTuple):
    """The arguments of one mount(2) call, in its order: ``libc.mount(*m)`` makes it."""

    source: str
    target: str
    fstype: str | None = None
    flags: int = 0
    data: str | None = None


def quoted(path: str) -> str:
    """A path as a shell word: each character a shell would take apart (a space, a quote, a
    `$`) after a backslash, so that `-v '/srv/my data:/data'` shows as /srv/my\\ data and
    still reads as one word. Plain paths, all of minictr's own, are unchanged."""
    return _UNSAFE.sub(lambda m: "\\" + m[0], path)


_UNSAFE = re.compile(r"[^\w@%+=:,./-]", re.ASCII)


def shell(m: Mount) -> str:
    """The mount(8) line that makes the same call as ``libc.mount(*m)``."""
    m = m._replace(source=quoted(m.source), target=quoted(m.target))
    flags = m.flags & ~MS_SILENT
    propagation = [name for bit, name in PROPAGATION if flags & bit]
    if propagation:  # mount(2): only MS_REC may come with a propagation type
        if len(propagation) > 1 or flags & ~(libc.MS_REC | _bits(PROPAGATION)):
            raise ValueError(f"a propagation change takes one type and MS_REC: {m.flags:#x}")
        r = "r" if flags & libc.MS_REC else ""
        return f"mount --make-{r}{propagation[0]} {m.target}"
    if flags & MS_MOVE:
        _only(m, MS_MOVE)
        return f"mount --move {m.source} {m.target}"
    if flags & libc.MS_REMOUNT:  # source and fstype are ignored; the flags are set as given
        kind = ["remount"] + (["bind"] if flags & libc.MS_BIND else [])
        rest = flags & ~(libc.MS_REMOUNT | libc.MS_BIND)
        return f"mount -o {','.join(kind + _names(rest, m) + _data(m))} {m.target}"
    if flags & libc.MS_BIND:
        # A new bind mount takes the flags of the mount it copies: mount(2) ignores every
        # other flag, and the data (a read-only bind is a bind, then a remount).
        _only(m, libc.MS_BIND | libc.MS_REC)
        if m.data:
            raise ValueError(f"a bind mount ignores its data: {m.data!r}")
        return f"mount --{'r' if flags & libc.MS_REC else ''}bind {m.source} {m.target}"
    if not m.fstype:
        raise ValueError(f"a new mount needs a filesystem type: {m}")
    options = ",".join(_names(flags, m) + _data(m))
    return f"mount -t {m.fstype}{f' -o {options}' if options else ''} {m.source} {m.target}"


def _bits(table: tuple[tuple[int, str], ...]) -> int:
    total = 0
    for bit, _ in table:
        total |= bit
    return total


def _names(flags: int, m: Mount) -> list[str]:
    """The option names of ``flags``, in mount(8)'s order; an unnamed flag is an error."""
    if unknown := flags & ~_bits(FLAG_NAMES):
        raise ValueError(f"no mount(8) option for flag {unknown:#x} of {m}")
    return [name for bit, name in FLAG_NAMES if flags & bit]


def _data(m: Mount) -> list[str]:
    return [m.data] if m.data else []


def _only(m: Mount, allowed: int) -> None:
    if extra := m.flags & ~(allowed | MS_SILENT):
        raise ValueError(f"mount(2) ignores flag {extra:#x} here: {m}")
