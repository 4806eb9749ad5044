"""cgroups: a container's limits, what it used, and why it died (tutorial chapter 08).

A cgroup is a directory of a filesystem the kernel makes. mkdir creates one; writing a pid to
its ``cgroup.procs`` moves that process (and its future children) in; writing a number to one
of its files sets a limit; reading others says what its processes used; rmdir removes it once
it is empty.  See: cgroups(7), Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/.

A host gives these controllers through one of two interfaces, and minictr has a backend for each:

    v2, unified (Ubuntu 24.04: the Vagrant box)         /sys/fs/cgroup/cgroup.controllers exists
        one tree: a container is /sys/fs/cgroup/minictr/ID           memory.max pids.max cpu.max
    v1, or hybrid (v1 controllers, and a cgroup2 at /sys/fs/cgroup/unified without them)
        a tree per controller: /sys/fs/cgroup/{memory,pids,cpu,cpuacct,freezer}/minictr/ID
                                       memory.limit_in_bytes pids.max cpu.cfs_quota_us

``Cgroup`` is the one interface (create, the files of each limit, move in and out, stats,
remove);
``v1.V1Cgroup`` and ``v2.V2Cgroup`` are the two. Every container gets a cgroup, limits or not
(as Docker does): so ``minictr stats`` works for all, and each is in its own.

When, in the recipe (``container.run``):

    for_container(id, limits)  mkdir, write the limits: nothing is in it yet
    move_shim_in(cg, ...)      in the shim, once told to go: it moves itself in, then unshares
                               CLONE_NEWCGROUP, so the container's cgroup is the root of its
                               cgroup namespace ("/" inside), and forks init: every process
                               of the container starts inside the limits, never without them
    move_shim_out(cg, ...)     once init is born, the shim (minictr's, not the container's)
                               goes back to the runtime's cgroups: the cgroup then holds the
                               container's processes only, as Docker's does
    cg.stats()                 after the exit: peak memory, OOM kills, forks refused, cpu time
    freezer.paused(id)         `commit` of a running container: frozen while its upper is read
    leaving for_container      kill what is left, rmdir (``prune`` does it after a crash)
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import select
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from minictr import explain
from minictr.errors import StepError
from minictr.explain import step
from minictr.spec import Limits
from minictr.store import hold_lock, is_locked

ROOT = Path("/sys/fs/cgroup")
# Who owns each minictr cgroup, for every MINICTR_ROOT on the host: the runtime holds
# OWNERS/<id>.lock (flock) before the cgroup exists and until it is gone. A `prune` of
# another root may call a cgroup an orphan only when nobody holds its lock: a container that
# is starting, whose cgroup is still empty, is not one. Shell: flock -n OWNERS/ID.lock
OWNERS = Path("/run/minictr/cgroups")
PARENT = "minictr"  # every container's cgroup is minictr/ID, in each tree

KIB, MIB, GIB = 1024, 1024**2, 1024**3
MIN_MEMORY = 6 * MIB  # Docker refuses less: "Minimum memory limit allowed is 6MB"
CPU_PERIOD_US = 100_000  # Docker's CFS period: --cpus 0.5 is 50000 µs of every 100000 µs
MIN_CPUS = 0.01  # the kernel's smallest quota is 1 ms a period: 1000 of 100000 µs
MIN_PIDS = 2  # the shim is in the cgroup when it forks the container's PID 1: see parse_pids
PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's ceiling for pids (and for pids.max)
GONE_TIMEOUT = 10.0  # seconds for SIGKILLed processes to leave a cgroup; they take ms
FREEZE_TIMEOUT = 10.0  # seconds for a cgroup's processes to stop; they take ms

# --memory as Docker reads it (go-units RAMInBytes): a number, a unit b, k, m or g (powers of
# 1024, as Docker's), upper or lower case, "64mb" and "64MiB" too.
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmg])i?b?|b)?", re.IGNORECASE)
_UNIT = {None: 1, "k": KIB, "m": MIB, "g": GIB}


# --- checking the flags: pure, but for what the host has -------------------------------------


def parse_limits(memory: str | None, pids: str | None, cpus: str | None) -> Limits:
    """--memory, --pids-limit and --cpus, checked: a StepError (one line, 125) if one is bad."""
    return Limits(
        memory=None if memory is None else parse_memory(memory, host_memory()),
        pids=None if pids is None else parse_pids(pids),
        cpus=None if cpus is None else parse_cpus(cpus, os.cpu_count() or 1),
    )


def parse_memory(text: str, host_bytes: int) -> int:
    """``64m`` → 67108864. At least 6 MiB (as Docker), at most the host's memory: above it the
    limit could never be reached (minictr gives no swap beyond the limit, see v1/v2)."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise StepError("check input", f"invalid --memory {text!r}",
                        hint="a number and a unit b, k, m or g, as Docker takes: 64m, 1.5g")
    n = int(float(m[1]) * _UNIT[m[2] and m[2].lower()])
    if n < MIN_MEMORY:
        raise StepError("check input", f"--memory {text} is below the minimum of 6 MiB",
                        hint="Docker refuses less too: the first processes need some memory")
    if n > host_bytes:
        raise StepError("check input", f"--memory {text} is more than this host's memory "
                        f"({size(host_bytes)})", hint="a limit it can never reach limits nothing")
    return n


