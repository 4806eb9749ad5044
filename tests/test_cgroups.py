"""Resource limits (tutorial chapter 08): --memory, --pids-limit, --cpus, `stats`, and the report.

What runs where:

- The checks of the flags, and the files each backend writes, need no root: the v1 backend
  against a directory shaped like v1's trees, the v2 backend against one shaped like v2's.
- The root tests below run real containers on this host's cgroups, whichever kind it has:
  on a v1 or hybrid host (Debian 12 here) they exercise v1.py, on a v2 host (the Vagrant box,
  Ubuntu 24.04) the same tests exercise v2.py with real limits.
- v2's mechanics are real on every host: a private cgroup2 mount (a hybrid host has a cgroup2
  tree too, only without memory, pids and cpu): cgroup.procs, cgroup.events, cgroup.kill.
- Only a v2 host exercises v2's limits in the kernel (memory.max, memory.swap.max, pids.max,
  cpu.max, subtree_control on the real root): the tests marked ``v2_host``. Elsewhere they
  skip, saying so: the one skip CI allows.

No sleeps: a container says "ready" when it is, a pidfd says when a process has exited, and
cgroup.events says when a cgroup is empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.run import cgroups
from minictr.run.cgroups import MIB, Stats
from minictr.run.cgroups.v1 import V1Cgroup
from minictr.run.cgroups.v2 import V2Cgroup
from minictr.spec import Limits
from tests.helpers import read_line, refused, scaled, start, wait_for_exit_of

V2_HOST = Path("/sys/fs/cgroup/cgroup.controllers").exists()
LIMITS = Limits(memory=64 * MIB, pids=32, cpus=0.5)
# One line (read_line waits for one line at a time): the container's /proc/self/cgroup, "ready".
SAY_CGROUP_AND_WAIT = "echo $(cat /proc/self/cgroup) ready; read x"


def state_of(root: Path, name: str) -> dict:
    return json.loads((root / "names" / name / "state.json").read_text())


# --- the flags: Docker's units and ranges, and what minictr refuses -------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("64m", 64 * MIB), ("64M", 64 * MIB), ("64mb", 64 * MIB), ("64MiB", 64 * MIB),
    ("1g", 1024 * MIB), ("1.5g", 1536 * MIB), ("6144k", 6 * MIB), ("6291456", 6 * MIB),
    ("6291456b", 6 * MIB),
])
def test_memory_units_are_dockers(text, expected):
    assert cgroups.parse_memory(text, host_bytes=8 * 1024 * MIB) == expected


@pytest.mark.parametrize(("text", "words"), [
    ("0", "below the minimum of 6 MiB"), ("5m", "below the minimum"),
    ("10x", "invalid --memory"), ("-5m", "invalid --memory"), ("", "invalid --memory"),
    ("m", "invalid --memory"), ("1e9", "invalid --memory"),
    ("9g", "more than this host's memory (8 GiB)"), ("99999999999g", "more than this host"),
])
def test_bad_memory(text, words):
    with pytest.raises(StepError) as e:
        cgroups.parse_memory(text, host_bytes=8 * 1024 * MIB)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_pids_and_cpus():
    assert cgroups.parse_pids("32") == 32
    assert cgroups.parse_pids("-1") is None  # Docker's "unlimited"
    assert cgroups.parse_cpus("0.5", host_cpus=2) == 0.5
    assert cgroups.parse_cpus("2", host_cpus=2) == 2
    assert cgroups.cpu_quota_us(0.5) == 50_000  # of every 100000 µs, as Docker
    assert cgroups.cpu_quota_us(0.01) == 1_000  # the kernel's smallest quota


@pytest.mark.parametrize("text", ["0", "1", "-2", "abc", "1.5", "", "4194305"])
def test_bad_pids_limit(text):
    with pytest.raises(StepError, match="pids-limit"):
        cgroups.parse_pids(text)


@pytest.mark.parametrize("text", ["0", "0.001", "3", "-1", "nan", "inf", "half"])
def test_bad_cpus(text):
    with pytest.raises(StepError, match="cpus") as e:
        cgroups.parse_cpus(text, host_cpus=2)
    if text in ("0", "3"):
        assert e.value.hint == "from 0.01 to 2, as this host has 2 CPUs"


# --- the report: why it ended, and the limits line ------------------------------------------


def test_why_it_ended_and_the_limits_line():
    oom = Stats(memory_peak=int(60.1 * MIB), oom_kills=1, pids_peak=32, forks_refused=68,
                cpu_ns=500_000_000, throttled=9)
    assert cgroups.why_it_ended(LIMITS, oom, 137) == [
        "killed: out of memory (limit 64 MiB)", "fork refused 68 times (pids limit 32)"]
    assert cgroups.why_it_ended(LIMITS, oom, 0)[0] == (
        "1 process killed: out of memory (limit 64 MiB); the container went on")
    assert cgroups.describe(LIMITS, oom, 1.01) == (
        "memory peak 60.1 MiB of 64 MiB (1 OOM kill) · pids peak 32 of 32 (fork refused 68 "
        "times) · cpu 0.50 s in 1.01 s (limit 0.5 CPU, throttled 9 times)")
    quiet = Stats(memory_peak=MIB, pids_peak=2, cpu_ns=1000, oom_kills=0, forks_refused=0)
    assert cgroups.why_it_ended(Limits(), quiet, 0) == []
    assert cgroups.describe(Limits(), quiet, 0.1) is None  # no limits, nothing happened
    assert cgroups.describe(Limits(pids=8), quiet, 0.1) == "pids peak 2 of 8"


# --- v2, against a directory shaped like the v2 tree (no root needed) -----------------------


def v2_tree(tmp_path: Path, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc",
            enabled: str = "") -> Path:
    """/sys/fs/cgroup as cgroup2 shows it, with minictr/ made (as an earlier run left it)."""
    root = tmp_path / "cgroup"
    (root / "minictr").mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text(enabled)
    (root / "minictr" / "cgroup.subtree_control").write_text("")
    return root


def kernel_makes(cgroup: Path, *files: str) -> None:
    """What mkdir in cgroupfs makes by itself and a plain directory does not: the files."""
    for name in files:
        (cgroup / name).write_text("")


def test_v2_writes_these_files(tmp_path):
    root = v2_tree(tmp_path)
    cg = V2Cgroup("ID", root)
    cg.check(LIMITS)
    cg.create()
    # controllers handed down from the root, then from minictr/ to the containers
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (root / "minictr/cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert cg.dirs == [root / "minictr/ID"]
    kernel_makes(cg.path, "memory.max", "memory.swap.max", "pids.max", "cpu.max", "cgroup.procs")
    cg.apply(LIMITS)
    cg.move_in(4242)
    assert {f.name: f.read_text() for f in cg.path.iterdir()} == {
        "memory.max": "67108864", "memory.swap.max": "0", "pids.max": "32",
        "cpu.max": "50000 100000", "cgroup.procs": "4242"}


def test_v2_without_swap_accounting_and_already_enabled(tmp_path):
    root = v2_tree(tmp_path, enabled="cpu memory pids\n")  # as the kernel reads it back
    cg = V2Cgroup("ID", root)
    cg.create()
    assert (root / "cgroup.subtree_control").read_text() == "cpu memory pids\n"  # no write
    kernel_makes(cg.path, "memory.max")  # no memory.swap.max: swap accounting is off
    assert [s.file.name for s in cg.settings(Limits(memory=64 * MIB))] == ["memory.max"]


def test_v2_counters(tmp_path):
    cg = V2Cgroup("ID", v2_tree(tmp_path))
    cg.create()
    files = {"memory.current": "1048576", "memory.peak": "33554432",
             "memory.events": "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
             "pids.current": "3", "pids.events": "max 68\n",
             "cpu.stat": "usage_usec 500000\nuser_usec 400000\nnr_throttled 9\n"}
    for name, text in files.items():
        (cg.path / name).write_text(text)
    assert cg.stats() == Stats(memory=MIB, memory_peak=32 * MIB, memory_hits=12, oom_kills=1,
                               pids=3, pids_peak=None, forks_refused=68,
                               cpu_ns=500_000_000, throttled=9)


@pytest.mark.parametrize(("limits", "controller"), [
    (Limits(pids=32), "pids"), (Limits(memory=64 * MIB), "memory"), (Limits(cpus=1), "cpu")])
def test_v2_host_without_a_controller(tmp_path, limits, controller):
    have = " ".join(c for c in ("cpu", "memory", "pids") if c != controller)
    cg = V2Cgroup("ID", v2_tree(tmp_path, controllers=have))
    with pytest.raises(StepError) as e:
        cg.check(limits)
    line = str(e.value)
    assert f"needs the {controller} controller" in line and "cgroup v2" in line
    assert e.value.hint and "\n" not in line
    assert not cg.path.exists()  # refused before anything is made


# --- v1, against a directory shaped like the v1 trees (no root needed) ----------------------


def v1_trees(tmp_path: Path, trees: tuple[str, ...] = ("memory", "pids", "cpu", "cpuacct"),
             swap_accounting: bool = True) -> Path:
    root = tmp_path / "cgroup"
    for tree in trees:
        (root / tree).mkdir(parents=True)
        (root / tree / "cgroup.procs").write_text("")
    if swap_accounting:
        (root / "memory" / "memory.memsw.limit_in_bytes").write_text("")
    return root


def test_v1_writes_these_files_through_cgroupspy(tmp_path):
    root = v1_trees(tmp_path)
    cg = V1Cgroup("ID", root)
    cg.check(LIMITS)
    cg.create()
    assert cg.dirs == [root / t / "minictr/ID" for t in ("memory", "pids", "cpu", "cpuacct")]
    cg.apply(LIMITS)
    written = {str(f.relative_to(root)): f.read_text()
               for d in cg.dirs for f in d.iterdir()}
    assert written == {
        "memory/minictr/ID/memory.limit_in_bytes": "67108864",
        "memory/minictr/ID/memory.memsw.limit_in_bytes": "67108864",  # no swap beyond it
        "pids/minictr/ID/pids.max": "32",
        "cpu/minictr/ID/cpu.cfs_period_us": "100000",
        "cpu/minictr/ID/cpu.cfs_quota_us": "50000",
    }
    # The files cgroupspy writes are the ones the settings name.
    for s in cg.settings(LIMITS):
        if s.attr:
            controller = cg.controller(s.file.parent.parent.parent.name)
            assert controller.get_interface(s.attr).filename.decode() == s.file.name


def test_v1_without_swap_accounting(tmp_path):
    cg = V1Cgroup("ID", v1_trees(tmp_path, swap_accounting=False))
    assert [s.file.name for s in cg.settings(Limits(memory=64 * MIB))] == [
        "memory.limit_in_bytes"]


def test_v1_host_without_pids(tmp_path):
    cg = V1Cgroup("ID", v1_trees(tmp_path, trees=("memory", "cpu", "cpuacct")))
    cg.check(Limits(memory=64 * MIB, cpus=1))  # those it has
    with pytest.raises(StepError) as e:
        cg.check(Limits(pids=32))
    assert "--pids-limit needs the pids controller" in str(e.value)
    assert e.value.hint and "\n" not in str(e.value)


# --- real containers, on this host's cgroups ------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize(("flags", "words"), [
    (["--memory", "0"], ["--memory 0", "minimum of 6 MiB"]),
    (["--memory", "10x"], ["invalid --memory '10x'", "b, k, m or g"]),
    (["--memory=-64m"], ["invalid --memory"]),
    (["--memory", "100000g"], ["more than this host's memory"]),
    (["--cpus", "0"], ["--cpus 0 is out of range", "from 0.01"]),
    (["--cpus", str((os.cpu_count() or 1) + 1)], ["out of range", "CPUs"]),
    (["--cpus", "lots"], ["invalid --cpus"]),
    (["--pids-limit", "0"], ["--pids-limit 0 is too low", "shim"]),
    (["--pids-limit", "-5"], ["too low"]),
    (["--pids-limit", "many"], ["invalid --pids-limit"]),
    (["--pids-limit", "99999999"], ["more than the kernel allows"]),
])
def test_bad_limits_are_refused_and_leave_nothing(minictr, minictr_root, flags, words):
    refused(minictr("run", *flags, "busybox", "true"), *words)
    assert not list((minictr_root / "containers").glob("*"))  # and the leak check: no cgroup


@pytest.mark.root
def test_limits_live_stats_and_the_cgroup_namespace(minictr, minictr_root):
    proc = start("run", "--name", "lim", "-i", "--memory", "64m", "--pids-limit", "32",
                 "--cpus", "0.5", "busybox", "sh", "-c", SAY_CGROUP_AND_WAIT)
    *inside, ready = read_line(proc).split()
    assert ready == "ready"
    state = state_of(minictr_root, "lim")
    cid, init = state["id"], state["pid"]
    try:
        # Inside, its own cgroup is the root of its cgroup namespace; outside, it is minictr/ID.
        assert inside and all(line.endswith(":/") for line in inside), inside
        assert f"/minictr/{cid}\n" in Path(f"/proc/{init}/cgroup").read_text()
        dirs = [Path(p) for p in state["cgroup"]["paths"]]
        # the container's processes only: the shim stepped out once init was born
        assert all((d / "cgroup.procs").read_text().split() == [str(init)] for d in dirs)
        # The limits, in the kernel's own files.
        expected = ({"minictr/{}/memory.max": "67108864", "minictr/{}/pids.max": "32",
                     "minictr/{}/cpu.max": "50000 100000"} if V2_HOST else
                    {"memory/minictr/{}/memory.limit_in_bytes": "67108864",
                     "pids/minictr/{}/pids.max": "32", "cpu/minictr/{}/cpu.cfs_period_us":
                     "100000", "cpu/minictr/{}/cpu.cfs_quota_us": "50000"})
        for path, value in expected.items():
            assert Path("/sys/fs/cgroup", path.format(cid)).read_text().strip() == value
        # stats and inspect, live
        r = minictr("stats", "lim", check=True)
        header, row = r.stdout.splitlines()
        assert "MEMORY / LIMIT" in header and "PIDS / LIMIT" in header
        assert re.search(r"lim\s+running\s+[\d.]+ [KM]iB / 64 MiB .* 1 / 32 ", row), row
        live = json.loads(minictr("inspect", "lim", check=True).stdout)[0]
        assert live["stats"]["memory"] > 0 and live["limits"]["pids"] == 32
    finally:
        proc.communicate("\n", timeout=scaled(30))
    assert proc.returncode == 0
    assert not any(d.exists() for d in dirs)  # removed on exit
    r = minictr("stats", "lim", check=True)  # now the final numbers, from state.json
    assert re.search(r"lim\s+exited\s+- / 64 MiB\s+[\d.]+ [KM]iB\s+- / 32 ", r.stdout), r.stdout


@pytest.mark.root
@pytest.mark.parametrize("command", [
    "tail /dev/zero",  # tail keeps "the last lines": all of it; sh reports its SIGKILL as 137
    "exec tail /dev/zero",  # PID 1 itself is killed: 128 + SIGKILL
])
def test_memory_hog_is_killed_and_reported(minictr, minictr_root, command):
    r = minictr("run", "--name", "hog", "--memory", "16m", "busybox", "sh", "-c", command)
    assert r.returncode == 137, r.stderr
    assert "exited with code 137, killed: out of memory (limit 16 MiB);" in r.stderr
    assert re.search(r"limits: memory peak [\d.]+ MiB of 16 MiB \(1 OOM kill\)", r.stderr)
    stats = state_of(minictr_root, "hog")["stats"]
    assert stats["oom_kills"] == 1 and stats["memory_peak"] <= 16 * MIB


@pytest.mark.root
def test_a_child_killed_for_memory_is_reported_when_pid_1_goes_on(minictr):
    # Not `head -c 200m /dev/zero | tail`: while the killed tail's memory is being freed,
    # head's next write to the pipe can start a second OOM kill, of sh (PID 1) as likely
    # as of head. Nothing else allocates here: one kill, and sh goes on.
    r = minictr("run", "--rm", "--memory", "16m", "busybox", "sh", "-c",
                "tail /dev/zero; echo went on")
    assert r.returncode == 0 and r.stdout == "went on\n"
    assert "1 process killed: out of memory (limit 16 MiB); the container went on" in r.stderr


@pytest.mark.root
def test_fork_bomb_is_stopped_by_pids_limit(minictr, minictr_root):
    # 100 sleeps: the 16th fork is refused (sh is 1 of the 16). busybox sh gives up there;
    # PID 1's exit makes the kernel kill the sleeps: no 100 s wait.
    bomb = "i=0; while [ $i -lt 100 ]; do sleep 100 & i=$((i+1)); done; echo done"
    r = minictr("run", "--name", "bomb", "--pids-limit", "16", "busybox", "sh", "-c", bomb,
                timeout=scaled(60))
    assert "can't fork" in r.stderr
    assert re.search(r"exited with code \d+, fork refused \d+ times? \(pids limit 16\)",
                     r.stderr), r.stderr
    stats = state_of(minictr_root, "bomb")["stats"]
    assert stats["forks_refused"] >= 1
    assert stats["pids_peak"] in (16, None)  # None: a kernel without pids.peak
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


@pytest.mark.root
def test_half_a_cpu(minictr, minictr_root):
    """--cpus 0.5 lets a busy loop have 50 ms of every 100 ms. The upper bound is the point: the
    kernel enforces the quota, so it can only be passed by one period's worth at the edges
    (0.05 s in 2 s); 0.6 leaves room for that and for the start. The lower bound only says the
    loop ran: it needs half of one of the host's CPUs, and gets less than 0.2 of one only if
    ten CPU-bound processes compete for two CPUs. No sleep decides anything: `timeout` ends it.
    (PID 1 ignores SIGTERM from its own namespace, so `timeout` runs under sh, not as PID 1.)"""
    r = minictr("run", "--name", "busy", "--cpus", "0.5", "busybox", "sh", "-c",
                "timeout 2 sh -c 'while :; do :; done'; true")
    assert r.returncode == 0, r.stderr
    stats = state_of(minictr_root, "busy")["stats"]
    ratio = stats["cpu_ns"] / 1e9 / stats["wall_seconds"]
    assert 0.2 <= ratio <= 0.6, stats
    assert stats["throttled"] > 0  # the quota ran out, period after period
    assert re.search(r"limits: cpu [\d.]+ s in [\d.]+ s \(limit 0.5 CPU, throttled \d+ times\)",
                     r.stderr)


@pytest.mark.root
def test_prune_removes_the_cgroup_after_a_crash(minictr, minictr_root):
    proc = start("run", "--name", "crash", "--memory", "64m", "busybox", "sh", "-c",
                 "echo ready; exec sleep 1000")
    assert read_line(proc) == "ready"
    state = state_of(minictr_root, "crash")
    dirs = [Path(p) for p in state["cgroup"]["paths"]]
    proc.kill()  # SIGKILL: the runtime removes nothing
    proc.communicate(timeout=scaled(30))
    wait_for_exit_of(state["pid"])  # the parent-death signal killed the container
    assert all(d.is_dir() for d in dirs)
    r = minictr("prune", check=True)
    assert f"cgroup {dirs[0]}" in r.stdout
    assert not any(d.exists() for d in dirs)


@pytest.mark.root
@pytest.mark.parametrize("frozen", [False, True], ids=["running", "frozen"])
def test_remove_kills_what_is_still_in_the_cgroup(frozen):
    """What prune does with a cgroup a process is still in: v1 SIGKILLs each pid in
    cgroup.procs, v2 writes cgroup.kill; then rmdir. Frozen too (a commit killed): a frozen
    v1 process does not die of SIGKILL until thawed, so remove thaws first (v2 kills frozen
    processes); a runtime or prune that removes a frozen container never hangs."""
    cg = cgroups.backend(f"test-{uuid.uuid4().hex[:12]}")
    cg.create()
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        cg.move_in(sleeper.pid)
        assert cg.procs() == {sleeper.pid}
        if frozen:
            assert cg.freeze() and cg.is_frozen()
        cg.remove()
        assert sleeper.wait(timeout=scaled(10)) == -signal.SIGKILL
        assert not cg.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        if cg.exists():
            cg.remove()


# --- v2's mechanics for real, on a private cgroup2 mount (every host has cgroup2) ------------


@pytest.fixture
def cgroup2(tmp_path: Path):
    """A cgroup2 of our own: the host's one tree, seen from here (on a hybrid host without
    memory, pids and cpu, which v1 holds). Shell: mount -t cgroup2 none DIR"""
    point = tmp_path / "cgroup2"
    point.mkdir()
    subprocess.run(["mount", "-t", "cgroup2", "none", point], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", point], check=True)


@pytest.mark.root
def test_cgroup2_procs_events_kill(cgroup2):
    """The raw mechanics: join, populated 1, cgroup.kill, wait for populated 0 (POLLPRI)."""
    cg = cgroup2 / f"minictr-test-{uuid.uuid4().hex[:12]}"
    cg.mkdir()
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        cgroups.write(cg / "cgroup.procs", str(sleeper.pid))
        assert f"0::/{cg.name}" in Path(f"/proc/{sleeper.pid}/cgroup").read_text()
        assert "populated 1" in (cg / "cgroup.events").read_text()
        cgroups.write(cg / "cgroup.kill", "1")
        cgroups.wait_until_empty(cg / "cgroup.events")
        assert "populated 0" in (cg / "cgroup.events").read_text()
        assert sleeper.wait(timeout=scaled(10)) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()
        cg.rmdir()


@pytest.mark.root
def test_v2_backend_on_cgroup2(cgroup2):
    """The v2 backend end to end on a real cgroup2: create, join, stats, remove."""
    cg = V2Cgroup(f"test-{uuid.uuid4().hex[:12]}", cgroup2)
    cg.create()
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        cg.move_in(sleeper.pid)
        assert cg.procs() == {sleeper.pid}
        assert cg.stats().cpu_ns is not None  # cpu.stat's usage: in every v2 cgroup
        cg.remove()  # cgroup.kill, populated 0, rmdir, and minictr/ when empty
        assert sleeper.wait(timeout=scaled(10)) == -signal.SIGKILL
        assert not cg.path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        if cg.path.exists():
            cg.remove()


# --- only on a cgroup v2 host (the Vagrant box) ---------------------------------------------


@pytest.mark.root
@pytest.mark.v2_host
def test_v2_host_limits_and_no_internal_processes(minictr, minictr_root):
    proc = start("run", "--name", "v2", "-i", "--memory", "64m", "--pids-limit", "32",
                 "--cpus", "0.5", "busybox", "sh", "-c", SAY_CGROUP_AND_WAIT)
    assert read_line(proc) == "0::/ ready"
    cid = state_of(minictr_root, "v2")["id"]
    try:
        cg = Path("/sys/fs/cgroup/minictr", cid)
        assert (cg / "memory.max").read_text() == "67108864\n"
        if (cg / "memory.swap.max").exists():
            assert (cg / "memory.swap.max").read_text() == "0\n"
        assert (cg / "pids.max").read_text() == "32\n"
        assert (cg / "cpu.max").read_text() == "50000 100000\n"
        for parent in (Path("/sys/fs/cgroup"), cg.parent):
            assert {"memory", "pids", "cpu"} <= set(
                (parent / "cgroup.subtree_control").read_text().split())
        assert (cg.parent / "cgroup.procs").read_text() == ""  # processes only in minictr/ID
    finally:
        proc.communicate("\n", timeout=scaled(30))
    assert proc.returncode == 0
    assert not (Path("/sys/fs/cgroup/minictr") / cid).exists()


@pytest.mark.root
@pytest.mark.v2_host
def test_v2_host_oom_is_read_from_memory_events(minictr, minictr_root):
    r = minictr("run", "--name", "hog2", "--memory", "16m", "busybox", "sh", "-c",
                "exec tail /dev/zero")
    assert r.returncode == 137 and "killed: out of memory (limit 16 MiB)" in r.stderr
    assert state_of(minictr_root, "hog2")["cgroup"]["version"] == 2


@pytest.mark.root
def test_a_process_moves_itself_in_and_out(cgroup2):
    """move_in() and move_out(), as the shim uses them: "0" moves the writer. On v2 (here, a
    private cgroup2) cgroup.procs; on a v1 host, also the real v1 trees, through `tasks`."""
    backends = [V2Cgroup(f"test-{uuid.uuid4().hex[:12]}", cgroup2)]
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():  # a v1 host: its trees too
        backends.append(cgroups.backend(f"test-{uuid.uuid4().hex[:12]}"))
    for cg in backends:
        cg.create()
        try:
            back = cg.runtime_cgroups()
            reader, writer = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child moves itself in, then back; says who is in, each time
                code = 1
                try:
                    cg.move_in()
                    os.write(writer, f"{sorted(cg.procs())}\n".encode())
                    cg.move_out(back)
                    os.write(writer, f"{sorted(cg.procs())}\n".encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(writer)
            with os.fdopen(reader) as r:
                inside, after = r.readline().strip(), r.readline().strip()
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert (inside, after) == (f"[{pid}]", "[]"), cg.version
        finally:
            cg.remove()
        assert cg.self_file == ("tasks" if cg.version == 1 else "cgroup.procs")


# --- the freezer: commit pauses a running container (cgroups.freezer) -----------------------

# Writes a counter to /n as fast as it can; SIGTERM (forwarded by the runtime) ends it with 7.
BUSY = "trap 'exit 7' TERM; echo ready; i=0; while :; do i=$((i+1)); echo $i > /n; done"


def start_commit(minictr_root: Path, fail_at: str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "minictr", "commit", *flags, "busy", "snap"],
        env={**os.environ, "MINICTR_ROOT": str(minictr_root), "MINICTR_FAIL_AT": fail_at},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def busy_container(minictr: Callable[..., subprocess.CompletedProcess[str]],
                   minictr_root: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The BUSY container, running; at the end SIGTERM to the runtime, which passes it on
    (thawed first: a container left frozen would never end), then `rm`. A failing test
    ends it too: the leak fixture would report the failure twice otherwise."""
    proc = start("run", "--name", "busy", "busybox", "sh", "-c", BUSY)
    assert read_line(proc) == "ready"
    cid = state_of(minictr_root, "busy")["id"]
    try:
        yield proc, cid
    finally:
        cgroups.backend(cid).thaw()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=scaled(30))
        minictr("rm", "busy")
    assert proc.returncode == 7, err


