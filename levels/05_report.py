"""Level 05: level 04, then the change report: what the command wrote, read from upper.

The idea: everything a container changes is in its upper directory, in one of three forms,
and after the command exits this level reads them there, as `minictr run` reports them:
A, new: a path no layer has. C, changed: a path the image has, copied up whole before its
first write (a directory: copied up to hold a change below it). D, deleted: a whiteout, a
char device 0:0 that hides the image's entry. C O: an opaque directory (the xattr
trusted.overlay.opaque is "y"): removed and made again, so it hides all the image had there.
Tutorial: chapter 06 (and chapter 02, section 4).
In minictr: minictr/show/diff.py `scan`, `is_whiteout` and `is_opaque`, drawn by
minictr/show/report.py `render_tree`; the lines of `minictr diff`: `render_docker`. minictr
also mounts with redirect_dir=off and metacopy=off, minictr/run/overlay.py `OPTIONS`, so what
upper holds does not depend on how the kernel was built.

    sudo python3 levels/05_report.py busybox sh -c 'echo hi > /root/hi; rm /bin/ls'
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from common import PROG, escape, execute, fail, find_image, forked, parser, run_main, say, wait_for
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


def noun(mode: int) -> str:
    kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink"}
    return kinds.get(stat.S_IFMT(mode), "special file")


def opaque(directory: Path) -> bool:
    """Shell: getfattr -n trusted.overlay.opaque DIR     See: xattr(7), getxattr(2)"""
    try:
        return os.getxattr(directory, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:  # ENODATA: the directory has no such xattr
        return False


def explain(entry: Path, st: os.stat_result, in_image: bool) -> tuple[str, str]:
    """The mark and the reason for one entry of upper."""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # made as by `mknod NAME c 0 0`
        return "D", "whiteout (char 0:0): hides the image's entry"
    if stat.S_ISDIR(st.st_mode) and opaque(entry):
        return "C O", "opaque: removed and made again; hides all the image had in it"
    if not in_image:
        return "A", f"new {noun(st.st_mode)}"
    if stat.S_ISDIR(st.st_mode):
        return "C", "copied up from the image: holds changes below"
    return "C", "copied up from the image, then written to"


def report(upper: Path, layers: list[Path], title: str) -> None:
    """Every entry of upper, by path, marked and explained; on stderr, as minictr has it.

    The command has exited, so nothing changes upper while it is read: os.walk will do, as
    long as it never follows a symlink (minictr/fs/walk.py walks by fd instead, because
    `minictr diff` may read a running container's upper). The image has a path if a layer
    has it (minictr/show/diff.py `scan` also honours the layers' own whiteouts and opaque
    directories, and says what changed). Shell: find UPPER -printf '%y %p\\n'
    """
    print(f"{PROG}: {title}; what it changed, in its upper layer ({upper}):", file=sys.stderr)
    lines = []
    for top, dirs, files in os.walk(upper):  # followlinks=False: never into a symlink
        for name in dirs + files:
            entry = Path(top, name)
            inside = "/" + str(entry.relative_to(upper))
            in_image = any(os.path.lexists(f"{layer}{inside}") for layer in layers)
            lines.append((inside, *explain(entry, entry.lstat(), in_image)))
    width = max((len(inside) for inside, _, _ in lines), default=0)
    for inside, mark, why in sorted(lines):  # a name may hold anything but / and NUL: repr
        shown = inside if inside.isprintable() else repr(inside)
        print(f"{mark:<3}  {shown:<{width}}  {why}", file=sys.stderr)
    if not lines:
        print("no changes: the upper layer is empty", file=sys.stderr)


def main() -> int:
    args = parser(__doc__).parse_args()
    layers, command, env = find_image(args.image, args.command)
    env["HOSTNAME"] = hostname = f"{args.image}-{os.urandom(3).hex()}"  # as minictr names one
    tmp = Path(tempfile.mkdtemp(prefix="minictr-level05-"))
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
        code = wait_for(pid)
        report(tmp / "upper", layers, f"{hostname} exited with code {code}")
        return code
    finally:
        # Nothing to unmount: the overlay and /proc were mounted in the child's mount
        # namespace, which died with its last process. upper goes with the rest, now read.
        shutil.rmtree(tmp)


if __name__ == "__main__":
    run_main(main)
