"""Level 06: level 05 with a memory limit, through a cgroup of its own, removed at the end.

The idea: a cgroup is a directory in the cgroup filesystem, and a limit is a number written
to one of its files; every process moved in (by writing its pid to cgroup.procs), and all
it forks, is then held to it: past the limit, the kernel reclaims memory, and then its OOM
killer kills a process of the cgroup with SIGKILL (exit code 137). See cgroups(7).
cgroup v2 (one tree; /sys/fs/cgroup/cgroup.controllers exists): /sys/fs/cgroup/NAME, file
memory.max. cgroup v1 (a tree per controller): /sys/fs/cgroup/memory/NAME, file
memory.limit_in_bytes. Tutorial: chapter 08. In minictr: minictr/run/cgroups/__init__.py
`for_container`, `move_shim_in` and `move_shim_out`; minictr/run/cgroups/v2.py
`V2Cgroup.settings` and minictr/run/cgroups/v1.py `V1Cgroup.settings`.

    sudo python3 levels/06_memory.py --memory 16m busybox sh -c 'cat /proc/self/cgroup'
    sudo python3 levels/06_memory.py --memory 16m busybox sh -c 'a=a; while :; do a=$a$a; done'
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
V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()  # else v1: one tree per controller
CGROUPS = Path("/sys/fs/cgroup") if V2 else Path("/sys/fs/cgroup/memory")
HINTS = {errno.EBUSY: "the new root is no mount point (mount --bind DIR DIR makes it one)",
         errno.EINVAL: "a shared mount (mount --make-rprivate /), or a new root no mount point?"}


def init(cgroup: Path, lowers: list[Path], tmp: Path, hostname: str, command: list[str],
         env: dict[str, str], do_escape: bool) -> NoReturn:
    """PID 1 of the new PID namespace: its namespaces, mounts, root, hostname; the command."""
    # PID 1 joins, first, and all it forks is born inside. Not this level's processes: they
    # are Python, ~10 MiB resident, which the OOM killer would weigh against the command.
    say("join the cgroup", f"echo 0 > {cgroup}/cgroup.procs")  # 0: the writer itself
    (cgroup / "cgroup.procs").write_text("0")
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


def size(text: str) -> int:
    """`64m` is 67108864: k, m and g are powers of 1024, as in `docker run --memory`."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(text[:-1]) * units[text[-1].lower()] if text[-1].lower() in units else int(text)


def limit_memory(cgroup: Path, limit: int) -> None:
    """The limit, and no swap beyond it (the swap files exist only with swap accounting).
    v2 hands the memory controller down only where the parent's cgroup.subtree_control names
    it. See: Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/memory.rst"""
    if V2 and "memory" not in (control := CGROUPS / "cgroup.subtree_control").read_text().split():
        say("hand the memory controller down", f"echo +memory > {control}")
        control.write_text("+memory")
    files = ({"memory.max": limit, "memory.swap.max": 0} if V2 else
             {"memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit})
    for name, value in files.items():
        if (cgroup / name).exists():
            say(f"set the limit: {name}", f"echo {value} > {cgroup}/{name}")
            (cgroup / name).write_text(str(value))
            say(f"read back: {(cgroup / name).read_text().strip()}", f"cat {cgroup}/{name}")


def memory_used(cgroup: Path, limit: int) -> str:
    """What the kernel counted, read before the cgroup goes: the peak and the OOM kills.
    Shell: cat memory.peak memory.events (v2); memory.max_usage_in_bytes memory.oom_control"""
    peak = cgroup / ("memory.peak" if V2 else "memory.max_usage_in_bytes")  # v2: Linux 5.19
    used = f"{int(peak.read_text()) / (1 << 20):.1f}" if peak.exists() else "?"
    events = (cgroup / ("memory.events" if V2 else "memory.oom_control")).read_text()
    kills = dict(line.split() for line in events.splitlines()).get("oom_kill", "?")
    return f"memory peak {used} MiB of {limit / (1 << 20):g} MiB, OOM kills: {kills}"


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--memory", type=size, default="64m", help="the limit (default 64m)")
    args = options.parse_args()
    layers, command, env = find_image(args.image, args.command)
    env["HOSTNAME"] = hostname = f"{args.image}-{os.urandom(3).hex()}"  # as minictr names one
    tmp = Path(tempfile.mkdtemp(prefix="minictr-level06-"))
    try:
        say("make upper, work and merged", f"mkdir {tmp}/upper {tmp}/work {tmp}/merged")
        for name in ("upper", "work", "merged"):
            (tmp / name).mkdir()
        cgroup = CGROUPS / f"minictr-level06-{os.getpid()}"
        say(f"make a cgroup (cgroup v{2 if V2 else 1})", f"mkdir {cgroup}")
        cgroup.mkdir()
        try:
            limit_memory(cgroup, args.memory)
            # unshare(CLONE_NEWPID) moves no one: this process's next child is PID 1 of the
            # new PID namespace (pid_namespaces(7)), hence `unshare --pid --fork`. The child
            # makes the other namespaces for itself: this one keeps the host's mount table.
            say("unshare a PID namespace for the child", "unshare --pid --fork")
            unshare(CLONE_NEWPID)
            pid = forked(init, cgroup, layers[::-1], tmp, hostname, command, env, args.escape)
            say(f"the child is PID 1 inside, {pid} outside", f"ls -l /proc/{pid}/ns")
            code = wait_for(pid)
            report(tmp / "upper", layers, f"{hostname} exited with code {code}")
            print(f"limits: {memory_used(cgroup, args.memory)}", file=sys.stderr)
            return code
        finally:
            # Empty by now: when PID 1 died, the kernel killed all of its PID namespace.
            say("remove the cgroup", f"rmdir {cgroup}")
            cgroup.rmdir()
    finally:
        # Nothing to unmount: the overlay and /proc were mounted in the child's mount
        # namespace, which died with its last process. upper goes with the rest, now read.
        shutil.rmtree(tmp)


if __name__ == "__main__":
    run_main(main)
