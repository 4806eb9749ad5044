"""A pseudo-terminal for interactive containers, as `docker run -it` gives one.

The pty is opened *inside* the container, on its own devpts instance, so `tty` in the
container says /dev/pts/0 and the host's terminal is never handed to it. Its master end is
sent to the runtime over the start-up socket (SCM_RIGHTS, see unix(7)); the runtime puts the
user's terminal in raw mode and copies bytes both ways. Ctrl-C is then just a byte: the
container's line discipline turns it into SIGINT for the container's foreground process.
See pty(7), termios(3), tty_ioctl(4).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import termios
import tty
from collections.abc import Iterator

from minictr import explain
from minictr.explain import step
from minictr.run.namespaces import send


def attach_new_pty(sock: socket.socket) -> None:
    """In the container's init: make a pty, give its master to the runtime, use the slave.

    Shell (roughly): script -q /dev/null  — a new session whose controlling tty is a new pty
    """
    with step("open a pseudo-terminal in the container's devpts",
              "exec setsid -c COMMAND </dev/pts/0 >/dev/pts/0 2>&1",
              why="after pivot_root, from the container's own devpts: the host's terminal "
              "is never handed to it"):
        explain.keep_the_users_terminal()  # --explain and --step stay on the user's
        master, slave = os.openpty()  # opens /dev/ptmx, which is the container's pts/ptmx
        send(sock, {"pty": True}, [master])
        os.close(master)
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)  # we lead a session (setsid): take the tty
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.close(slave)


def copy_window_size(source: int, target: int) -> None:
    """Give the container's pty the size of the user's terminal (it then gets SIGWINCH)."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The user's terminal in raw mode (no echo, no signals), restored however we leave."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def relay(master: int, stdin: int = 0, stdout: int = 1) -> None:
    """Copy the user's keys to the container and its output back, until the container has
    closed its terminal (reading the master then fails with EIO)."""
    copy_window_size(stdin, master)
    previous = signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(stdin, master))
    sources = [stdin, master]
    try:
        while master in sources:
            ready, _, _ = select.select(sources, [], [])
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    sources.remove(fd)  # stdin closed: stop reading it; master: done
                elif fd == stdin:
                    _write_all(master, data)
                else:
                    _write_all(stdout, data)
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
