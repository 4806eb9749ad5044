"""Small helpers shared by the root tests: start a container in the background, hash a tree."""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import sys
from pathlib import Path

EMULATED_FACTOR = 6.0


def _timeout_factor() -> float:
    """MINICTR_TEST_TIMEOUT_FACTOR if set; else 6 on a machine that QEMU emulates without
    KVM (../shared/v2vm: several times slower), where systemd-detect-virt(1) says "qemu"
    (with KVM it says "kvm"); else 1. A timeout only ends a test that hangs: nothing in a
    test waits for one to pass, so a larger one costs nothing when all is well."""
    if value := os.environ.get("MINICTR_TEST_TIMEOUT_FACTOR"):
        return float(value)
    try:
        virt = subprocess.run(["systemd-detect-virt", "--vm"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return 1.0
    return EMULATED_FACTOR if virt == "qemu" else 1.0


TIMEOUT_FACTOR = _timeout_factor()


def scaled(seconds: float) -> float:
    """A test's timeout, in seconds, on this machine (see TIMEOUT_FACTOR)."""
    return seconds * TIMEOUT_FACTOR


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Bad input: exit 125, one line on stderr that starts `minictr: ` and has these words,
    and nothing on stdout."""
    assert result.returncode == 125, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("minictr: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""


def tree_digest(root: Path) -> str:
    """A hash of every path, type, mode, owner, size, link target and file content."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            h.update(f"{p.relative_to(root)} {st.st_mode:o} {st.st_uid} {st.st_gid}\n".encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def damaged_layers(store: Path) -> list[str]:
    """The layers of the store at ``store`` whose files no longer hash to their digest.

    A layer's digest is the sha256 of its tar, made from its files
    (minictr.images.catalog.add_layer):
    writing the tar again and comparing says, byte for byte, whether anything changed, was
    added or was deleted in it since it was stored, whenever that was.
    """
    import json

    from minictr.images import tarlayer

    damaged = []
    for meta in sorted((store / "layers").glob("*.json")):
        digest = json.loads(meta.read_text())["digest"]
        directory = meta.with_suffix("")
        if not directory.is_dir():
            damaged.append(f"{digest}: its directory is gone, its record is not")
            continue
        with open(os.devnull, "wb") as sink:
            now = tarlayer.write_layer(directory, sink)
        if now != digest:
            damaged.append(f"{digest}: its files now hash to {now}")
    return damaged


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602  # linux/fs.h, on 64-bit hosts
FS_IMMUTABLE_FL = 0x10


def set_immutable(path: Path, on: bool) -> None:
    """chattr +i / -i, without e2fsprogs (a minimal Debian lacks it): the inode flags'
    ioctl. Not even root may then remove or change the file.  See: ioctl_iflags(2)"""
    import array
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = array.array("i", [0])  # the kernel reads and writes an int
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`minictr ARGS` in the background, stdin and stdout as pipes (no terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", "minictr", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )


def read_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """The next line the container prints; the container says "ready" when it is. Waiting on
    its output is the synchronisation: no sleeps."""
    assert proc.stdout is not None
    # Byte by byte from the fd itself: a buffered readline could take the next line into
    # Python's buffer, where select() cannot see it, and the next read_line would then wait.
    fd, line = proc.stdout.fileno(), b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], scaled(timeout))
        assert ready, f"the container printed nothing more (so far: {line!r})"
        byte = os.read(fd, 1)
        assert byte, f"the container closed its output (so far: {line!r})"
        line += byte
    return line.decode().strip()


def wait_for_exit_of(pid: int, timeout: float = 30) -> None:
    """Wait for a process that is not our child: a pidfd becomes readable when it exits."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], scaled(timeout))
        assert ready, f"process {pid} is still alive"
    finally:
        os.close(fd)