def parse_pids(text: str) -> int | None:
    """A count of processes and threads; ``-1`` is no limit, as in Docker.

    It counts the container's processes, and while the container starts, minictr's shim too:
    the parent of the new PID namespace, in the cgroup from before the namespaces exist until
    it has forked PID 1 (see the module's docstring). So 2 is the least that can start.
    """
    try:
        n = int(text)
    except ValueError:
        raise StepError("check input", f"invalid --pids-limit {text!r}",
                        hint="a whole number of processes, or -1 for no limit") from None
    if n == -1:
        return None
    if n < MIN_PIDS:
        raise StepError("check input", f"--pids-limit {text} is too low",
                        hint="at least 2: minictr's shim is counted while it starts the "
                        "container's PID 1 (-1: no limit)")
    if n > PID_MAX_LIMIT:
        raise StepError("check input", f"--pids-limit {text} is more than the kernel allows",
                        hint=f"at most {PID_MAX_LIMIT} (-1: no limit)")
    return n


def parse_cpus(text: str, host_cpus: int) -> float:
    """CPUs' worth of time, as Docker's --cpus: 0.5 is half of one CPU, at most the host's."""
    try:
        n = float(text)
    except ValueError:
        n = math.nan
    if not math.isfinite(n):
        raise StepError("check input", f"invalid --cpus {text!r}",
                        hint="a number of CPUs, such as 0.5 or 1.5")
    if not MIN_CPUS <= n <= host_cpus:
        raise StepError("check input", f"--cpus {text} is out of range",
                        hint=f"from 0.01 to {host_cpus}, as this host has {host_cpus} CPUs")
    return n


def summary(limits: Limits) -> str:
    """``memory 64 MiB, pids 32, 0.5 CPU``"""
    parts = []
    if limits.memory is not None:
        parts.append(f"memory {size(limits.memory)}")
    if limits.pids is not None:
        parts.append(f"pids {limits.pids}")
    if limits.cpus is not None:
        parts.append(f"{limits.cpus:g} CPU")
    return ", ".join(parts)


def cpu_quota_us(cpus: float) -> int:
    """Microseconds of CPU time per CPU_PERIOD_US (Docker: NanoCPUs * period / 1e9)."""
    return round(cpus * CPU_PERIOD_US)


def host_memory() -> int:
    """MemTotal of /proc/meminfo, in bytes.   See: proc(5)"""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * KIB
    return 2**63 - 1


