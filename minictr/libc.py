"""The only ctypes in minictr: the five system calls Python 3.10/3.11 do not wrap.

Python 3.12 has ``os.unshare`` and ``os.setns``, but minictr supports 3.10 and 3.11 too, and
has no wrapper for mount(2), umount2(2) or pivot_root(2) on any version. Each function here is
a thin call that raises ``OSError`` with the errno, exactly as ``os`` functions do, so callers
handle one kind of failure. The flag values come from <linux/sched.h> and <sys/mount.h>.
"""

from __future__ import annotations

import ctypes
import os

# By its soname: ctypes.util.find_library("c") would run `ldconfig -p` on every start.
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

# Namespace flags for unshare(2) and setns(2), from <linux/sched.h>.
CLONE_NEWNS = 0x00020000  # mount namespace         (unshare --mount)
CLONE_NEWCGROUP = 0x02000000  # cgroup namespace    (unshare --cgroup)
CLONE_NEWUTS = 0x04000000  # hostname, domain name  (unshare --uts)
CLONE_NEWIPC = 0x08000000  # System V IPC, mqueues  (unshare --ipc)
CLONE_NEWUSER = 0x10000000  # user and group ids    (unshare --user)
CLONE_NEWPID = 0x20000000  # process ids            (unshare --pid --fork)
CLONE_NEWNET = 0x40000000  # network stack          (unshare --net)

# Mount flags for mount(2), from <sys/mount.h>.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

# Flags for umount2(2).
MNT_DETACH = 2  # lazy: detach now, free when no longer busy (umount -l)


def _check(result: int, *paths: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *paths[:1])


def unshare(flags: int) -> None:
    """Move the caller into new namespaces. See unshare(2); shell: ``unshare``."""
    _check(_libc.unshare(ctypes.c_int(flags)))


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace ``fd`` (a /proc/PID/ns/* file) refers to. See setns(2); ``nsenter``."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)))


def mount(
    source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    """Attach a filesystem at ``target``. See mount(2).

    Shell: mount -t FSTYPE -o DATA SOURCE TARGET
    """
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        target,
    )


def umount2(target: str, flags: int = 0) -> None:
    """Detach the filesystem at ``target``. See umount2(2); shell: ``umount [-l] TARGET``."""
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), target)


def pivot_root(new_root: str, put_old: str) -> None:
    """Make ``new_root`` the root of this mount namespace. See pivot_root(2).

    glibc has no wrapper for it, so it is called through syscall(2) by number.
    """
    _check(
        _libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), new_root.encode(), put_old.encode()), new_root
    )


# pivot_root's system call number differs by architecture (see syscall(2)).
_SYS_PIVOT_ROOT = {
    "x86_64": 155,
    "aarch64": 41,
    "armv7l": 218,
    "riscv64": 41,
    "ppc64le": 203,
    "s390x": 217,
}.get(os.uname().machine, 155)
