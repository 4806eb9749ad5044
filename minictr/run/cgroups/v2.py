"""cgroup v2: one tree at /sys/fs/cgroup; a container's cgroup is /sys/fs/cgroup/minictr/ID.

    memory.max        --memory, in bytes
    memory.swap.max   0: no swap beyond the memory limit (Docker's default gives as much again);
                      the file exists only with swap accounting
    pids.max          --pids-limit
    cpu.max           --cpus, as "QUOTA PERIOD" in µs: --cpus 0.5 is "50000 100000"

A controller works in a cgroup only when its parent lists it in cgroup.subtree_control, and
so on up from the root. minictr writes "+memory +pids +cpu" (those the host has) to the root's
and to minictr/'s. The "no internal processes" rule: a cgroup that hands controllers to its
children holds no processes itself (the root excepted). So minictr/ never holds any: the
processes are in minictr/ID, which hands nothing down.

Removal: cgroup.kill (kernel 5.14) SIGKILLs everything in the cgroup at once, forks in
flight included; cgroup.events then says "populated 0", and rmdir works.

Freezing (`commit`): "1" in cgroup.freeze (kernel 5.2) stops every process of the cgroup;
cgroup.events says "frozen 1" once all are stopped. A frozen process still dies of SIGKILL,
so removal needs no thaw first (v1 does).

Plain reads and writes: cgroupspy knows only v1.
See: Documentation/admin-guide/cgroup-v2.rst
"""

from __future__ import annotations

import contextlib
from pathlib import Path

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
    wait_for_event,
    wait_until_empty,
    write,
)
from minictr.spec import Limits

CONTROLLERS = ("memory", "pids", "cpu")


class V2Cgroup(Cgroup):
    version = 2

    def __init__(self, cid: str, root: Path = ROOT) -> None:
        super().__init__(cid, root)
        self.parent = root / PARENT
        self.path = self.parent / cid

    @property
    def dirs(self) -> list[Path]:
        return [self.path]

    def available(self) -> list[str]:
        """The controllers of ours the root can hand down (its cgroup.controllers)."""
        have = (self.root / "cgroup.controllers").read_text().split()
        return [c for c in CONTROLLERS if c in have]

    def runtime_cgroups(self) -> list[Path]:
        return [self.root / own_cgroups()[""].lstrip("/")]

    def check(self, limits: Limits) -> None:
        have = self.available()
        for flag, field, controller in NEEDS:
            if getattr(limits, field) is not None and controller not in have:
                raise missing_controller(flag, controller, str(self.root / "cgroup.controllers"),
                                         2)

    def create(self) -> None:
        wanted = self.available()  # all of them, limits or not: stats reads their counters
        for attempt in range(3):
            try:
                self.parent.mkdir(exist_ok=True)
                self._enable(self.root, wanted)
                self._enable(self.parent, wanted)
                self.path.mkdir()
                return
            except FileNotFoundError:
                # another container's exit removed the empty minictr/ meanwhile
                if attempt == 2:
                    raise

    @staticmethod
    def _enable(directory: Path, controllers: list[str]) -> None:
        """Hand controllers down to the children of ``directory`` (those not yet handed)."""
        control = directory / "cgroup.subtree_control"
        on = control.read_text().split()
        if missing := [c for c in controllers if c not in on]:
            write(control, " ".join(f"+{c}" for c in missing))

    def shell_create(self) -> str:
        lines = [f"mkdir -p {self.parent}"]
        if enable := " ".join(f"+{c}" for c in self.available()):
            lines += [f"echo '{enable}' > {d}/cgroup.subtree_control"
                      for d in (self.root, self.parent)]
        return "\n".join([*lines, f"mkdir {self.path}"])

    def settings(self, limits: Limits) -> list[Setting]:
        s = []
        if limits.memory is not None:
            s.append(Setting(self.path / "memory.max", str(limits.memory)))
            if (self.path / "memory.swap.max").exists():  # only with swap accounting
                s.append(Setting(self.path / "memory.swap.max", "0"))
        if limits.pids is not None:
            s.append(Setting(self.path / "pids.max", str(limits.pids)))
        if limits.cpus is not None:
            s.append(Setting(self.path / "cpu.max",
                             f"{cpu_quota_us(limits.cpus)} {CPU_PERIOD_US}"))
        return s

    def apply(self, limits: Limits) -> None:
        for s in self.settings(limits):
            write(s.file, s.value)

    def stats(self) -> Stats:
        p = self.path
        memory_events = read_keyed(p / "memory.events")
        cpu = read_keyed(p / "cpu.stat")  # cpu.stat's usage is there even without cpu
        usage_us = cpu.get("usage_usec")
        return Stats(
            memory=read_int(p / "memory.current"),
            memory_peak=read_int(p / "memory.peak"),  # kernel 5.19 and later
            memory_hits=memory_events.get("max"),
            oom_kills=memory_events.get("oom_kill"),
            pids=read_int(p / "pids.current"),
            pids_peak=read_int(p / "pids.peak"),  # kernel 6.13 and later
            forks_refused=read_keyed(p / "pids.events").get("max"),
            cpu_ns=None if usage_us is None else usage_us * 1000,
            throttled=cpu.get("nr_throttled"),
        )

    def counter_files(self) -> list[Path]:
        return [self.path / f for f in ("memory.peak", "memory.events", "pids.peak",
                                        "pids.events", "cpu.stat")]

    def shell_remove(self) -> str:
        return f"echo 1 > {self.path}/cgroup.kill\nrmdir {self.path}"

    def remove(self) -> None:
        if self.path.is_dir():
            kill = self.path / "cgroup.kill"
            if kill.exists():
                write(kill, "1")
            else:  # before kernel 5.14: one by one, as on v1
                kill_all(self)
            wait_until_empty(self.path / "cgroup.events")
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile (prune)
                self.path.rmdir()
        rmdir_if_empty(self.parent)

    def freeze(self) -> bool:
        """Shell: echo 1 > cgroup.freeze; then cgroup.events says "frozen 1"."""
        control = self.path / "cgroup.freeze"
        if not control.exists():  # the root of the tree has none; kernels before 5.2 neither
            raise StepError("pause the container", f"{control} does not exist",
                            hint="this kernel cannot freeze a cgroup v2 (5.2 or later can); "
                            "commit with --pause=false")
        write(control, "1")
        if wait_for_event(self.path / "cgroup.events", b"frozen 1", FREEZE_TIMEOUT):
            return True
        self.thaw()
        return False

    def thaw(self) -> None:
        write(self.path / "cgroup.freeze", "0")

    def is_frozen(self) -> bool:
        return read_keyed(self.path / "cgroup.events").get("frozen") == 1

    def shell_freeze(self) -> str:
        return (f"echo 1 > {self.path}/cgroup.freeze\n"
                f"grep 'frozen 1' {self.path}/cgroup.events  (once all have stopped)")

    def shell_thaw(self) -> str:
        return f"echo 0 > {self.path}/cgroup.freeze"
