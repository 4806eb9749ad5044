"""The shell line of a mount(2) call, as --explain shows it: pure, no root (minictr.run.mounts)."""

from __future__ import annotations

import pytest

from minictr import libc
from minictr.run.mounts import Mount, shell

SAFE = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


@pytest.mark.parametrize(("call", "line"), [
    (Mount("shm", "/m/dev/shm", "tmpfs", SAFE, "mode=1777,size=65536k"),
     "mount -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=65536k shm /m/dev/shm"),
    (Mount("sysfs", "/m/sys", "sysfs", SAFE | libc.MS_RDONLY),
     "mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /m/sys"),
    (Mount("overlay", "/m", "overlay", 0, "lowerdir=a,upperdir=u,workdir=w"),
     "mount -t overlay -o lowerdir=a,upperdir=u,workdir=w overlay /m"),
    (Mount("proc", "/m/proc", "proc"), "mount -t proc proc /m/proc"),
    (Mount("none", "/m", "tmpfs", 1 << 21), "mount -t tmpfs -o relatime none /m"),
    (Mount("/dev/null", "/m/proc/kcore", None, libc.MS_BIND),
     "mount --bind /dev/null /m/proc/kcore"),
    (Mount("/a", "/a", None, libc.MS_BIND | libc.MS_REC), "mount --rbind /a /a"),
    (Mount("/a", "/a", None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_NOSUID),
     "mount -o remount,bind,ro,nosuid /a"),
    (Mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE), "mount --make-rprivate /"),
    (Mount("none", "/x", None, libc.MS_PRIVATE), "mount --make-private /x"),
    (Mount("/a", "/b", None, 8192), "mount --move /a /b"),
])
def test_each_kind_of_call_has_its_mount8_form(call: Mount, line: str) -> None:
    assert shell(call) == line


@pytest.mark.parametrize("call", [
    Mount("/a", "/b", None, libc.MS_BIND | libc.MS_RDONLY),  # ignored by mount(2): a remount
    Mount("/a", "/b", None, libc.MS_BIND, "mode=755"),  # a bind takes no data
    Mount("none", "/", None, libc.MS_PRIVATE | libc.MS_NOSUID),  # a propagation change alone
    Mount("x", "/x", "tmpfs", 1 << 30),  # a flag with no name must not vanish from the line
    Mount("x", "/x", None, libc.MS_NOSUID),  # a new mount needs its type
])
def test_a_call_the_line_cannot_show_truly_is_refused(call: Mount) -> None:
    with pytest.raises(ValueError):
        shell(call)


def test_the_tuple_is_the_calls_arguments() -> None:
    m = Mount("shm", "/m/dev/shm", "tmpfs", SAFE, "mode=1777")
    assert tuple(m) == ("shm", "/m/dev/shm", "tmpfs", SAFE, "mode=1777")  # libc.mount(*m)
