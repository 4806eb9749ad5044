"""Interactive use, as `docker run -it`: a real pseudo-terminal drives minictr."""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from tests.helpers import scaled

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
        assert self.next_of(text, timeout=timeout) == text, self.seen[-400:]

    def next_of(self, *texts: str, timeout: float = 30) -> str | None:
        """Read until one of ``texts`` appears; return it (None: the terminal was closed)."""
        while not any(t.encode() in self.seen for t in texts):
            ready, _, _ = select.select([self.master], [], [], scaled(timeout))
            assert ready, f"never saw any of {texts!r}; the screen shows {self.seen[-400:]!r}"
            try:
                data = os.read(self.master, 4096)
                self.seen += data
                self.screen += data
            except OSError:  # EIO: minictr closed the terminal
                return None
        found = min((t for t in texts if t.encode() in self.seen),
                    key=lambda t: self.seen.index(t.encode()))
        self.seen = self.seen[self.seen.index(found.encode()) + len(found):]
        return found


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
        _, err = proc.communicate(timeout=scaled(30))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 7, err
    assert b"after-4" not in term.screen  # Ctrl-C ended the whole line


def test_step_mode_on_a_terminal(minictr_root):
    """--step at a terminal: the pauses keep reading the user's terminal, even after the
    container's init has switched its own stdio to the container's new pty."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "minictr", "run", "--rm", "--step", "busybox",
                             "sh", "-c", "echo hi-$((1 + 2))"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    term = Terminal(master)
    try:
        pauses = 0
        while term.next_of("press Enter", "what it changed") == "press Enter":
            pauses += 1
            term.type("\r")
        proc.wait(timeout=scaled(30))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert b"hi-3" in term.screen
    assert pauses >= 14  # every step, the pty's and the exec's included