def size(n: int) -> str:
    """A size for people: exact when it is whole (64 MiB), else one decimal (60.1 MiB)."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if n >= unit:
            return f"{n // unit} {name}" if n % unit == 0 else f"{n / unit:.1f} {name}"
    return f"{n} B"


# --- what the kernel counted -----------------------------------------------------------------


class Stats(NamedTuple):
    """What the kernel counted for one cgroup; None where this host's kernel does not say.

    v2 file (v1 file), each in the container's cgroup:
    """

    memory: int | None = None  # bytes now: memory.current (memory.usage_in_bytes)
    memory_peak: int | None = None  # the most at once: memory.peak (memory.max_usage_in_bytes)
    memory_hits: int | None = None  # times it hit the limit: memory.events max (memory.failcnt)
    oom_kills: int | None = None  # memory.events oom_kill (memory.oom_control oom_kill)
    pids: int | None = None  # processes and threads now: pids.current
    pids_peak: int | None = None  # the most at once: pids.peak (kernel 6.13 and later)
    forks_refused: int | None = None  # fork/clone failed at the limit: pids.events max
    cpu_ns: int | None = None  # CPU time: cpu.stat usage_usec (cpuacct.usage, in ns)
    throttled: int | None = None  # periods the quota ran out: cpu.stat nr_throttled

    def as_dict(self) -> dict[str, int | None]:
        return self._asdict()

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Stats:
        return cls(**{name: d.get(name) for name in cls._fields})  # type: ignore[arg-type]


def why_it_ended(limits: Limits, stats: Stats, exit_code: int) -> list[str]:
    """What a limit did to the container, in a few words each; empty when nothing.

    137 is 128 + SIGKILL, the OOM killer's signal: PID 1 was killed, or (a shell) reports
    that the command it waited for was.
    """
    reasons = []
    memory = f"limit {size(limits.memory)}" if limits.memory else "no limit: the host ran out"
    if stats.oom_kills:
        if exit_code == 137:
            reasons.append(f"killed: out of memory ({memory})")
        else:
            n = stats.oom_kills
            reasons.append(f"{n} process{'es' if n > 1 else ''} killed: out of memory ({memory}); "
                           "the container went on")
    if stats.forks_refused:
        n = stats.forks_refused
        reasons.append(f"fork refused {n} time{'s' if n > 1 else ''} (pids limit {limits.pids})")
    return reasons


def describe(limits: Limits, stats: Stats, wall: float | None) -> str | None:
    """The report's ``limits:`` line: only the parts that apply, None if none does.

    memory peak 60.1 MiB of 64 MiB (1 OOM kill) · pids peak 32 of 32 (fork refused 68 times)
    · cpu 0.50 s in 1.01 s (limit 0.5 CPU, throttled 9 times)
    """
    parts = []
    if limits.memory or stats.oom_kills:
        part = f"memory peak {size(stats.memory_peak or 0)}"
        part += f" of {size(limits.memory)}" if limits.memory else ""
        if stats.oom_kills:
            part += f" ({stats.oom_kills} OOM kill{'s' if stats.oom_kills > 1 else ''})"
        parts.append(part)
    if limits.pids or stats.forks_refused:
        part = "pids" if stats.pids_peak is None else f"pids peak {stats.pids_peak}"
        part += f" of {limits.pids}" if limits.pids else ""
        if stats.forks_refused:
            n = stats.forks_refused
            part += f" (fork refused {n} time{'s' if n > 1 else ''})"
        parts.append(part)
    if limits.cpus:
        part = f"cpu {(stats.cpu_ns or 0) / 1e9:.2f} s"
        part += f" in {wall:.2f} s" if wall is not None else ""
        part += f" (limit {limits.cpus:g} CPU"
        part += f", throttled {stats.throttled} times)" if stats.throttled else ")"
        parts.append(part)
    return " · ".join(parts) or None


# --- the one interface -----------------------------------------------------------------------


class Setting(NamedTuple):
    """One limit as the kernel takes it: this value, written to this file."""

    file: Path
    value: str
    attr: str | None = None  # cgroupspy's name for the file, where it models it (v1)

    @property
    def shell(self) -> str:
        return f"echo {self.value} > {self.file}"


class Cgroup(ABC):
    """A container's cgroup: ``minictr/ID`` in the one v2 tree, or in each v1 tree."""

    version: int
    self_file = "cgroup.procs"  # where a process moves itself (v1 has a quicker one: see there)
    # Whether the shim may go back by itself, from inside its new cgroup namespace. v2 says
    # no: a process may not move to a cgroup outside its namespace's root (cgroup-v2.rst,
    # "Namespace"); the runtime then moves it (move_shim_out). v1 has no such rule (see there).
    can_move_self_out = False

    def __init__(self, cid: str, root: Path = ROOT) -> None:
        self.id = cid
        self.root = root

    @property
    @abstractmethod
    def dirs(self) -> list[Path]:
        """Its directories: one for v2, one per tree for v1."""

    @abstractmethod
    def check(self, limits: Limits) -> None:
        """Refuse (StepError) limits whose controller this host lacks, saying how to get it."""

    @abstractmethod
    def create(self) -> None:
        """mkdir it, and its shared parent minictr/ if need be."""

    @abstractmethod
    def settings(self, limits: Limits) -> list[Setting]:
        """Which file holds each limit, with which value, in the order they must be written."""

    @abstractmethod
    def apply(self, limits: Limits) -> None:
        """Write the settings."""

    @abstractmethod
    def stats(self) -> Stats:
        """Read the counters, now."""

    @abstractmethod
    def counter_files(self) -> list[Path]:
        """Where stats() reads them (for --explain)."""

    @abstractmethod
    def remove(self) -> None:
        """Kill what is still in it, wait until it is empty, rmdir it (and the shared parent
        when it is empty too). Nothing to do if it is not there."""

    @abstractmethod
    def freeze(self) -> bool:
        """Stop every process in it where it stands, and wait until all are stopped (as
        `docker pause`); False if they were not all stopped in time (it is thawed then).
        See: cgroups.freezer"""

    @abstractmethod
    def thaw(self) -> None:
        """Let its processes go on (`docker unpause`)."""

    @abstractmethod
    def is_frozen(self) -> bool:
        """Is it frozen now (a thaw left to do)?"""

    @abstractmethod
    def shell_freeze(self) -> str: ...

    @abstractmethod
    def shell_thaw(self) -> str: ...

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs)

    def procs(self) -> set[int]:
        """The processes in it (their thread group ids)."""
        pids: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return pids

    def move_file(self, pid: int) -> str:
        """The file a pid is written to: pid 0 is the writer itself (cgroup-v2.rst)."""
        return self.self_file if pid == 0 else "cgroup.procs"

    def move_in(self, pid: int = 0) -> None:
        """Move a process in (0: the caller); its children are born in it.
        Shell: echo PID > /sys/fs/cgroup/.../minictr/ID/cgroup.procs"""
        for d in self.dirs:
            write(d / self.move_file(pid), str(pid))

    def move_out(self, to: list[Path], pid: int = 0) -> None:
        """Move a process (0: the caller) to the cgroups ``to`` (runtime_cgroups)."""
        for d in to:
            write(d / self.move_file(pid), str(pid))

    @abstractmethod
    def runtime_cgroups(self) -> list[Path]:
        """The cgroups of this process, in the trees the container's cgroup is in.
        Shell: cut -d: -f3 /proc/self/cgroup"""

    def describe(self) -> dict[str, object]:
        """For state.json: the version and the directories."""
        return {"version": self.version, "paths": [str(d) for d in self.dirs]}

    def shell_create(self) -> str:
        return f"mkdir -p {self._braced('')}"

    def shell_remove(self) -> str:
        return f"rmdir {self._braced('')}"

    def _braced(self, file: str) -> str:
        """All dirs (+ file) as one path with a {a,b,c} brace, as bash would expand it."""
        names = [d.parent.parent.name for d in self.dirs]
        file = f"/{file}" if file else ""
        if len(names) == 1:
            return f"{self.dirs[0]}{file}"
        return f"{self.root}/{{{','.join(names)}}}/{PARENT}/{self.id}{file}"


