"""cgroup v1: a tree per controller, each mounted at /sys/fs/cgroup/<controller>.

A container's cgroup is minictr/ID in each of the trees this host has:

    /sys/fs/cgroup/memory/minictr/ID    memory.limit_in_bytes, memory.memsw.limit_in_bytes
    /sys/fs/cgroup/pids/minictr/ID      pids.max
    /sys/fs/cgroup/cpu/minictr/ID       cpu.cfs_period_us, cpu.cfs_quota_us
    /sys/fs/cgroup/cpuacct/minictr/ID   no limit: cpuacct.usage counts the CPU time
    /sys/fs/cgroup/freezer/minictr/ID   no limit: freezer.state FROZEN stops it (commit)

Where cpu and cpuacct share one tree, both names are links to /sys/fs/cgroup/cpu,cpuacct and
the two paths are one directory: the second mkdir finds it made, the second rmdir finds it gone.

cgroupspy models the files of memory, cpu and cpuacct: its controller for a directory has an
attribute per file (``controller.limit_in_bytes = n`` writes memory.limit_in_bytes, and
``controller.oom_control`` reads memory.oom_control as a dict). It has no pids controller,
so pids.* are plain reads and writes, and mkdir and rmdir are plain too. Only its
``controllers`` module is used: its tree of Nodes imports ``logging`` (never used), about
5 ms of every run on a v1 host. It is imported here only, so a v2 host never pays for it.

Swap: memory.memsw.limit_in_bytes (memory + swap) gets the memory limit too, so the limit is
real: nothing spills into swap (Docker's default gives as much swap again). The file exists
only with swap accounting (swapaccount=1); without it, only the memory limit is set.

The freezer: "FROZEN" written to freezer.state stops the processes; reading it says
FREEZING until all are stopped, then FROZEN. The kernel gives no notice of the change (v2's
cgroup.events has one), so it is read again, at growing intervals, and FROZEN written again
(a process forked meanwhile is caught too), as runc does. A frozen v1 process does not die of
SIGKILL until it is thawed: removal thaws first.

See: Documentation/admin-guide/cgroup-v1/memory.rst, pids.rst, cpuacct.rst,
     freezer-subsystem.rst, and
     Documentation/scheduler/sched-bwc.rst for cfs_period_us and cfs_quota_us
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minictr.errors import StepError
from minictr.run.cgroups import (
    CPU_PERIOD_US,
    FREEZE_TIMEOUT,
    NEEDS,
    PARENT,
    ROOT,
    Cgroup,
    Setting,
    Stats,
    cpu_quota_us,
    kill_all,
    missing_controller,
    own_cgroups,
    read_int,
    read_keyed,
    rmdir_if_empty,
    write,
)
from minictr.spec import Limits

if TYPE_CHECKING:
    from cgroupspy.controllers import Controller

TREES = ("memory", "pids", "cpu", "cpuacct", "freezer")


class _Directory:
    """What a cgroupspy controller needs of its node: the directory, as bytes."""

    def __init__(self, path: Path) -> None:
        self.full_path = os.fsencode(path)


class V1Cgroup(Cgroup):
    version = 1

    def __init__(self, cid: str, root: Path = ROOT) -> None:
        super().__init__(cid, root)
        # The trees this host has mounted, by the names Debian and Ubuntu give them.
        self.trees = [t for t in TREES if (root / t / "cgroup.procs").exists()]

    @property
    def dirs(self) -> list[Path]:
        return [self.dir(t) for t in self.trees]

    def dir(self, tree: str) -> Path:
        return self.root / tree / PARENT / self.id

    def controller(self, tree: str) -> Controller | None:
        """cgroupspy's controller of minictr/ID in one tree; None for pids, not modelled."""
        from cgroupspy import controllers

        kinds = {"memory": controllers.MemoryController, "cpu": controllers.CpuController,
                 "cpuacct": controllers.CpuAcctController}
        return kinds[tree](_Directory(self.dir(tree))) if tree in kinds else None

    # move_in() writes "0" to each tree's `tasks` (threads), not to cgroup.procs: the calling
    # thread moves itself. The shim has only one thread, so the whole process moves, and the
    # kernel then skips the lock that moving any other process takes (cgroup_threadgroup_rwsem,
    # whose write side waits for an RCU grace period: 10-20 ms on the bench's machine, 0.5 ms
    # without it). See cgroup_procs_write_start() in kernel/cgroup/cgroup.c (Linux 6.0+: "If
    # we migrate a single thread ... that is current, we can skip the global lock").
    self_file = "tasks"

    # The shim may go back by itself from inside its new cgroup namespace: v1 does not check
    # the namespace's root (only v2 does, in cgroup_procs_write_permission). Lock-free again.
    can_move_self_out = True

    def runtime_cgroups(self) -> list[Path]:
        own = own_cgroups()
        return [self.root / t / own[t].lstrip("/") for t in self.trees if t in own]

    def check(self, limits: Limits) -> None:
        for flag, field, controller in NEEDS:
            if getattr(limits, field) is not None and controller not in self.trees:
                raise missing_controller(flag, controller, str(self.root / controller), 1)

    def create(self) -> None:
        for tree in self.trees:
            for attempt in range(3):
                with contextlib.suppress(FileExistsError):  # made already is fine
                    (self.root / tree / PARENT).mkdir()
                try:
                    self.dir(tree).mkdir()
                    break
                except FileNotFoundError:
                    # another container's exit removed the empty minictr/ between the mkdirs
                    if attempt == 2:
                        raise

    def settings(self, limits: Limits) -> list[Setting]:
        s = []
        if limits.memory is not None:
            memory = self.dir("memory")
            s.append(Setting(memory / "memory.limit_in_bytes", str(limits.memory),
                             "limit_in_bytes"))
            # memory + swap, after memory (the kernel wants memsw >= memory): no swap beyond
            if (self.root / "memory" / "memory.memsw.limit_in_bytes").exists():
                s.append(Setting(memory / "memory.memsw.limit_in_bytes", str(limits.memory),
                                 "memsw_limit_in_bytes"))
        if limits.pids is not None:
            s.append(Setting(self.dir("pids") / "pids.max", str(limits.pids)))
        if limits.cpus is not None:
            cpu = self.dir("cpu")
            s.append(Setting(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US), "cfs_period_us"))
            s.append(Setting(cpu / "cpu.cfs_quota_us", str(cpu_quota_us(limits.cpus)),
                             "cfs_quota_us"))
        return s

    def apply(self, limits: Limits) -> None:
        controllers = {self.dir(t): self.controller(t) for t in self.trees}
        for s in self.settings(limits):
            controller = controllers[s.file.parent]
            if s.attr and controller is not None:
                setattr(controller, s.attr, int(s.value))  # cgroupspy writes s.file
            else:
                write(s.file, s.value)  # pids: not in cgroupspy

    def _get(self, tree: str, attr: str) -> Any:
        """A cgroupspy controller attribute of this cgroup (reads its file); None if absent."""
        if tree not in self.trees:
            return None
        try:
            return getattr(self.controller(tree), attr)
        except FileNotFoundError:
            return None

    def stats(self) -> Stats:
        pids = self.dir("pids")
        have_pids = "pids" in self.trees
        return Stats(
            memory=self._get("memory", "usage_in_bytes"),  # memory.usage_in_bytes
            memory_peak=self._get("memory", "max_usage_in_bytes"),  # memory.max_usage_in_bytes
            memory_hits=self._get("memory", "failcnt"),  # memory.failcnt
            oom_kills=(self._get("memory", "oom_control") or {}).get("oom_kill"),
            pids=read_int(pids / "pids.current") if have_pids else None,
            pids_peak=read_int(pids / "pids.peak") if have_pids else None,
            forks_refused=read_keyed(pids / "pids.events").get("max") if have_pids else None,
            cpu_ns=self._get("cpuacct", "usage"),  # cpuacct.usage, in ns
            throttled=(self._get("cpu", "stat") or {}).get("nr_throttled"),  # cpu.stat
        )

    def counter_files(self) -> list[Path]:
        files = {"memory": ["memory.max_usage_in_bytes", "memory.failcnt", "memory.oom_control"],
                 "pids": ["pids.peak", "pids.events"], "cpu": ["cpu.stat"],
                 "cpuacct": ["cpuacct.usage"], "freezer": []}
        return [self.dir(t) / f for t in self.trees for f in files[t]]

    def remove(self) -> None:
        """v1 has no cgroup.kill: SIGKILL each process in cgroup.procs until none is left,
        then rmdir in every tree. Thawed first: a frozen process would never die."""
        if "freezer" in self.trees and self.dir("freezer").is_dir():
            self.thaw()
        kill_all(self)
        for tree in self.trees:
            with contextlib.suppress(FileNotFoundError):  # gone already (prune, cpu,cpuacct)
                self.dir(tree).rmdir()
            rmdir_if_empty(self.root / tree / PARENT)

    def _freezer_state(self) -> Path:
        if "freezer" not in self.trees:
            raise StepError("pause the container", f"{self.root}/freezer is not mounted",
                            hint="mount the v1 freezer tree, or commit with --pause=false")
        return self.dir("freezer") / "freezer.state"

    def freeze(self) -> bool:
        """Shell: echo FROZEN > freezer.state; read it until it says FROZEN."""
        state = self._freezer_state()
        deadline, wait = time.monotonic() + FREEZE_TIMEOUT, 0.0001
        while time.monotonic() < deadline:
            write(state, "FROZEN")
            if state.read_text().strip() == "FROZEN":
                return True
            time.sleep(wait)  # FREEZING: no notice comes (see the module's docstring)
            wait = min(wait * 2, 0.01)
        self.thaw()
        return False

    def thaw(self) -> None:
        write(self._freezer_state(), "THAWED")

    def is_frozen(self) -> bool:
        try:
            return self._freezer_state().read_text().strip() != "THAWED"
        except (StepError, FileNotFoundError):
            return False

    def shell_remove(self) -> str:
        """What remove() does, line for line: thaw, kill each process until none is left
        (v1 has no cgroup.kill), rmdir in every tree."""
        procs = self.dirs[0] / "cgroup.procs"
        thaw = ([f"echo THAWED > {self.dir('freezer')}/freezer.state"]
                if "freezer" in self.trees else [])
        return "\n".join([*thaw,
                          f"while [ -s {procs} ]; do kill -9 $(cat {procs}); done",
                          f"rmdir {self._braced('')}"])

    def shell_freeze(self) -> str:
        state = self.dir("freezer") / "freezer.state"
        return f"echo FROZEN > {state}\ncat {state}  (FREEZING, then FROZEN)"

    def shell_thaw(self) -> str:
        return f"echo THAWED > {self.dir('freezer')}/freezer.state"
