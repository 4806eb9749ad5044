"""Pausing a running container while `commit` reads its upper, as `docker commit` does.

A container that writes while its upper directory is read can end up in the layer half-way:
a file cut short, a directory whose entries come from two moments. Frozen, none of its
processes runs until it is thawed, so the layer is one moment of it. The freezer is part of
the cgroup: v2 writes "1" to cgroup.freeze, v1 "FROZEN" to freezer.state (see v1 and v2).
Shell: docker pause = echo 1 > /sys/fs/cgroup/minictr/ID/cgroup.freeze; unpause = echo 0

A `commit` SIGKILLed while the container is frozen cannot thaw it. So it holds
OWNERS/<id>.paused (flock) while the container is frozen; `prune` thaws a frozen container
whose pause lock nobody holds. Two commits of one container take turns on that lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from minictr.errors import StepError
from minictr.explain import step
from minictr.run.cgroups import OWNERS, ROOT, backend


@contextlib.contextmanager
def paused(cid: str, root: Path = ROOT) -> Iterator[None]:
    """The container frozen for the time of the block, thawed after, whatever happens.
    Shell: echo 1 > cgroup.freeze ... echo 0 > cgroup.freeze (v1: FROZEN, THAWED)"""
    cg = backend(cid, root)
    lock = _take(OWNERS / f"{cid}.paused")
    try:
        with step("pause the container: freeze its cgroup (docker commit does)",
                  cg.shell_freeze(),
                  why="nothing in its upper may change while the layer is read: a file "
                  "half-written, or swapped for a symlink, would be committed so"):
            try:
                frozen = cg.freeze()
            except FileNotFoundError:  # it has exited meanwhile: nothing writes any more
                yield
                return
            except OSError as e:
                raise StepError.from_os_error("pause the container", e,
                                              hint="commit with --pause=false") from e
            if not frozen:
                raise StepError("pause the container", "its processes did not all stop "
                                "within 10 s; it was let go on", hint="one may be stuck in "
                                "the kernel (ps -o stat: D); commit with --pause=false")
        try:
            yield
        finally:
            with step("unpause it: thaw its cgroup", cg.shell_thaw(),
                      why="whatever happened to the commit: a container left frozen hangs"), \
                    contextlib.suppress(FileNotFoundError):  # it was killed meanwhile
                cg.thaw()
    finally:
        os.close(lock)


def thaw_abandoned(root: Path = ROOT) -> list[str]:
    """For prune: thaw each container that a killed commit left frozen, and drop its lock.
    Shell: flock -n OWNERS/ID.paused echo 0 > /sys/fs/cgroup/minictr/ID/cgroup.freeze"""
    thawed = []
    for path in sorted(OWNERS.glob("*.paused")) if OWNERS.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a commit is under way
            os.close(fd)
            continue
        try:
            cg = backend(path.stem, root)
            if cg.exists() and cg.is_frozen():
                with step("thaw a container a killed commit left frozen", cg.shell_thaw()):
                    cg.thaw()
                thawed.append(f"thawed {path.stem} (its commit was killed)")
            path.unlink(missing_ok=True)  # while held: a commit waiting on it takes it again
        finally:
            os.close(fd)
    return thawed


def _take(path: Path) -> int:
    """flock(LOCK_EX) on ``path``, waiting for a commit that holds it; if prune unlinked the
    file meanwhile, the lock is on a file nobody else finds: take the new one.
    Shell: flock OWNERS/ID.paused COMMAND    See: flock(2)"""
    OWNERS.mkdir(mode=0o700, parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)
