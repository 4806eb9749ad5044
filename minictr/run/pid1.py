"""--init: a tiny init (tini) as the container's PID 1, with the command as its child.

The PID 1 problem. The first process of a PID namespace is its init, and the kernel protects
an init: a signal sent to it, from inside the namespace or from the host, is dropped unless
the process has installed a handler for it (only SIGKILL and SIGSTOP from the host get
through). See pid_namespaces(7), "The namespace init process". A shell, a web server or
`sleep` run as PID 1 has no SIGTERM handler, so `minictr run busybox timeout 2 sh -c 'while :;
do :; done'` never ends: busybox's `timeout` execs the command in its own process, which is
PID 1, and the SIGTERM it sends after 2 seconds is dropped. `docker stop` waits 10 s, then
SIGKILLs, for the same reason.

Second, an init adopts every orphan of its namespace: a process whose parent died gets PID 1
as its parent, and only PID 1 can wait(2) for it. A command that never waits for children it
did not make leaves them as zombies (state Z in /proc/PID/stat), and a zombie holds its pid.

tini (Debian's and Ubuntu's `tini` package; Docker's `docker-init` is the same program) is an
init for one command: it starts the command as its child (PID 2), passes every signal it gets
on to it, reaps every orphan, and exits with the command's code (128+N if a signal N killed
it). With it the command is an ordinary process, and SIGTERM takes its default action again.

Where it goes: /dev/init, bound read-only from the host's static binary (the container may
have no libc) onto an empty file of minictr's own /dev tmpfs. That tmpfs is not the overlay,
so the mount point never lands in the upper: not in the change report, not in a commit. (Docker
binds /sbin/docker-init into the root, which needs a mount point there.) /dev is noexec, but
the bind is a mount of its own, with the flags of the host's /usr: it runs.
Shell: touch merged/dev/init && mount --bind /usr/bin/tini-static merged/dev/init &&
       mount -o remount,bind,ro merged/dev/init; then exec /dev/init -- COMMAND
"""

from __future__ import annotations

import os
from pathlib import Path

from minictr import libc
from minictr.errors import StepError
from minictr.explain import step
from minictr.run.mounts import Mount, shell

TINI = "/usr/bin/tini-static"  # dpkg -L tini: /usr/bin/tini (dynamic) and this one, static
INIT_PATH = "/dev/init"  # in the container
_KEPT = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


def check_installed() -> None:
    """On the host, before anything is made: --init without tini is one line, exit 125."""
    if not os.path.isfile(TINI):
        raise StepError("check input", f"--init needs {TINI}, which is not installed",
                        hint="install the package tini: sudo apt-get install tini")


def command(cmd: tuple[str, ...]) -> tuple[str, ...]:
    """What PID 1 execs: tini, then `--` (so a command that starts with `-` is not tini's
    option), then the command. Shell: exec /dev/init -- COMMAND"""
    return (INIT_PATH, "--", *cmd)


def bind_init(merged: Path) -> None:
    """Bind the host's static tini onto merged/dev/init, read-only (a bind, then a remount).
    After mount_dev, whose tmpfs holds the mount point; before pivot_root, while the host's
    /usr/bin can be reached. Shell: as the module says"""
    target = f"{merged}{INIT_PATH}"
    bind = Mount(TINI, target, None, libc.MS_BIND)
    kept = os.statvfs(TINI).f_flag & _KEPT
    ro = Mount(target, target, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | kept)
    with step("bind tini read-only onto /dev/init (--init)",
              f"touch {target} && {shell(bind)} && {shell(ro)}",
              why="onto minictr's own /dev tmpfs, so that nothing lands in the upper; "
              "read-only: the container may not change the program that is its PID 1"):
        # O_EXCL|O_NOFOLLOW: /dev is the tmpfs made a moment ago; nothing else is there
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o755))
        libc.mount(*bind)
        libc.mount(*ro)
