"""--init (issue 14): tini as PID 1, the command as its child; the PID 1 problem without it.

No sleeps: each test waits on what the container prints, or on a process's state in /proc."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.run import pid1
from tests.helpers import read_line, scaled, start


@pytest.mark.root
def test_init_makes_timeout_end_a_busy_loop(minictr):
    # busybox's timeout execs the command in its own process: without --init, that is PID 1,
    # and the SIGTERM it sends after 2 s is dropped (pid_namespaces(7)): it never ends.
    r = minictr("run", "--rm", "--init", "busybox", "timeout", "2", "sh", "-c",
                "while :; do :; done", timeout=30)
    assert r.returncode == 143, r.stderr  # 128 + SIGTERM: the loop was killed by it
    assert "no changes: the upper layer is empty" in r.stderr  # /dev/init is not in the upper


@pytest.mark.root
def test_init_is_pid_1_and_the_command_its_child(minictr):
    r = minictr("run", "--rm", "--init", "busybox", "sh", "-c",
                "echo $$ $PPID; cat /proc/1/cmdline | tr '\\0' ' '")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["2 1", "/dev/init -- sh -c echo $$ $PPID; cat "
                                     "/proc/1/cmdline | tr '\\0' ' ' "]


@pytest.mark.root
def test_without_init_pid_1_ignores_sigterm_from_the_host(minictr, minictr_root: Path):
    minictr("image", "build", "busybox", check=True)
    proc = start("run", "--rm", "--name", "p1", "busybox", "sh", "-c",
                 "echo ready; while :; do :; done",
                 env={"MINICTR_ROOT": str(minictr_root)})
    try:
        assert read_line(proc) == "ready"  # sh is PID 1 now, with no handler for SIGTERM
        pid = json.loads(minictr("inspect", "p1", check=True).stdout)[0]["pid"]
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(re.search(r"^SigCgt:\s*(\w+)$", status, re.M)[1], 16)
        assert not caught & (1 << (signal.SIGTERM - 1))
        os.kill(pid, signal.SIGTERM)  # dropped by the kernel: an init without a handler
        os.kill(pid, signal.SIGKILL)  # the one signal that gets through from the host
        proc.wait(timeout=scaled(30))
        # Had SIGTERM killed it, the exit would be its (143): the kernel takes a process's
        # first fatal signal as its death, and a SIGKILL after it changes nothing
        assert proc.returncode == 137, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()


@pytest.mark.root
def test_init_reaps_an_orphaned_zombie(minictr):
    # The inner sh starts `sleep 0` in the background and exits: the orphan is given to PID 1
    # (tini), and exits. Only PID 1 can wait for it; until then it is a zombie (Z), and its
    # /proc entry stays. The loop ends when tini has reaped it.
    r = minictr("run", "--rm", "--init", "busybox", "sh", "-c",
                'p=$(sh -c "sleep 0 & echo \\$!"); while [ -e /proc/$p ]; do :; done; '
                "echo reaped", timeout=30)
    assert (r.returncode, r.stdout) == (0, "reaped\n"), r.stderr


@pytest.mark.root
def test_without_init_a_pid_1_that_never_waits_keeps_its_zombie(minictr, minictr_root: Path):
    minictr("image", "build", "busybox", check=True)
    proc = start("run", "--rm", "--name", "z", "busybox", "sh", "-c",
                 "sleep 0 & echo started; exec sleep 600",  # PID 1 is then sleep: no wait(2)
                 env={"MINICTR_ROOT": str(minictr_root)})
    pid = None
    try:
        assert read_line(proc) == "started"
        pid = json.loads(minictr("inspect", "z", check=True).stdout)[0]["pid"]
        deadline = time.monotonic() + scaled(30)  # the state is watched, never slept on
        state = ""
        while state != "Z" and time.monotonic() < deadline:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                stat = Path(f"/proc/{children[0]}/stat").read_text()
                state = stat[stat.rindex(")") + 2]
        assert state == "Z"  # sleep 0 exited; its parent, PID 1, never reaps it
    finally:
        if pid is not None:  # SIGKILL gets through to an init: the runtime then cleans up
            os.kill(pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout=scaled(30))
        for f in (proc.stdout, proc.stderr, proc.stdin):
            f.close()
    assert proc.returncode == 137


def test_init_without_tini_is_one_line_naming_the_package(monkeypatch):
    monkeypatch.setattr(pid1, "TINI", "/nonexistent/tini-static")
    with pytest.raises(StepError) as e:
        pid1.check_installed()
    assert e.value.exit_code == 125
    assert "apt-get install tini" in str(e.value) and "\n" not in str(e.value)