def backend(cid: str, root: Path = ROOT) -> Cgroup:
    """The host's kind: v2 if ROOT is the unified tree (it has cgroup.controllers), else v1.

    Imported only here: cgroupspy (v1's library) costs a v2 host nothing.
    """
    if (root / "cgroup.controllers").exists():
        from minictr.run.cgroups.v2 import V2Cgroup

        return V2Cgroup(cid, root)
    from minictr.run.cgroups.v1 import V1Cgroup

    return V1Cgroup(cid, root)


# --- the steps of the recipe -----------------------------------------------------------------


@contextmanager
def for_container(cid: str, limits: Limits, root: Path = ROOT) -> Iterator[Cgroup]:
    """The container's cgroup, with its limits, for as long as the block runs; then removed.

    Nothing is created if a limit's controller is missing: the check comes first.
    """
    cg = backend(cid, root)
    explain.define("ID", cid)
    cg.check(limits)
    owner = own(cid)
    try:
        with step(f"create the container's cgroup (cgroup v{cg.version})", cg.shell_create(),
                  why="before any process of the container exists, so that none runs "
                  "outside it, unlimited or uncounted"):
            cg.create()  # if it fails half way (one v1 tree made), the finally removes that
        if limits:
            with step(f"set its limits: {summary(limits)}",
                      "\n".join(s.shell for s in cg.settings(limits)),
                      why="while the cgroup is still empty: its first process already runs "
                      "within them"):
                cg.apply(limits)
        yield cg
    finally:
        try:
            with step("kill what is left in the cgroup, and remove it", cg.shell_remove(),
                      why="a process the command left (a daemon, a child) would live on after "
                      "it; rmdir needs an empty cgroup"):
                cg.remove()
        finally:
            (OWNERS / f"{cid}.lock").unlink(missing_ok=True)
            os.close(owner)


