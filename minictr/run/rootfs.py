"""The container's view of the filesystem: private mounts, /proc, /dev, /sys, pivot_root.

Every function here runs in the container's init, inside its new mount namespace, in the
order container.init_container calls them (tutorial chapter 2). The masked and read-only paths
over /proc and /sys are minictr.run.security's.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from minictr import libc
from minictr.errors import StepError
from minictr.explain import note, step
from minictr.run.mounts import Mount, shell

# The devices a container needs and no more: (name, major, minor). See devices.txt in the
# kernel source; runc's default spec has the same list. They are the host's own nodes,
# bind-mounted, so that /dev itself can be nodev (see mount_dev): no mknod here.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))

# The symlinks every /dev has (name, target), as runc makes them: /dev/fd, /dev/std* (a shell's
# `echo >/dev/stderr`), and ptmx, which must be the container's own devpts's (see mount_dev).
LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))

# The flags of every kernel filesystem a container gets: no setuid binary, device node or
# program on them counts. See mount(2) MS_NOSUID, MS_NODEV, MS_NOEXEC.
SAFE = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


def make_mounts_private() -> None:
    """Stop mount events crossing between this namespace and the host's.

    A new mount namespace starts as a copy of the host's, and with systemd `/` is "shared":
    without this, the overlay mounted next would appear on the host too, and pivot_root(2)
    refuses to work with a shared mount (EINVAL).
    Shell: mount --make-rprivate /           See: mount_namespaces(7)
    """
    m = Mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE)
    with step("make every mount private", shell(m),
              why="first: a copy of the host's mounts may share its events, and every mount "
              "after this one must stay in this namespace"):
        libc.mount(*m)


def _make_mount_point(target: str) -> None:
    """The directory merged/NAME, made if the image lacks it (that mkdir lands in upper, and
    shows there).

    The image decides what is there. A symlink would be followed by mount(2), on the host's
    side of pivot_root (`proc -> /etc` would mount over the host's /etc, in this namespace),
    so it is refused, as runc refuses it; so is a file or anything else but a directory.
    Nothing of the container runs yet: nothing can swap it between this check and the mount.
    """
    name = os.path.basename(target)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        os.mkdir(target, mode=0o755)
        return
    if not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise StepError(f"mount /{name}", f"mount target /{name} in the image is {what}",
                        hint=f"the image must have /{name} as a directory, or none")


def mount_proc(merged: Path) -> None:
    """A procfs of the new PID namespace: `ps` inside sees only the container's processes.

    Mounted by the container's PID 1, so it belongs to the new PID namespace (proc(5)).
    Shell: mount -t proc -o nosuid,nodev,noexec proc merged/proc
    """
    m = Mount("proc", f"{merged}/proc", "proc", SAFE)
    with step("mount /proc for the new PID namespace", shell(m),
              why="by PID 1 of the new PID namespace, so that it shows that namespace's "
              "processes only; inside the overlay, so after it"):
        _make_mount_point(m.target)
        libc.mount(*m)


def mount_dev(merged: Path, *, tty_group: bool = True) -> None:
    """A small /dev on tmpfs with only safe devices, private ptys and shared memory.

    The host's /dev holds its disks; a container gets a fresh tmpfs with six character
    devices, its own devpts instance (ptys the host cannot see), and /dev/shm. The tmpfs is
    nodev: root in the container keeps CAP_MKNOD, and could make a node for the host's disk
    here, but not open it. So the six devices are not made with mknod, which a nodev mount
    would make useless too: the host's own nodes are bind-mounted onto empty files, as
    bubblewrap and rootless runc do (in a user namespace, mknod is not allowed at all).
    ``tty_group``: give the ptys to group 5 (tty), when the container has a group 5.
    Shell: each line --explain shows, from DEVICES and LINKS        See: mount(2), devpts.rst
    """
    dev = Path(f"{merged}/dev")
    tmpfs = Mount("tmpfs", str(dev), "tmpfs", SAFE, "mode=755,size=64k")
    binds = [Mount(f"/dev/{name}", str(dev / name), None, libc.MS_BIND) for name, _, _ in DEVICES]
    with step("mount a minimal /dev, nodev, with the host's safe devices bound into it",
              "\n".join([shell(tmpfs), *(f"touch {b.target} && {shell(b)}" for b in binds),
                         *(f"ln -s {target} {dev / link}" for link, target in LINKS)]),
              why="the host's /dev holds its disks: a fresh nodev tmpfs with six devices bound "
              "from the host (a node made by mknod could not be opened on it)"):
        _make_mount_point(tmpfs.target)
        libc.mount(*tmpfs)
        for b in binds:
            os.close(os.open(b.target, os.O_CREAT | os.O_WRONLY, 0o666))  # touch
            libc.mount(*b)
        for link, target in LINKS:
            os.symlink(target, dev / link)
    # mode=620: the owner (the pty's user) reads and writes, the tty group only writes (wall)
    # ptmxmode=0666: anyone opens pts/ptmx, which /dev/ptmx points to. See devpts.rst.
    pts = Mount("devpts", str(dev / "pts"), "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=620" + (",gid=5" if tty_group else ""))
    with step("mount a private devpts for the container's terminals",
              f"mkdir {pts.target}\n{shell(pts)}",
              why="its own instance: the ptys of the host (and of other containers) are not "
              "in it; after /dev, the tmpfs it is mounted in"):
        os.mkdir(pts.target)
        libc.mount(*pts)
    shm = Mount("shm", str(dev / "shm"), "tmpfs", SAFE, "mode=1777,size=65536k")
    with step("mount /dev/shm", f"mkdir {shm.target}\n{shell(shm)}",
              why="POSIX shared memory (shm_open(3)) needs a writable tmpfs: the container's "
              "own, limited to 64 MiB as Docker's, not the host's"):
        os.mkdir(shm.target)
        libc.mount(*shm)


def mount_sys(merged: Path, *, read_only: bool = True) -> None:
    """sysfs, read-only: the container can look at the kernel's devices but change nothing.
    (Read-write only with --privileged, as Docker has it.)

    Shell: mount -t sysfs -o ro,nosuid,nodev,noexec sysfs merged/sys
    """
    m = Mount("sysfs", f"{merged}/sys", "sysfs", SAFE | (libc.MS_RDONLY if read_only else 0))
    with step(f"mount /sys {'read-only' if read_only else 'read-write (--privileged)'}",
              shell(m), why="programs read devices and settings there; read-only, so that "
              "root in the container changes none of the host's"):
        _make_mount_point(m.target)
        libc.mount(*m)


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
              f"cd {merged} && pivot_root . . && umount -l . && cd /", hints,
              why="last of the mounts: after it the host's tree is out of reach, so every "
              "mount of the container was made before, under merged/"):
        os.chdir(merged)
        libc.pivot_root(".", ".")
        libc.umount2(".", libc.MNT_DETACH)
        os.chdir("/")
    note("from here on, / is the overlay: the host's files are out of reach")
