"""Level 02: level 01 in new namespaces: its own hostname, PID 1, mount table and IPC.

The idea: unshare(2) gives a process its own copy of a global resource (namespaces(7)): the
hostname (UTS), process numbers (PID), the mount table (mount), System V IPC (IPC). The
/proc mounted in the new PID namespace lists only its processes, and it is mounted in the
new mount table: gone with it, never on the host. The root is still level 01's chroot, and
--escape still leads out. Tutorial: chapter 04.
In minictr: minictr/run/container.py `shim`, `init_container` and `set_hostname`;
minictr/run/namespaces.py `spawn` and `unshare_namespaces` (of `NAMESPACES`);
minictr/run/rootfs.py `make_mounts_private` and `mount_proc`.

Two processes: this one, which waits and cleans up, and its child, PID 1 inside. (minictr
has a third between them, the shim: chapter 04, section 5.)

    sudo python3 levels/02_namespaces.py busybox sh      (then: hostname; echo $$; ps)
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


def init(jail: Path, hostname: str, command: list[str], env: dict[str, str],
         do_escape: bool) -> NoReturn:
    """PID 1 of the new PID namespace: its namespaces, mounts, root, hostname; the command."""
    say("unshare mount, UTS, IPC namespaces", "unshare --mount --uts --ipc")
    unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC)
    # A new mount namespace starts as a copy of the host's, mounts *shared* where the host's
    # are (systemd mounts / shared): a mount made here would then show up on the host too.
    say("make every mount private", "mount --make-rprivate /")  # see mount_namespaces(7)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    (jail / "proc").mkdir(exist_ok=True)
    say("mount /proc of the new PID namespace", f"mount -t proc proc {jail}/proc")
    mount("proc", jail / "proc", "proc")  # made by PID 1 inside: shows its namespace, proc(5)
    say("change the root directory", f"chroot {jail}")
    os.chroot(jail)
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
    tmp = Path(tempfile.mkdtemp(prefix="minictr-level02-"))
    try:
        say("copy the image's bottom layer", f"cp -a {layers[0]} {tmp}/rootfs")
        shutil.copytree(layers[0], tmp / "rootfs", symlinks=True)
        # unshare(CLONE_NEWPID) moves no one: this process's next child is PID 1 of the new
        # PID namespace (pid_namespaces(7)), hence `unshare --pid --fork`. That child makes
        # the other namespaces for itself: this process keeps the host's mount table.
        say("unshare a PID namespace for the child", "unshare --pid --fork")
        unshare(CLONE_NEWPID)
        pid = forked(init, tmp / "rootfs", hostname, command, env, args.escape)
        say(f"the child is PID 1 inside, {pid} outside", f"ls -l /proc/{pid}/ns")
        return wait_for(pid)
    finally:
        # Nothing to unmount: /proc was mounted in the child's mount namespace, which died
        # with its last process.
        shutil.rmtree(tmp)


if __name__ == "__main__":
    run_main(main)
