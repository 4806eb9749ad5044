"""The container's view of the filesystem: private mounts, /proc, /dev, /sys, pivot_root.

Every function here runs in the container's init, inside its new mount namespace, in the
order container.init_container calls them (tutorial chapter 5).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from minictr import libc
from minictr.explain import note, step

# The devices a container needs and no more: (name, major, minor). See devices.txt in the
# kernel source; runc's default spec has the same list.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))


def make_mounts_private() -> None:
    """Stop mount events crossing between this namespace and the host's.

    A new mount namespace starts as a copy of the host's, and with systemd `/` is "shared":
    without this, the overlay mounted next would appear on the host too, and pivot_root(2)
    refuses to work with a shared mount (EINVAL).
    Shell: mount --make-rprivate /           See: mount_namespaces(7)
    """
    with step("make every mount private", "mount --make-rprivate /"):
        libc.mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE)


def _mount_point(merged: Path, name: str) -> str:
    """merged/NAME, made if the image lacks it (that mkdir lands in upper, and shows there)."""
    target = merged / name
    if not target.is_dir():
        target.mkdir(mode=0o755)
    return str(target)


def mount_proc(merged: Path) -> None:
    """A procfs of the new PID namespace: `ps` inside sees only the container's processes.

    Mounted by the container's PID 1, so it belongs to the new PID namespace (proc(5)).
    Shell: mount -t proc -o nosuid,nodev,noexec proc merged/proc
    """
    with step("mount /proc for the new PID namespace",
              f"mount -t proc -o nosuid,nodev,noexec proc {merged}/proc"):
        flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
        libc.mount("proc", _mount_point(merged, "proc"), "proc", flags)


def mount_dev(merged: Path) -> None:
    """A small /dev on tmpfs with only safe devices, private ptys and shared memory.

    The host's /dev holds its disks; a container gets a fresh tmpfs with six character
    devices, its own devpts instance (ptys the host cannot see), and /dev/shm.
    """
    dev = Path(_mount_point(merged, "dev"))
    with step("mount a minimal /dev",
              f"mount -t tmpfs -o nosuid,noexec,mode=755,size=64k tmpfs {dev}\n"
              f"cd {dev} && " + "; ".join(f"mknod -m 666 {n} c {a} {b}" for n, a, b in DEVICES)
              + "; ln -s /proc/self/fd fd; ln -s pts/ptmx ptmx"):
        libc.mount("tmpfs", str(dev), "tmpfs", libc.MS_NOSUID | libc.MS_NOEXEC,
                   "mode=755,size=64k")
        for name, major, minor in DEVICES:
            os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))  # S_IFCHR
            os.chmod(dev / name, 0o666)  # mknod(2) applies the umask
        for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                             ("ptmx", "pts/ptmx")):
            os.symlink(target, dev / link)
    with step("mount a private devpts for the container's terminals",
              f"mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts {dev}/pts"):
        (dev / "pts").mkdir()
        libc.mount("devpts", str(dev / "pts"), "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=620,gid=5")
    with step("mount /dev/shm", f"mount -t tmpfs -o nosuid,nodev,mode=1777 shm {dev}/shm"):
        (dev / "shm").mkdir()
        libc.mount("shm", str(dev / "shm"), "tmpfs",
                   libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC, "mode=1777,size=65536k")


def mount_sys(merged: Path) -> None:
    """sysfs, read-only: the container can look at the kernel's devices but change nothing.

    Shell: mount -t sysfs -o ro,nosuid,nodev,noexec sysfs merged/sys
    """
    with step("mount /sys read-only",
              f"mount -t sysfs -o ro,nosuid,nodev,noexec sysfs {merged}/sys"):
        flags = libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
        libc.mount("sysfs", _mount_point(merged, "sys"), "sysfs", flags)


def pivot_into(merged: Path) -> None:
    """Make ``merged`` the root, then detach the host's old root so nothing can reach it.

    pivot_root(".", ".") stacks the old root on top of the new one at "/"; the lazy unmount
    of "." then removes exactly that old root. So no directory for the old root is needed in
    the image (which would have to be written to upper). Unlike chroot(2), which only changes
    one process's idea of "/", the host's tree is then gone from this mount namespace.
    Shell: cd merged && pivot_root . . && umount -l .      See: pivot_root(2), umount(2)
    """
    hints = {errno.EINVAL: "is / still shared? (mount --make-rprivate /)",
             errno.EBUSY: "is merged a mount point? (the overlay must be mounted on it)"}
    with step("pivot_root into the overlay and detach the host's root",
              f"cd {merged} && pivot_root . . && umount -l . && cd /", hints):
        os.chdir(merged)
        libc.pivot_root(".", ".")
        libc.umount2(".", libc.MNT_DETACH)
        os.chdir("/")
    note("from here on, / is the overlay: the host's files are out of reach")