@pytest.mark.root
@pytest.mark.parametrize("pause", ["--pause=true", "--pause=false"])
def test_commit_freezes_a_running_container_while_it_reads_its_upper(minictr, minictr_root,
                                                                     pause):
    """Stopped in the middle of reading the upper (MINICTR_FAIL_AT=...:stop), the commit has
    the container frozen: its counter does not move, and the layer holds it as it stood.
    Then it is thawed, and goes on. --pause=false, as Docker's, leaves it running."""
    with busy_container(minictr, minictr_root) as (_, cid):
        counter = minictr_root / "containers" / cid / "upper" / "n"
        commit = start_commit(minictr_root, "minictr.images.archive.commit:stop", pause)
        try:
            _, status = os.waitpid(commit.pid, os.WUNTRACED)
            assert os.WIFSTOPPED(status)
            cg = cgroups.backend(cid)
            if pause == "--pause=true":
                assert cg.is_frozen()
                before = counter.read_text()
                minictr("ps", check=True)  # 100 ms or so: a running loop counts thousands
                assert counter.read_text() == before
            else:
                assert not cg.is_frozen()
        finally:
            os.kill(commit.pid, signal.SIGCONT)
        _, err = commit.communicate(timeout=scaled(60))
        # --pause=false reads /n as it changes: it may shrink under the reader (tar pads it)
        assert commit.returncode == 0, err
        assert not cgroups.backend(cid).is_frozen()
    if pause == "--pause=true":  # the layer is that one moment: the counter as it stood
        # (maybe empty: a freeze stops `echo $i > /n` anywhere, its truncate done or not)
        r = minictr("run", "--rm", "snap", "cat", "/n", check=True)
        assert r.stdout == before
    minictr("rmi", "snap", check=True)


