"""Interactive use, as `docker run -it`: a real pseudo-terminal drives minictr."""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root


class Terminal:
    """The user's side: we type into the master and read what the screen would show."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.seen = b""

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, text: str, timeout: float = 30) -> None:
        """Read until ``text`` appears (output is the synchronisation, never a sleep)."""
        while text.encode() not in self.seen:
            ready, _, _ = select.select([self.master], [], [], timeout)
            assert ready, f"never saw {text!r}; the screen shows {self.seen[-400:]!r}"
            try:
                self.seen += os.read(self.master, 4096)
            except OSError:  # EIO: minictr closed the terminal
                break
        assert text.encode() in self.seen, self.seen[-400:]
        self.seen = self.seen[self.seen.index(text.encode()) + len(text):]


def test_interactive_shell(minictr_root):
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "minictr", "run", "--rm", "busybox"],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    os.close(slave)
    term = Terminal(master)
    try:
        term.expect("/ # ")  # the prompt: type only once the shell reads (ash flushes input)
        term.type("tty; echo $((6 * 7))\r")
        term.expect("/dev/pts/0")  # a pty of the container's own devpts, not the host's
        term.expect("42")
        term.type("echo abX\x7fc\r")  # DEL erases the X: line editing works
        term.expect("abc\r\n")
        term.type("echo sleeping; sleep 1000; echo after-sleep\r")
        term.expect("sleeping\r\n")  # the line was read: the tty is back in cooked mode
        term.type("\x03")  # Ctrl-C: SIGINT for the container's foreground job, not minictr
        term.type("echo still-here\r")
        term.expect("still-here\r\n")
        term.type("exit 7\r")
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 7, err
    assert "after-sleep" not in term.seen.decode(errors="replace")