def own(cid: str) -> int:
    """Take OWNERS/<id>.lock; the fd that holds it. A prune may unlink a lock file it found
    free in the moment between our open and our flock: then ours is not the file at the
    path any more, and we take it again. Shell: flock -n /run/minictr/cgroups/ID.lock"""
    OWNERS.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = OWNERS / f"{cid}.lock"
    while True:
        fd = hold_lock(path)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


def move_shim_in(cg: Cgroup, runtime_cgroups: list[Path]) -> None:
    """In the shim, before it unshares and forks: the container starts inside its cgroup, and
    that cgroup is the root of its cgroup namespace.  See: cgroup_namespaces(7)
    The shim moves itself ("0"); once init is born it goes back (move_shim_out)."""
    who, pid = ("it moves itself", 0) if cg.can_move_self_out else ("minictr moves it", os.getpid())
    back = [f"# once it has forked init, {who} back:",
            *(f"# echo {pid} > {d}/{cg.move_file(pid)}" for d in runtime_cgroups)]
    with step("move the shim into the cgroup, before it makes the namespaces",
              "\n".join([*(f"echo 0 > {d}/{cg.move_file(0)}" for d in cg.dirs), *back]),
              why="before it forks the init, so that the init is born inside the limits and "
              "sees its cgroup as / (the cgroup namespace is made next)"):
        try:
            cg.move_in()
        except OSError as e:
            raise StepError.from_os_error("move the shim into the container's cgroup", e) from e


def move_shim_out(cg: Cgroup, runtime_cgroups: list[Path], shim_pid: int = 0) -> bool:
    """Once init is born: the shim, minictr's and not the container's, goes back to the
    runtime's cgroups, so that the cgroup holds the container's processes only. With
    ``shim_pid`` 0 the shim moves itself, if it may (v1); else the runtime moves it (v2,
    --userns). Returns whether it moved (False: it may not move itself; or it has exited,
    because init failed, which says why).

    That matters for memory: the shim is a fork of this Python runtime, and the OOM killer
    weighs every page a process has resident, shared with us or not; left in a small memory
    cgroup it could be chosen over the command that used the memory, and the whole container
    would die with it. Not a `step`, and silent: it happens while init explains its own
    steps (move_shim_in's step shows it, in its shell lines).
    """
    if shim_pid == 0 and not cg.can_move_self_out:
        return False
    try:
        cg.move_out(runtime_cgroups, shim_pid)
        return True
    except ProcessLookupError:
        return False
    except OSError as e:
        raise StepError.from_os_error("move the shim out of the container's cgroup", e) from e


def own_cgroups() -> dict[str, str]:
    """This process's cgroup in each tree, from /proc/self/cgroup: ``ID:CONTROLLERS:PATH``
    lines; v2's is ``0::PATH``, under the key "".  See: cgroups(7)"""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def remove_leftover(cid: str, root: Path = ROOT) -> list[str]:
    """For prune: remove the cgroup of a container no runtime holds, if it is still there."""
    cg = backend(cid, root)
    if not cg.exists():
        return []
    with step("remove a leftover cgroup", cg.shell_remove()):
        cg.remove()
    return [f"cgroup {d}" for d in cg.dirs]


def remove_empty_orphans(known: set[str], root: Path = ROOT) -> list[str]:
    """For prune: cgroups under minictr/ whose container is gone from this store and that
    hold no process (so they belong to no live container of any store): rmdir them."""
    ids: set[str] = set()
    for d in backend("x", root).dirs:
        # The shared minictr/ goes when its last container exits, at any moment.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            ids |= {child.name for child in d.parent.iterdir() if child.is_dir()}
    removed = []
    for cid in sorted(ids - known):
        cg = backend(cid, root)
        if cg.exists() and not cg.procs() and not is_locked(OWNERS / f"{cid}.lock"):
            removed += remove_leftover(cid, root)
    for lock in OWNERS.glob("*.lock") if OWNERS.is_dir() else ():
        if not is_locked(lock):  # its runtime was killed
            lock.unlink(missing_ok=True)
    return removed


def live_stats(cid: str, root: Path = ROOT) -> Stats | None:
    """The counters of a running container's cgroup, None if it is gone."""
    cg = backend(cid, root)
    return cg.stats() if cg.exists() else None


# Each limit: its flag, its Limits field, the controller it needs.
NEEDS = (("--memory", "memory", "memory"), ("--pids-limit", "pids", "pids"),
         ("--cpus", "cpus", "cpu"))


