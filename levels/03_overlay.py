"""Level 03: level 02 on an overlay: the image's layers below, a fresh upper above.

The idea: no copy. An overlay mount shows the image's layer directories (lowerdir: read,
never written) and one empty writable directory (upperdir) as one tree, at merged. The first
write to an image file copies it up into upper; a deletion leaves a whiteout there. So a
start costs nothing however big the image is, and the stored layers stay as they were, for
every container that shares them. The root is still a chroot, and --escape still leads out.
Tutorial: chapter 01 (this mount, by hand) and chapter 03 (why copy-on-write).
In minictr: minictr/run/overlay.py `mount_overlay` and `mount_options`; upper, work and
merged come from minictr/store.py `Store.new_container` (in the store, where `minictr diff`
finds them later; here in a temporary directory, removed at the end).

    sudo python3 levels/03_overlay.py busybox sh      (write a file; look in upper outside)
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import NoReturn

from common import escape, execute, find_image, forked, parser, run_main, say, wait_for
from kernel import mount, unshare

# <linux/sched.h>: one flag per namespace, as unshare(1) has --mount, --uts, --ipc, --pid
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID = 0x20000, 0x4000000, 0x8000000, 0x20000000
MS_REC, MS_PRIVATE = 0x4000, 0x40000  # <sys/mount.h>: mount --make-rprivate


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
    say("change the root directory", f"chroot {merged}")
    os.chroot(merged)
    os.chdir("/")  # else the current directory stays outside the root: see escape()
    say("set the hostname in the new UTS namespace", f"hostname {hostname}")
    socket.sethostname(hostname)  # sethostname(2), uts_namespaces(7)
    if do_escape:
        escape()
    execute(command, env)


def main() -> int:
    args = parser(__doc__).parse_args()
    layers, command, env = find_image(args.image, args.command)
    env["HOSTNAME"] = hostname = f"{args.image}-{os.urandom(3).hex()}"  # as minictr names one
    tmp = Path(tempfile.mkdtemp(prefix="minictr-level03-"))
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
