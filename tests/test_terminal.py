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
        self.seen = b""  # not yet matched by expect()
        self.screen = b""  # everything, for the end

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, text: str, timeout: float = 30) -> None:
        """Read until ``text`` appears (output is the synchronisation, never a sleep)."""
        while text.encode() not in self.seen:
            ready, _, _ = select.select([self.master], [], [], timeout)
            assert ready, f"never saw {text!r}; the screen shows {self.seen[-400:]!r}"
            try:
                data = os.read(self.master, 4096)
                self.seen += data
                self.screen += data
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
        # The terminal echoes what we type, so each expected text is one only the shell
        # can print (it computes it), never a piece of the typed line.
        term.type("sh -c 'echo in-$((1 + 1)); exec sleep 1000'; echo after-$((2 + 2))\r")
        term.expect("in-2\r\n")  # sleep's process printed it: it is the foreground job now
        term.type("\x03")  # Ctrl-C: SIGINT for the container's foreground job, not minictr
        term.type("echo still-$((3 + 3))\r")
        term.expect("still-6\r\n")
        term.type("exit 7\r")
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 7, err
    assert b"after-4" not in term.screen  # Ctrl-C ended the whole line
