"""`minictr run` against the real kernel: namespaces, the overlay, exit codes, the report."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from tests.helpers import read_line, scaled, start, tree_digest, wait_for_exit_of

pytestmark = pytest.mark.root


def image_rootfs(root: Path) -> Path:
    return root / "images" / "busybox" / "rootfs"


def test_exit_code_is_the_commands(minictr):
    assert minictr("run", "--rm", "busybox", "true").returncode == 0
    assert minictr("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3


def test_command_not_found_is_127_and_leaves_nothing(minictr, minictr_root):
    r = minictr("run", "busybox", "no-such-command")
    assert r.returncode == 127
    assert "no-such-command" in r.stderr and "not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert list((minictr_root / "containers").iterdir()) == []
    assert list((minictr_root / "names").iterdir()) == []


@pytest.mark.parametrize("path", ["/etc/passwd", "/tmp"])
def test_not_executable_is_126(minictr, path):
    r = minictr("run", "--rm", "busybox", path)
    assert r.returncode == 126, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_killed_by_a_signal_is_128_plus_n(minictr_root):
    proc = start("run", "--name", "victim", "busybox", "sh", "-c", "echo ready; exec sleep 1000")
    assert read_line(proc) == "ready"
    state = json.loads((minictr_root / "names" / "victim" / "state.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)  # the host may kill a container's PID 1
    proc.communicate(timeout=scaled(30))
    assert proc.returncode == 128 + signal.SIGKILL


def test_hostname_defaults_to_the_name_and_can_be_set(minictr):
    r = minictr("run", "--rm", "--name", "alpha", "busybox", "sh", "-c",
                "hostname; echo $HOSTNAME")
    assert r.stdout.split() == ["alpha", "alpha"]
    r = minictr("run", "--rm", "--hostname", "box.example", "busybox", "hostname")
    assert r.stdout.strip() == "box.example"
    assert os.uname().nodename not in ("alpha", "box.example")  # the host's is untouched


def test_command_is_pid_1_and_sees_only_its_processes(minictr):
    r = minictr("run", "--rm", "busybox", "sh", "-c",
                "echo $$; ls /proc | grep -c '^[0-9]'; cat /proc/1/comm; true")
    pid, count, comm = r.stdout.split()
    assert pid == "1"
    assert int(count) <= 3  # sh, ls and grep: nothing of the host
    assert comm == "sh"


def test_environment(minictr):
    env = {"FROM_HOST": "yes"}
    r = minictr("run", "--rm", "-e", "GREETING=hello world", "-e", "FROM_HOST", "-e", "UNSET_X",
                "busybox", "env", env=env)
    lines = set(r.stdout.splitlines())
    assert {"GREETING=hello world", "FROM_HOST=yes", "HOME=/root"} <= lines
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in lines
    assert not any(line.startswith("UNSET_X") for line in lines)


def test_host_files_are_invisible_inside(minictr):
    marker = Path(f"/minictr-test-{uuid.uuid4().hex[:8]}")
    marker.write_text("host only\n")
    try:
        r = minictr("run", "--rm", "busybox", "sh", "-c",
                    f"test -e {marker} && echo visible || echo invisible; ls /.. | grep -c minictr")
        assert r.stdout.split() == ["invisible", "0"]
    finally:
        marker.unlink()


def test_minimal_dev_and_read_only_sys(minictr):
    r = minictr("run", "--rm", "busybox", "sh", "-c",
                "ls /dev; echo x > /dev/null && echo null-ok; "
                "touch /sys/x 2>/dev/null || echo sys-ro")
    out = r.stdout.split()
    for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"):
        assert dev in out
    assert "sda" not in out and "vda" not in out
    assert "null-ok" in out and "sys-ro" in out


def test_writes_land_in_upper_and_the_image_never_changes(minictr, minictr_root):
    minictr("image", "build", "busybox", check=True)
    before = tree_digest(image_rootfs(minictr_root))
    r = minictr("run", "--name", "wrecker", "busybox", "sh", "-c",
                "echo new > /root/new; echo changed >> /etc/passwd; rm -rf /bin; ls /bin")
    assert r.returncode != 0  # ls is gone with /bin
    upper = Path(json.loads(minictr("inspect", "wrecker").stdout)[0]["upper"])
    assert (upper / "root/new").read_text() == "new\n"
    assert (upper / "etc/passwd").read_text().endswith("changed\n")
    assert tree_digest(image_rootfs(minictr_root)) == before
    r = minictr("run", "--rm", "busybox", "ls", "/bin/ls")  # a new container sees all of it
    assert r.returncode == 0


def test_report_and_diff(minictr):
    script = "; ".join([
        "echo hello > /tmp/created",  # A
        "echo more >> /etc/group",  # C, content
        "chmod 600 /etc/hosts",  # C, metadata only
        "rm /etc/passwd",  # D
        "rm -rf /home && mkdir /home && touch /home/fresh",  # opaque
        "mv /bin/uname /bin/uname2",  # rename: D + A
    ])
    r = minictr("run", "--name", "changes", "busybox", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    report = r.stderr
    for fragment in ("created", "group", "hosts", "passwd", "home", "uname2"):
        assert fragment in report
    assert "opaque" in report
    d = minictr("diff", "changes")
    assert d.returncode == 0
    lines = d.stdout.splitlines()
    for expected in ("C /etc", "C /etc/group", "C /etc/hosts", "D /etc/passwd", "C /tmp",
                     "A /tmp/created", "C /home", "A /home/fresh", "C /bin", "D /bin/uname",
                     "A /bin/uname2"):
        assert expected in lines, (expected, lines)
    assert lines == sorted(lines, key=lambda line: line[2:])


def test_two_containers_write_the_same_path(minictr_root):
    a = start("run", "-i", "--name", "one", "busybox", "sh", "-c",
              "echo one > /tmp/same; echo ready; read go; cat /tmp/same")
    b = start("run", "-i", "--name", "two", "busybox", "sh", "-c",
              "echo two > /tmp/same; echo ready; read go; cat /tmp/same")
    assert read_line(a) == "ready" and read_line(b) == "ready"  # both are running now
    out_a, _ = a.communicate("go\n", timeout=scaled(30))
    out_b, _ = b.communicate("go\n", timeout=scaled(30))
    assert (out_a.strip(), out_b.strip()) == ("one", "two")
    for name in ("one", "two"):
        upper = minictr_root / "names" / name / "upper"
        assert (upper / "tmp/same").read_text() == f"{name}\n"
    assert not (image_rootfs(minictr_root) / "tmp/same").exists()


def test_stdin_is_dev_null_without_dash_i(minictr):
    r = minictr("run", "--rm", "busybox", "sh", "-c", "cat; echo done", input="not for you\n")
    assert r.stdout == "done\n"  # and the default shell would exit at once: no waiting
    r = minictr("run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo done", input="for you\n")
    assert r.stdout == "for you\ndone\n"


def test_rm_flag_removes_the_container(minictr, minictr_root):
    assert minictr("run", "--rm", "busybox", "touch", "/x").returncode == 0
    assert list((minictr_root / "containers").iterdir()) == []
    assert list((minictr_root / "names").iterdir()) == []


def test_ps_inspect_rm(minictr, minictr_root):
    proc = start("run", "-i", "--name", "live", "busybox", "sh", "-c", "echo ready; read line")
    assert read_line(proc) == "ready"
    ps = minictr("ps").stdout
    assert "live" in ps and "Up " in ps
    info = json.loads(minictr("inspect", "live").stdout)[0]
    assert info["status"] == "running" and info["pid"] > 1
    assert set(info) >= {"id", "name", "image", "status", "pid", "exit_code", "lower", "upper",
                         "work", "merged"}
    r = minictr("rm", "live")
    assert r.returncode == 125 and "running" in r.stderr
    proc.communicate("bye\n", timeout=scaled(30))
    assert "live" not in minictr("ps").stdout
    assert "Exited (0)" in minictr("ps", "-a").stdout
    info = json.loads(minictr("inspect", "live").stdout)[0]
    assert (info["status"], info["exit_code"]) == ("exited", 0)
    assert minictr("rm", "live").stdout.strip() == "live"
    assert list((minictr_root / "containers").iterdir()) == []


def test_a_container_that_ignores_ctrl_c_says_so_once_and_dies_of_the_third(minictr_root):
    """A PID 1 with no SIGINT handler never sees it: the kernel drops it (pid_namespaces(7)).
    The first Ctrl-C says so, the second counts down, the third kills the container. (sh
    ignores SIGINT from its first line, and exec keeps that: PID 1 never catches it.) Each
    line is read before the next signal: two pending SIGINTs are one (signal(7))."""
    proc = start("run", "--rm", "busybox", "sh", "-c", "trap '' INT; echo ready; exec sleep 1000")
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGINT)
    assert proc.stderr.readline() == ("minictr: the container ignored SIGINT (its PID 1 has "
                                      "no handler for it); two more to kill it\n")
    proc.send_signal(signal.SIGINT)
    assert proc.stderr.readline() == "minictr: one more to kill it\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=scaled(30))
    assert proc.returncode == 137
    assert err.startswith("minictr: third interrupt: killing the container (SIGKILL)"), err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_to_the_runtime_reach_the_container(minictr_root, signum):
    name = signal.Signals(signum).name[3:]
    proc = start("run", "--rm", "busybox", "sh", "-c",
                 f"trap 'echo got-{name}; exit 42' {name}; echo ready; sleep 1000 & wait")
    assert read_line(proc) == "ready"
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=scaled(30))
    assert f"got-{name}" in out
    assert proc.returncode == 42


@pytest.mark.parametrize("user", [[], ["-u", "1000"]], ids=["root", "uid-1000"])
def test_sigkill_of_the_runtime_kills_the_container_and_prune_cleans(minictr, minictr_root,
                                                                      user):
    """With -u too: a change of uid clears the parent-death signal (prctl(2)), and an init
    that did not ask again outlived a killed runtime (found as a leftover after the suite)."""
    proc = start("run", "--name", "orphan", *user, "busybox", "sh", "-c",
                 "echo ready; exec sleep 1000")
    assert read_line(proc) == "ready"
    pid = json.loads((minictr_root / "names/orphan/state.json").read_text())["pid"]
    proc.kill()  # SIGKILL: the runtime can undo nothing
    proc.communicate(timeout=scaled(30))
    wait_for_exit_of(pid)  # the parent-death signal killed the container
    assert "Dead" in minictr("ps", "-a").stdout
    r = minictr("prune")
    assert r.returncode == 0 and "orphan" in r.stdout
    assert list((minictr_root / "containers").iterdir()) == []
    assert list((minictr_root / "names").iterdir()) == []


def test_run_imports_nothing_it_does_not_use(minictr):
    """pyroute2 alone costs ~150 ms: `run` imports only what it uses (bench/ measures it).
    Nor the standard library's slow ones it has no use for: dataclasses (with inspect, the
    records are NamedTuples), logging (cgroupspy's Nodes), tempfile (image builds)."""
    import subprocess
    import sys

    minictr("image", "build", "busybox", check=True)  # building is another matter
    unused = ("pyroute2", "subprocess", "minictr.images.recipes", "minictr.lifecycle.prune",
              "minictr.show.layers", "minictr.show.demo", "dataclasses", "logging", "tempfile",
              "minictr.images.reference", "minictr.images.pull", "minictr.images.push",
              "minictr.images.registry", "minictr.images.auth", "http.client", "ssl",
              "minictr.lifecycle.exec")
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # cgroupspy is the v1 backend's
        unused += ("cgroupspy", "minictr.run.cgroups.v1")
    else:
        unused += ("minictr.run.cgroups.v2",)
    code = ("import sys; from minictr import cli\n"
            "rc = cli.main(['run', '--rm', 'busybox', 'true'])\n"
            f"print(sorted(m for m in {unused!r} "
            "if any(k == m or k.startswith(m + '.') for k in sys.modules)))\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, check=True)
    assert r.stdout.strip() == "[]"


def test_the_command_starts_with_default_signal_handling(minictr):
    """Python ignores SIGPIPE and SIGXFSZ; exec would pass that on. Docker's containers
    start with no signal ignored, so `yes | head -1` ends instead of erroring."""
    r = minictr("run", "--rm", "busybox", "sh", "-c",
                "grep SigIgn /proc/self/status; yes | head -1")
    label, mask, line = r.stdout.split()
    assert (label, line) == ("SigIgn:", "y")
    assert int(mask, 16) & 0x7FFFFFFF == 0  # signals 1-31 (bits 0-30; SIGPIPE is bit 12)
    assert "I/O error" not in r.stderr
