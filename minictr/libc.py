"""The only ctypes in minictr: the system calls Python 3.10/3.11 do not wrap.

Python 3.12 has ``os.unshare`` and ``os.setns``, but minictr supports 3.10 and 3.11 too, and
has no wrapper for mount(2), umount2(2) or pivot_root(2) on any version, nor for the new mount
API that --userns uses: open_tree(2), move_mount(2), mount_setattr(2). Each function here is
a thin call that raises ``OSError`` with the errno, exactly as ``os`` functions do, so callers
handle one kind of failure. The flag values come from <linux/sched.h>, <sys/mount.h> and
<linux/mount.h>.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
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

# The new mount API, from <linux/mount.h> and <fcntl.h>: a mount can be a file descriptor,
# detached from any directory, changed (idmapped) there, then attached where it is wanted.
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000  # the path is "": the call acts on the fd itself
OPEN_TREE_CLONE = 1  # open_tree: a new, detached copy of the mount (as mount --bind makes)
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04  # move_mount: the mount to move is the fd itself
MOVE_MOUNT_T_EMPTY_PATH = 0x40  # ... and the place to put it is the fd (or cwd) itself
MOUNT_ATTR_RDONLY = 0x00000001  # mount_setattr: read-only (as mount -o ro)
MOUNT_ATTR_IDMAP = 0x00100000  # mount_setattr: show the files' owners through a user ns
AT_RECURSIVE = 0x8000  # mount_setattr: this mount and every mount below it
AT_SYMLINK_NOFOLLOW = 0x100  # statx: do not follow a symbolic link
STATX_MNT_ID = 0x1000  # statx: fill in stx_mnt_id


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


def open_tree(path: str) -> int:
    """A detached copy of the mount at ``path`` (not yet anywhere), as a close-on-exec fd.

    See open_tree(2) (Linux 5.2). Shell: none alone; ``mount --bind`` is open_tree+move_mount.
    """
    fd = _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), path.encode(),
                       ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC))
    if fd < 0:
        _check(fd, path)
    return int(fd)


class _MountAttr(ctypes.Structure):  # struct mount_attr, MOUNT_ATTR_SIZE_VER0 (32 bytes)
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(mount_fd: int, attr_set: int, userns_fd: int = 0, propagation: int = 0) -> None:
    """Change the mount ``mount_fd`` and every mount below it (AT_RECURSIVE): set the
    MOUNT_ATTR_* flags ``attr_set`` (MOUNT_ATTR_IDMAP needs ``userns_fd``: the files' owners are
    then shown mapped through that user namespace), and the propagation (MS_PRIVATE...).
    See mount_setattr(2) (Linux 5.12).
    Shell: mount --bind -o X-mount.idmap=/proc/PID/ns/user,ro SOURCE TARGET (util-linux 2.39),
           mount --make-rprivate TARGET
    """
    attr = _MountAttr(attr_set, 0, propagation, userns_fd)
    _check(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(mount_fd), b"",
                         ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr))))


class _Statx(ctypes.Structure):  # struct statx (<linux/stat.h>): 256 bytes; the fields we read
    _fields_ = [("stx_mask", ctypes.c_uint32), ("_head", ctypes.c_uint8 * 132),
                ("stx_dev_major", ctypes.c_uint32), ("stx_dev_minor", ctypes.c_uint32),
                ("stx_mnt_id", ctypes.c_uint64), ("_tail", ctypes.c_uint8 * 104)]


def mount_id(fd: int) -> int:
    """The id of the mount the open file ``fd`` is on (the first field of
    /proc/self/mountinfo). Two bind mounts of one filesystem share st_dev; only this tells
    them apart. See statx(2), STATX_MNT_ID (Linux 5.8). Shell: findmnt -no ID --target PATH"""
    buf = _Statx()
    _check(_libc.statx(ctypes.c_int(fd), b"", ctypes.c_int(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW),
                       ctypes.c_uint(STATX_MNT_ID), ctypes.byref(buf)))
    if not buf.stx_mask & STATX_MNT_ID:
        raise OSError(errno.ENOSYS, "statx gave no mount id: Linux 5.8 or later needed")
    return int(buf.stx_mnt_id)


CLOSE_RANGE_CLOEXEC = 1 << 2  # close_range: mark close-on-exec instead of closing (5.11)


def close_range_cloexec(first: int) -> None:
    """Mark every fd from ``first`` up close-on-exec: the exec that follows closes them all,
    and until then they still work (the start-up socket reports an exec that fails).
    See close_range(2) (Linux 5.11); on an older kernel each fd of /proc/self/fd instead.
    Shell: none; runc does the same before it execs the container's process."""
    if _libc.syscall(ctypes.c_long(_SYS_CLOSE_RANGE), ctypes.c_uint(first),
                     ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(CLOSE_RANGE_CLOEXEC)) == 0:
        return
    for name in os.listdir("/proc/self/fd"):  # ENOSYS or EINVAL: the kernel is older
        fd = int(name)
        if fd >= first:
            with contextlib.suppress(OSError):  # the listing's own fd, closed by now
                os.set_inheritable(fd, False)  # fcntl(F_SETFD, FD_CLOEXEC)


def move_mount(mount_fd: int, target: str) -> None:
    """Attach the detached mount ``mount_fd`` at ``target``; "" means the current directory
    (which needs no search permission on its parents). See move_mount(2) (Linux 5.2)."""
    flags = MOVE_MOUNT_F_EMPTY_PATH | (MOVE_MOUNT_T_EMPTY_PATH if target == "" else 0)
    _check(_libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(mount_fd), b"",
                         ctypes.c_int(AT_FDCWD), target.encode(), ctypes.c_uint(flags)),
           target or ".")


# From Linux 5.1 on, new system calls have one number on every architecture.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_SYS_CLOSE_RANGE = 436

# pivot_root's system call number differs by architecture (see syscall(2)).
_SYS_PIVOT_ROOT = {
    "x86_64": 155,
    "aarch64": 41,
    "armv7l": 218,
    "riscv64": 41,
    "ppc64le": 203,
    "s390x": 217,
}.get(os.uname().machine, 155)
