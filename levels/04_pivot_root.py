"""Level 04: level 03 with pivot_root instead of chroot: the host's tree is gone.

The idea: pivot_root(2) makes the overlay the root mount of the container's mount namespace,
for every process in it, and the old root, the host's "/", is then unmounted there. chroot
only moved where one process starts resolving "/", with the host's tree still mounted all
around; now nothing of the host is mounted, so no ".." leads back: --escape finds that ".."
of "/" is "/". (In level 03, /proc/self/mountinfo showed only / and /proc already: the kernel
lists the mounts reachable from the root directory. The host's were hidden, not gone.)
Tutorial: chapter 05, section 3 ("pivot_root by hand").
In minictr: minictr/run/rootfs.py `pivot_into` (with minictr/libc.py `pivot_root`, `umount2`).

The errors everyone meets once (pivot_root(2), ERRORS): EBUSY, the new root is not a mount
point but a directory on the mount that is "/": bind it onto itself, `mount --bind DIR DIR`,
to make it one (chapter 05 does so for its jail; an overlay already is one). EINVAL: a mount
involved is shared (`mount --make-rprivate /` first, as level 02 does), or the new root is a
directory, not a mount point, on some other mount.

    sudo python3 levels/04_pivot_root.py busybox sh      (then: cat /proc/self/mountinfo)
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import NoReturn

from common import escape, execute, fail, find_image, forked, parser, run_main, say, wait_for
from kernel import mount, pivot_root, umount2, unshare

# <linux/sched.h>: one flag per namespace, as unshare(1) has --mount, --uts, --ipc, --pid
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID = 0x20000, 0x4000000, 0x8000000, 0x20000000
MS_REC, MS_PRIVATE = 0x4000, 0x40000  # <sys/mount.h>: mount --make-rprivate
MNT_DETACH = 2  # <sys/mount.h>: umount -l
HINTS = {errno.EBUSY: "the new root is no mount point (mount --bind DIR DIR makes it one)",
         errno.EINVAL: "a shared mount (mount --make-rprivate /), or a new root no mount point?"}


def init(lowers: list[Path], tmp: Path, hostname: str, command: list[str],
         env: dict[str, str], do_escape: bool) -> NoReturn:
    """PID 1 of the new PID namespace: its namespaces, mounts, root, hostname; the command."""
    say("unshare mount, UTS, IPC namespaces", "unshare --mount --uts --ipc")
    unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC)
    # A new mount namespace starts as a copy of the host's, mounts *shared* where the host's
    # are (systemd mounts / shared): a mount made here would then show up on the host too.
    say("make every mount private", "mount --make-rprivate /")  # see mount_namespaces(7)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    # lowerdir lists the top-most layer first. workdir: an empty directory on upper's
    # filesystem, where the kernel prepares each copy-up before it renames it into upper.
    merged = tmp / "merged"
    options = f"lowerdir={':'.join(map(str, lowers))},upperdir={tmp}/upper,workdir={tmp}/work"
    say("mount the overlay", f"mount -t overlay -o {options} overlay {merged}")
    mount("overlay", merged, "overlay", 0, options)  # Documentation/filesystems/overlayfs.rst
    (merged / "proc").mkdir(exist_ok=True)  # if the image has none: that mkdir lands in upper
    say("mount /proc of the new PID namespace", f"mount -t proc proc {merged}/proc")
    mount("proc", merged / "proc", "proc")  # made by PID 1 inside: shows its namespace, proc(5)
    pivot_into(merged)
    say("set the hostname in the new UTS namespace", f"hostname {hostname}")
    socket.sethostname(hostname)  # sethostname(2), uts_namespaces(7)
    if do_escape:
        escape()
    execute(command, env)


def pivot_into(new_root: Path) -> None:
    """Make new_root the root mount, then detach the old root: the host's tree is gone here.

    pivot_root(".", ".") stacks the old root on top of the new one, at "/"; umount2(".",
    MNT_DETACH) then removes exactly that one, lazily, as this process still runs from its
    files. So no directory for the old root is needed in the image (it would land in upper).
    Shell: cd NEW_ROOT && pivot_root . . && umount -l . && cd /   See: pivot_root(2), umount(2)
    """
    say("pivot_root into the overlay", f"cd {new_root} && pivot_root . .")
    os.chdir(new_root)
    try:
        pivot_root(".", ".")
    except OSError as e:  # the errors of the docstring at the top
        fail(f"{e}: {HINTS.get(e.errno or 0, 'see pivot_root(2)')}")
    say("detach the host's old root", "umount -l . && cd /")
    umount2(".", MNT_DETACH)
    os.chdir("/")


def main() -> int:
    args = parser(__doc__).parse_args()
    layers, command, env = find_image(args.image, args.command)
    env["HOSTNAME"] = hostname = f"{args.image}-{os.urandom(3).hex()}"  # as minictr names one
    tmp = Path(tempfile.mkdtemp(prefix="minictr-level04-"))
    try:
        say("make upper, work and merged", f"mkdir {tmp}/upper {tmp}/work {tmp}/merged")
        for name in ("upper", "work", "merged"):
            (tmp / name).mkdir()
        # unshare(CLONE_NEWPID) moves no one: this process's next child is PID 1 of the new
        # PID namespace (pid_namespaces(7)), hence `unshare --pid --fork`. That child makes
        # the other namespaces for itself: this process keeps the host's mount table.
        say("unshare a PID namespace for the child", "unshare --pid --fork")
        unshare(CLONE_NEWPID)
        pid = forked(init, layers[::-1], tmp, hostname, command, env, args.escape)
        say(f"the child is PID 1 inside, {pid} outside", f"ls -l /proc/{pid}/ns")
        return wait_for(pid)
    finally:
        # Nothing to unmount: the overlay and /proc were mounted in the child's mount
        # namespace, which died with its last process. upper goes with the rest.
        shutil.rmtree(tmp)


if __name__ == "__main__":
    run_main(main)
