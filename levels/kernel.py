"""The system calls Python 3.11 does not wrap: unshare(2), mount(2), umount2(2), pivot_root(2).

By ctypes, each a thin call that raises OSError with the errno, as os functions do, so a
level handles one kind of failure. minictr has the same in minictr/libc.py (Python 3.12 adds
os.unshare; no version has mount). The flag values are defined in the level that first uses
them, next to the idea; they come from <linux/sched.h> and <sys/mount.h>.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
# glibc has no pivot_root(); syscall(2) calls it by its number, which differs by architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)


def _check(call: str, result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """Put the caller in new namespaces (a new PID namespace: its next child). Shell: unshare"""
    _check("unshare", _libc.unshare(ctypes.c_int(flags)))


def mount(source: str, target: str | os.PathLike[str], fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    """Attach a filesystem at target.   Shell: mount -t FSTYPE -o DATA SOURCE TARGET"""
    _check("mount", _libc.mount(source.encode(), os.fsencode(target),
                                fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                                data.encode() if data else None))


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    """Detach the filesystem at target.   Shell: umount [-l] TARGET"""
    _check("umount2", _libc.umount2(os.fsencode(target), ctypes.c_int(flags)))


def pivot_root(new_root: str, put_old: str) -> None:
    """Make new_root the root mount of this mount namespace.   Shell: pivot_root NEW OLD"""
    _check("pivot_root", _libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), new_root.encode(),
                                       put_old.encode()))