def missing_controller(flag: str, controller: str, where: str, version: int) -> StepError:
    """The error for a limit whose controller this host lacks, with how to get it, as far as
    /proc/cgroups tells (name, hierarchy, number of cgroups, enabled).  See: cgroups(7)"""
    known: dict[str, tuple[int, bool]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
            name, hierarchy, _, enabled = line.split()
            known[name] = (int(hierarchy), enabled == "1")
    hierarchy, enabled = known.get(controller, (0, False))
    if controller not in known:
        hint = "this kernel was built without it"
    elif not enabled:
        hint = f"it is off: remove cgroup_disable={controller} from the kernel command line"
    elif version == 1:
        hint = (f"mount its tree: mkdir -p {where} && "
                f"mount -t cgroup -o {controller} cgroup {where}")
    elif hierarchy != 0:
        hint = ("a cgroup v1 tree has it, and a controller is in one tree only: boot with "
                f"cgroup_no_v1={controller} (or systemd.unified_cgroup_hierarchy=1)")
    else:
        hint = f"it is not in {where}: is the kernel too old for it?"
    return StepError("check the host's cgroups",
                     f"{flag} needs the {controller} controller, which this host's cgroup v"
                     f"{version} lacks ({where})", hint=hint)


# --- files, processes, and the wait for an empty cgroup --------------------------------------


def write(path: Path, value: str) -> None:
    """One write(2), as ``echo VALUE > PATH`` does: the kernel takes or refuses it whole."""
    with open(path, "w") as f:
        f.write(value)


def read_int(path: Path) -> int | None:
    """A one-number file; None if missing (an older kernel, a controller not there)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return None if text in ("", "max") else int(text)


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file (``key value`` lines: memory.events, cpu.stat); {} if missing."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {k: int(v) for k, v in (line.split() for line in lines if line.strip())}


def kill_and_wait(pids: set[int], timeout: float = GONE_TIMEOUT) -> None:
    """SIGKILL each process, then wait until each has exited. A pidfd names the very process
    (not a later one with its pid) and becomes readable when it exits.  See: pidfd_open(2)"""
    fds = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            continue
        fds.append(fd)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    try:
        deadline = time.monotonic() + timeout
        for fd in fds:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        for fd in fds:
            os.close(fd)


def kill_all(cg: Cgroup, rounds: int = 100) -> None:
    """Kill every process in the cgroup, again while new ones appear (a fork between our read
    of cgroup.procs and the kill). v2 has cgroup.kill for this, atomically; v1 has not."""
    for _ in range(rounds):
        pids = cg.procs()
        if not pids:
            return
        kill_and_wait(pids)
    raise StepError("remove the container's cgroup", "its processes keep coming back",
                    hint=f"look at {cg.dirs[0]}/cgroup.procs; minictr prune tries again")


def wait_until_empty(events: Path, timeout: float = GONE_TIMEOUT) -> None:
    """Wait for ``populated 0`` in a v2 cgroup.events (its SIGKILLed processes are gone)."""
    if not wait_for_event(events, b"populated 0", timeout):
        raise StepError("remove the container's cgroup", f"{events.parent} is not "
                        "empty after SIGKILL", errno=errno.EBUSY,
                        hint="a process stuck in the kernel (state D)? minictr prune "
                        "tries again")


def wait_for_event(events: Path, line: bytes, timeout: float) -> bool:
    """Wait, without a sleep loop, until a v2 cgroup.events has ``line`` (``populated 0``,
    ``frozen 1``); False if it has not within ``timeout`` seconds.

    The kernel signals every change of that file to poll(2) as POLLPRI: read it (which also
    resets the signal), and if the line is not there yet, poll until it changes.
    See: Documentation/admin-guide/cgroup-v2.rst, "cgroup.events"; kernfs_generic_poll
    """
    deadline = time.monotonic() + timeout
    with open(events, "rb", buffering=0) as f:
        poller = select.poll()
        poller.register(f, select.POLLPRI)
        while line not in f.read().splitlines():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(left * 1000)
            f.seek(0)
    return True


def rmdir_if_empty(path: Path) -> None:
    """rmdir the shared parent minictr/ when no container is in it. Another container's cgroup
    in it makes rmdir fail (EBUSY on v1, ENOTEMPTY on v2), and that is the answer."""
    try:
        path.rmdir()
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT):
            raise