@pytest.mark.root
def test_prune_thaws_a_container_whose_commit_was_killed(minictr, minictr_root):
    """A commit SIGKILLed while the container is frozen cannot thaw it; its pause lock is
    free then, and prune thaws the container (it is running: prune leaves it running)."""
    with busy_container(minictr, minictr_root) as (_, cid):
        commit = start_commit(minictr_root, "minictr.images.archive.commit:kill")
        commit.communicate(timeout=scaled(60))
        assert commit.returncode == -signal.SIGKILL
        assert cgroups.backend(cid).is_frozen()
        r = minictr("prune", check=True)
        assert f"thawed {cid}" in r.stdout, r.stdout
        assert not cgroups.backend(cid).is_frozen()
        assert not (cgroups.OWNERS / f"{cid}.paused").exists()


@pytest.mark.root
def test_v2_freeze_and_thaw_on_cgroup2(cgroup2):
    """v2's freezer for real on every host: cgroup.freeze, "frozen 1" in cgroup.events
    (waited for by POLLPRI), the process stopped, then thawed and killed while frozen."""
    cg = V2Cgroup(f"test-{uuid.uuid4().hex[:12]}", cgroup2)
    cg.create()
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        cg.move_in(sleeper.pid)
        assert cg.freeze() and cg.is_frozen()
        assert "frozen 1" in (cg.path / "cgroup.events").read_text()
        cg.thaw()
        assert not cg.is_frozen()
        assert cg.freeze()
        cg.remove()  # cgroup.kill reaches a frozen process
        assert sleeper.wait(timeout=scaled(10)) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()
        if cg.path.exists():
            cg.remove()
