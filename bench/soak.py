"""Does minictr leave anything behind when it runs, and is killed, over and over, while prune,
rm, commit and rmi race it, in one MINICTR_ROOT and in two?

    sudo .venv/bin/python bench/soak.py                  # 500 runs, then 2 × 20 workers × 20
    sudo .venv/bin/python bench/soak.py --write          # ... and update bench/README.md
    sudo .venv/bin/python bench/soak.py --sequential 20 --workers 4 --per-worker 5   # quick

    1 two fresh MINICTR_ROOTs under /var/tmp      minictr image build busybox, in each
    2 what the host has before                    fds, MemAvailable, mounts, cgroups, links...
    3 the runs, in three phases                   one after another in root a; W workers × M
                                                  runs in root a; the same across roots a and b
      each `minictr run --rm busybox ...` (true, a write, a bridge), ~10% SIGKILLed after
      0-300 ms; meanwhile, in the phase's roots: prune, rm, run+commit, rmi
    4 the final prune                             minictr prune in each root, then network prune
    5 what is left                                must be nothing, kind by kind
    6 the table; with --write, into README        between the soak markers of this / propagation

A run that was killed is expected to fail. A run that was not killed must exit 0. Nothing may
be left after the final prune. Either way the exit code is 1, and the report says what.

Python's standard library only: it must run wherever minictr's tests run.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NoReturn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
README = HERE / "README.md"

PYTHON = sys.executable  # the venv's: the interpreter that `minictr` itself runs on
MINICTR = str(Path(sys.executable).parent / "minictr")  # the console script, as users run it

KILLED = -signal.SIGKILL  # Popen's returncode for a runtime that our SIGKILL ended
TIMEOUT = 120.0  # seconds one command may take; longer is a hang, reported as one
RECHECK_AFTER = 5.0  # a leftover found is looked for again this much later: gone, or stays
CGROUPS = Path("/sys/fs/cgroup")
OWNER_LOCKS = Path("/run/minictr/cgroups")  # minictr.run.cgroups.OWNERS: host-wide, ID.lock
LEASES = Path("/run/minictr/network/leases")  # minictr.run.network.STATE_DIR/leases
BRIDGE = "minictr0"  # minictr.run.network.BRIDGE
VETH = re.compile(r"mctr[0-9a-f]{8}")  # minictr.run.network.VETH_PATTERN
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

# The runs: `minictr run --rm`, then one of these, chosen by weight.
MIX: dict[str, tuple[int, list[str]]] = {
    "true": (5, ["busybox", "/bin/true"]),
    "write": (3, ["busybox", "sh", "-c", "echo soak > /tmp/soak && test -s /tmp/soak"]),
    "bridge": (2, ["--network", "bridge", "busybox", "/bin/true"]),
}
# What races them, in each root of the phase: (operation, weight). See Chaos.argv_of.
OPS = (("prune", 3), ("rm", 3), ("keep", 2), ("commit", 2), ("run-image", 1), ("rmi", 2))


def fail(message: str) -> NoReturn:
    print(f"soak.py: {message}", file=sys.stderr)
    raise SystemExit(1)


def sh(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a setup command; its stdout, or exit with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=env, cwd=cwd)
    if done.returncode != 0:
        fail(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


# --- 3: one command, maybe killed -----------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """One finished command of the soak."""

    phase: str
    root: str  # "a" or "b"
    kind: str  # a MIX key (a run), or one of OPS
    argv: tuple[str, ...]
    code: int | None  # its exit code; KILLED: our SIGKILL ended it; None: hung, ended at TIMEOUT
    kill_sent: bool  # a SIGKILL went out; if the run had exited just before, code is its own
    stderr: str

    @property
    def killed(self) -> bool:
        return self.code == KILLED

    def shown(self) -> str:
        return " ".join(["minictr", *self.argv[1:]])


def execute(argv: Sequence[str], env: dict[str, str], kill_after: float | None
            ) -> tuple[int | None, bool, str]:
    """Run argv, stdin /dev/null, stdout thrown away (the change report is on stderr), stderr
    into a file: a process that outlives the runtime and holds it open blocks nothing here,
    and the leftover check finds that process. With kill_after: SIGKILL the runtime (only it:
    the container must die of its parent-death signal) if it still runs after that long.
    Shell: minictr run ... & sleep 0.1; kill -KILL $!"""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=env)
        sent = False
        try:
            if kill_after is not None:
                try:
                    proc.wait(timeout=kill_after)
                except subprocess.TimeoutExpired:
                    sent = True
                    proc.send_signal(signal.SIGKILL)  # not sent if it was reaped meanwhile
            code: int | None = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        err.seek(0)
        return code, sent, err.read().decode(errors="replace")


class Results:
    """Every Done of the soak, from every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: list[Done] = []

    def add(self, done: Done) -> None:
        with self.lock:
            self.done.append(done)


def worker(phase: str, roots: Sequence[tuple[str, dict[str, str]]], runs: int,
           rng: random.Random, kill_fraction: float, kill_max: float, kinds: Sequence[str],
           results: Results, stop: threading.Event) -> None:
    """`runs` runs one after the other, in roots[0] (a worker of a two-roots phase is given
    the one root it uses)."""
    label, env = roots[0]
    weights = [MIX[k][0] for k in kinds]
    for _ in range(runs):
        if stop.is_set():
            return
        kind = rng.choices(kinds, weights)[0]
        argv = (MINICTR, "run", "--rm", *MIX[kind][1])
        kill_after = rng.uniform(0, kill_max) if rng.random() < kill_fraction else None
        code, sent, stderr = execute(argv, env, kill_after)
        results.add(Done(phase, label, kind, argv, code, sent, stderr))


class Chaos(threading.Thread):
    """In one root, until stopped: prune, rm, a kept container (no --rm), commit it, run its
    image, rmi, in random order, a few ms apart. None of these is killed. Their targets are
    picked from the store's own directories, so they hit containers that are starting,
    running, exiting, removing themselves (--rm) and dead (killed) alike."""

    names = itertools.count(1)  # soak-keep-N, soak-img-N: unique across threads and roots
    names_lock = threading.Lock()
    # Kept containers whose command has exited (their run returned 0): only those are
    # committed, so that a run of the image finds /kept. A commit of a running one is
    # allowed (as `docker commit`), but it takes whatever the upper holds at that moment.
    exited_kept: ClassVar[set[str]] = set()

    def __init__(self, phase: str, label: str, root: Path, env: dict[str, str],
                 rng: random.Random, results: Results, stop: threading.Event) -> None:
        super().__init__(name=f"chaos-{label}", daemon=True)
        self.phase, self.label, self.root, self.env = phase, label, root, env
        self.rng, self.results, self.stop = rng, results, stop

    def next_name(self) -> int:
        with self.names_lock:
            return next(self.names)

    def pick(self, items: list[str]) -> str | None:
        return self.rng.choice(sorted(items)) if items else None

    def argv_of(self, op: str) -> list[str] | None:
        """The command of op, None if it has no target right now."""
        containers = _listdir(self.root / "containers")
        kept = [n for n in _listdir(self.root / "names") if n in self.exited_kept]
        images = [n.removesuffix(".json") for n in _listdir(self.root / "images")
                  if n.startswith("soak-img-") and n.endswith(".json")]
        if op == "prune":
            return [MINICTR, "prune"]
        if op == "rm":  # any container, in whatever state it is, by its id's first 12
            # digits, as `ps` shows it (.new-ID: one being created). Not the full id, which
            # `rm` refuses as no such container (the 64 digits are one more than a name's 63).
            target = self.pick(containers)
            return [MINICTR, "rm", target.removeprefix(".new-")[:12]] if target else None
        if op == "keep":
            return [MINICTR, "run", "--name", f"soak-keep-{self.next_name()}", "busybox",
                    "sh", "-c", "echo kept > /kept"]
        if op == "commit":
            target = self.pick(kept)
            return [MINICTR, "commit", target, f"soak-img-{self.next_name()}"] if target else None
        if op == "run-image":
            target = self.pick(images)
            return [MINICTR, "run", "--rm", target, "cat", "/kept"] if target else None
        if op == "rmi":
            target = self.pick(images)
            return [MINICTR, "rmi", target] if target else None
        raise ValueError(op)

    def run(self) -> None:
        ops, weights = zip(*OPS, strict=True)
        while not self.stop.is_set():
            op = self.rng.choices(ops, weights)[0]
            argv = self.argv_of(op)
            if argv:
                code, _, stderr = execute(argv, self.env, None)
                if op == "keep" and code == 0:
                    with self.names_lock:
                        self.exited_kept.add(argv[3])  # run --name NAME ...
                self.results.add(Done(self.phase, self.label, op, tuple(argv), code, False,
                                      stderr))
            self.stop.wait(self.rng.uniform(0, 0.05))


def verdict(d: Done) -> str | None:
    """What is wrong with a finished command, or None. A killed run may fail as it likes
    (what it leaves is judged at the end); anything else must do what minictr promises."""
    if "Traceback (most recent call last)" in d.stderr:
        return "a Python traceback"
    if d.code is None:
        return f"hung: still running after {TIMEOUT:g} s, killed then"
    if d.killed:
        return None
    if d.code == 0:
        return None
    lines = d.stderr.strip().splitlines()
    one_line = d.code == 125 and len(lines) == 1 and lines[0].startswith("minictr: ")
    if d.kind == "run-image" and one_line and "no such image" in lines[0]:
        return None  # an rmi came first: the run refused to start, as it should
    if d.kind in ("rm", "commit", "rmi") and one_line:
        return None  # refused (running, gone, in use): one line, exit 125, as promised
    return f"exit {d.code}"


def last_line(text: str) -> str:
    """stderr's last line; and before it, minictr's own line about the exit or the error,
    if that is another one (the change report's lines come after it)."""
    lines = text.strip().splitlines()
    if not lines:
        return "(no stderr)"
    said = next((line for line in lines if line.startswith("minictr: ")), lines[-1])
    return lines[-1] if said == lines[-1] else f"{said} … {lines[-1]}"


# --- 2, 5: what the host has -----------------------------------------------------------------


def _listdir(path: Path | str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def mount_points() -> list[str]:
    """Field 5 of each /proc/self/mountinfo line: the mount point.  See: proc(5)"""
    return [_unescape(line.split()[4])
            for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def minictr_cgroups() -> set[str]:
    """Directories at most 3 deep under /sys/fs/cgroup whose path names minictr: v1's
    memory/minictr/ID, v2's minictr/ID (minictr.run.cgroups: PARENT/ID in each tree)."""
    found: set[str] = set()
    stack = [(str(CGROUPS), 1)]
    while stack:
        directory, depth = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            # Links only at the top: v1's cpu and cpuacct may be links to cpu,cpuacct.
            if not entry.is_dir(follow_symlinks=depth == 1):
                continue
            if "minictr" in entry.path[len(str(CGROUPS)) + 1:]:
                found.add(entry.path)
            if depth < 3:
                stack.append((entry.path, depth + 1))
    return found


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def ancestors() -> set[int]:
    """This process and its parents (flock, unshare, sudo, the shell): never leftovers."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        stat = _read(f"/proc/{pid}/stat")
        pid = int(stat[stat.rindex(")") + 2:].split()[1]) if stat else 0
    return pids


def soak_processes(base: Path) -> dict[tuple[int, int], str]:
    """Live processes that are the soak's minictr or its containers' ((pid, start) → what):
    minictr's environment names a root under base (the runtime, its shim); a container's
    processes are in a minictr cgroup, or run busybox. Compared with the set before, so the
    host's own are not counted."""
    skip, found = ancestors(), {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        stat = _read(f"/proc/{name}/stat")
        if not stat:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        if rest[0] in ("Z", "X"):  # exited, waiting to be reaped: holds nothing
            continue
        environ = _read(f"/proc/{name}/environ").split("\0")
        cgroup = _read(f"/proc/{name}/cgroup")
        try:
            exe = os.path.basename(os.readlink(f"/proc/{name}/exe"))
        except OSError:
            exe = ""  # a kernel thread
        ours = (any(e.startswith(f"MINICTR_ROOT={base}/") for e in environ)
                or any("minictr" in line.split(":", 2)[-1] for line in cgroup.splitlines())
                or exe == "busybox")
        if ours:
            cmdline = _read(f"/proc/{name}/cmdline").replace("\0", " ").strip()
            found[(int(name), int(rest[19]))] = f"pid {name} ({comm}): {cmdline or '-'}"
    return found


def nft_table() -> bool:
    """Is minictr's NAT table there?  Shell: nft list table ip minictr"""
    if not shutil.which("nft"):
        return False
    return subprocess.run(["nft", "list", "table", "ip", "minictr"], capture_output=True,
                          stdin=subprocess.DEVNULL).returncode == 0


@dataclass(frozen=True)
class Host:
    mounts: Counter[str]
    cgroups: set[str]
    owner_locks: set[str]
    leases: set[str]
    links: set[str]
    netns: set[str]
    processes: dict[tuple[int, int], str]
    nft: bool
    ip_forward: str

    @classmethod
    def take(cls, base: Path) -> Host:
        return cls(Counter(mount_points()), minictr_cgroups(), set(_listdir(OWNER_LOCKS)),
                   set(_listdir(LEASES)), set(_listdir("/sys/class/net")),
                   set(_listdir("/run/netns")), soak_processes(base), nft_table(),
                   IP_FORWARD.read_text().strip())


def file_nr() -> int:
    """Open files on the whole host: /proc/sys/fs/file-nr's first field.  See: proc(5)"""
    return int(Path("/proc/sys/fs/file-nr").read_text().split()[0])


def fds_by_process() -> dict[tuple[int, int], tuple[str, int]]:
    """(pid, start) → (comm, its open fds), for every process: file-nr is the whole host's,
    and others' work moves it too; this says whose fds came or went."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read(f"/proc/{name}/stat")
        try:
            count = len(os.listdir(f"/proc/{name}/fd"))
        except OSError:
            continue
        if stat:
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            found[(int(name), int(stat[stat.rindex(")") + 2:].split()[19]))] = (comm, count)
    return found


def fd_changes(before: dict[tuple[int, int], tuple[str, int]],
               after: dict[tuple[int, int], tuple[str, int]]) -> str:
    """The processes whose fd count changed most, with how: `comm (pid) +N`, `new`, `gone`."""
    changes = []
    for key in before.keys() | after.keys():
        comm, was = before.get(key, (after.get(key, ("?", 0))[0], 0))
        now = after.get(key, (comm, 0))[1]
        if now != was:
            how = "new" if key not in before else "gone" if key not in after else ""
            changes.append((now - was, f"{comm} ({key[0]}{', ' + how if how else ''}) "
                                       f"{now - was:+d}"))
    changes.sort(key=lambda c: -abs(c[0]))
    total = sum(c for c, _ in changes)
    return (f"{total:+d} in all processes' fd tables; the largest: "
            + (", ".join(text for _, text in changes[:5]) or "none"))


def mem_available() -> int:
    """MemAvailable, in KiB.  See: proc(5) /proc/meminfo"""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def propagation() -> str:
    """How / propagates in this mount namespace: shared or private (mount_namespaces(7))."""
    shared = False
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.partition(" - ")[0].split()
        if fields[4] == "/":  # the last mount on / is the one seen
            shared = any(f.startswith("shared:") for f in fields[6:])
    return "shared" if shared else "private"


# --- 5: what is left after the final prune ------------------------------------------------


Check = Callable[[], list[str]]


def store_checks(label: str, root: Path, env: dict[str, str]) -> dict[str, Check]:
    """What must be gone from one store: its containers, and debris."""

    def containers() -> list[str]:
        listed = sh([MINICTR, "ps", "-a"], env=env).splitlines()[1:]  # the header first
        # The id and the name: the other columns say "2 seconds ago", which changes.
        return ([f"{label}: ps -a: {row.split()[0]} {row.split()[-1]}" for row in listed]
                + [f"{label}: containers/{n}" for n in sorted(_listdir(root / "containers"))])

    def debris() -> list[str]:
        names = [f"{label}: names/{n} (its container is gone)"
                 for n in sorted(_listdir(root / "names"))
                 if (root / "names" / n).is_symlink() and not (root / "names" / n).exists()]
        return names + [f"{label}: layers/{n} (unfinished)"
                        for n in sorted(_listdir(root / "layers")) if n.startswith(".tmp-")]

    def damaged() -> list[str]:
        # tests/helpers.py's own check (it writes each layer's tar again and hashes it), in a
        # process of its own: this script imports nothing but the standard library.
        code = ("import json, sys; from pathlib import Path; from tests.helpers import "
                "damaged_layers; print(json.dumps(damaged_layers(Path(sys.argv[1]))))")
        return [f"{label}: {d}" for d in json.loads(sh([PYTHON, "-c", code, str(root)],
                                                       env=env, cwd=REPO))]

    return {f"containers in the store (ps -a, containers/), root {label}": containers,
            f"names without a container, unfinished layers, root {label}": debris,
            f"layers that no longer hash to their digest, root {label}": damaged}


def host_checks(base: Path, before: Host) -> dict[str, Check]:
    """What must be gone from the host, compared with `before`, after the final prunes."""
    prefix = f"{base}/"

    def under_roots() -> list[str]:
        return [p for p in mount_points() if p.startswith(prefix)]

    def other_mounts() -> list[str]:
        new = Counter(mount_points()) - before.mounts
        new.pop("/run/netns", None)  # the first `ip netns add` binds it on itself, for good
        return sorted(p for p in new.elements() if not p.startswith(prefix))

    def processes() -> list[str]:
        now = soak_processes(base)
        return [now[k] for k in sorted(now.keys() - before.processes.keys())]

    return {
        "mounts under the roots (/proc/self/mountinfo)": under_roots,
        "other new mounts": other_mounts,
        "minictr cgroups (/sys/fs/cgroup/*/minictr*)":
            lambda: sorted(minictr_cgroups() - before.cgroups),
        "cgroup owner locks (/run/minictr/cgroups)":
            lambda: sorted(set(_listdir(OWNER_LOCKS)) - before.owner_locks),
        "address leases (/run/minictr/network/leases)":
            lambda: sorted(set(_listdir(LEASES)) - before.leases),
        "veth links (mctr*, ip -o link)":
            lambda: sorted(n for n in set(_listdir("/sys/class/net")) - before.links
                           if VETH.fullmatch(n)),
        "network namespaces (/run/netns)": lambda: sorted(set(_listdir("/run/netns"))
                                                          - before.netns),
        "processes (minictr, busybox, in a minictr cgroup)": processes,
    }


def network_checks(before: Host) -> dict[str, Check]:
    """After `minictr network prune`: the bridge and every other new link, the NAT table,
    ip_forward as it was."""
    return {
        "the bridge and other new links, after network prune":
            lambda: sorted(set(_listdir("/sys/class/net")) - before.links),
        "nft table ip minictr, after network prune":
            lambda: ["table ip minictr"] if nft_table() and not before.nft else [],
        "net.ipv4.ip_forward changed, after network prune":
            lambda: ([f"{before.ip_forward} → {IP_FORWARD.read_text().strip()}"]
                     if IP_FORWARD.read_text().strip() != before.ip_forward else []),
    }


def look(checks: dict[str, Check]) -> dict[str, list[str]]:
    """Run every check once, then again after RECHECK_AFTER if anything was found: each
    item is marked as still there, or gone, then. Nothing is waited for before the first
    look: minictr must have cleaned up by the time `prune` exits."""
    found = {what: check() for what, check in checks.items()}
    if any(found.values()):
        time.sleep(RECHECK_AFTER)
        for what, items in found.items():
            if items:
                later = set(checks[what]())
                found[what] = [f"{i} ({'still there' if i in later else 'gone'} "
                               f"{RECHECK_AFTER:g} s later)" for i in items]
    return found


# --- 6: the report ---------------------------------------------------------------------------


def sources_digest() -> str:
    """A sha256 of minictr's sources: others may edit them while the soak runs, and a run
    that failed on a half-written file says nothing about minictr."""
    h = hashlib.sha256()
    for path in sorted((REPO / "minictr").rglob("*.py")):
        h.update(f"{path.relative_to(REPO)}\0".encode() + path.read_bytes())
    return h.hexdigest()[:12]


def machine(base: Path) -> list[tuple[str, str]]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    revision = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip() or "?"
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("kernel", platform.release()),
        ("CPUs", f"{os.cpu_count()} × {cpu}"),
        ("Python", f"{platform.python_version()} ({PYTHON})"),
        ("minictr", f"{revision} (git describe --dirty: others' uncommitted work included)"),
        ("cgroup version", "2" if (CGROUPS / "cgroup.controllers").exists() else "1"),
        ("/ propagation", propagation()),
        ("filesystem of the roots", filesystem_of(base)),
        ("load average at the start", Path("/proc/loadavg").read_text().split()[0]),
    ]


def filesystem_of(path: Path) -> str:
    """The type of the mount that holds ``path``: the longest mount point above it."""
    best, kind = "", "?"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point, fstype = fields[4], fields[fields.index("-") + 1]
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return f"{kind} (mounted on {best})"


@dataclass(frozen=True)
class Phase:
    name: str
    workers: int
    per_worker: int
    roots: tuple[str, ...]  # the labels of the roots it runs in
    seconds: float = 0.0


def report(args: argparse.Namespace, kinds: Sequence[str], phases: Sequence[Phase],
           done: Sequence[Done], pruned: dict[str, int], left: dict[str, list[str]],
           fds: tuple[int, int], fd_note: str, mem: tuple[int, int],
           about: list[tuple[str, str]]) -> str:
    runs = [d for d in done if d.kind in MIX]
    chaos = [d for d in done if d.kind not in MIX]
    out = [f"{args.sequential} runs one after another in root a, then {args.workers} workers × "
           f"{args.per_worker} runs in root a, then the same across roots a and b (worker i in "
           f"root a or b by turns). Each run is `minictr run --rm` with one of: "
           + ", ".join(f"`{' '.join(MIX[k][1])}` ({k})" for k in kinds)
           + f". {args.kill_fraction:.0%} of the runs get a SIGKILL of the runtime after a "
           f"random 0-{args.kill_ms:g} ms (seed {args.seed}). Meanwhile, in each root of the "
           f"phase, {args.chaos} threads run prune, rm, a kept run, commit, a run of the "
           "committed image and rmi, at random.", ""]
    out += ["| phase | runs | killed | not killed | not killed, failed | SIGKILL too late "
            "(counted as not killed) | hung | other commands | of those, wrong | seconds |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in [*phases, Phase("all", 0, 0, ())]:
        mine = [d for d in runs if p.name in ("all", d.phase)]
        others = [d for d in chaos if p.name in ("all", d.phase)]
        seconds = p.seconds if p.name != "all" else sum(q.seconds for q in phases)
        killed = sum(d.killed for d in mine)
        out.append(f"| {p.name} | {len(mine)} | {killed} | {len(mine) - killed} "
                   f"| {sum(verdict(d) is not None for d in mine)} "
                   f"| {sum(d.kill_sent and not d.killed for d in mine)} "
                   f"| {sum(d.code is None for d in done if p.name in ('all', d.phase))} "
                   f"| {len(others)} | {sum(verdict(d) is not None for d in others)} "
                   f"| {seconds:.0f} |")

    def code_name(code: int | None) -> str:
        return {None: "hung", KILLED: "-9 (our SIGKILL of the runtime)"}.get(code, str(code))

    out += ["", "Exit codes of the runs:", "", "| exit code | kind | killed | not killed |",
            "|---|---|---:|---:|"]
    by_code = Counter((d.code, d.kind, d.killed) for d in runs)
    for code, kind in sorted({(c, k) for c, k, _ in by_code}, key=lambda x: (str(x[0]), x[1])):
        out.append(f"| {code_name(code)} | {kind} | {by_code[(code, kind, True)]} "
                   f"| {by_code[(code, kind, False)]} |")

    out += ["", "The other commands, by exit code (125 with one `minictr: ` line is a refusal, "
            "as promised: rm of a running container, commit of one gone, rmi of an image in "
            "use, a run of an image just removed):", "",
            "| command | runs | exit codes | wrong |", "|---|---:|---|---:|"]
    for op, _ in OPS:
        mine = [d for d in chaos if d.kind == op]
        codes = Counter(code_name(d.code) for d in mine)
        out.append(f"| {op} | {len(mine)} | "
                   + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())) + " | "
                   + f"{sum(verdict(d) is not None for d in mine)} |")

    wrong = [d for d in done if verdict(d) is not None]
    if wrong:
        out += ["", f"What went wrong ({len(wrong)}; the first 30, each with its stderr's "
                "last line):", ""]
        out += [f"- {d.phase}, root {d.root}: `{d.shown()}`: {verdict(d)}"
                f"{' (a SIGKILL was sent, after it had exited)' if d.kill_sent else ''}: "
                f"`{last_line(d.stderr)}`" for d in wrong[:30]]

    out += ["", "The final `minictr prune` removed "
            + ", ".join(f"{n} items in root {r}" for r, n in pruned.items())
            + " (what the killed runs, and the kept runs, left). Then, what is left:", "",
            "| leftover | count |", "|---|---:|"]
    out += [f"| {what} | {len(items)} |" for what, items in left.items()]
    items = [f"- {what}: {i}" for what, found in left.items() for i in found]
    if items:
        out += ["", "Left behind:", "", *items[:50]]

    out += ["", "| host | before | after | change |", "|---|---:|---:|---:|",
            f"| open files (/proc/sys/fs/file-nr, first field) | {fds[0]} | {fds[1]} "
            f"| {fds[1] - fds[0]:+d} |",
            f"| fds, process by process (/proc/*/fd) | | | {fd_note} |",
            f"| MemAvailable (/proc/meminfo), MiB | {mem[0] / 1024:.0f} | {mem[1] / 1024:.0f} "
            f"| {(mem[1] - mem[0]) / 1024:+.0f} |"]
    out += ["", "| machine | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in about]
    return "\n".join(out) + "\n"


def markers(prop: str) -> tuple[str, str]:
    return f"<!-- soak:{prop}:begin -->", f"<!-- soak:{prop}:end -->"


def write_readme(results: str, prop: str) -> None:
    """Replace the results of this propagation of / (private or shared) in README.md."""
    begin, end = markers(prop)
    text = README.read_text()
    if begin not in text or end not in text:
        fail(f"{README}: the markers {begin} and {end} are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{begin}\n{results}{end}{tail}")


# --- the soak ---------------------------------------------------------------------------------


def bridge_supported() -> bool:
    """`minictr run --network bridge` exists, and nft, which it needs, is installed."""
    helped = subprocess.run([MINICTR, "run", "--help"], capture_output=True, text=True)
    return "--network" in helped.stdout and "bridge" in helped.stdout and bool(shutil.which("nft"))


def run_phase(phase: Phase, roots: dict[str, tuple[Path, dict[str, str]]], args: argparse.Namespace,
              kinds: Sequence[str], results: Results, rng: random.Random) -> Phase:
    stop, chaos_stop = threading.Event(), threading.Event()
    chaos = [Chaos(phase.name, label, roots[label][0], roots[label][1],
                   random.Random(rng.random()), results, chaos_stop)
             for label in phase.roots for _ in range(args.chaos)]
    workers = [threading.Thread(target=worker, name=f"worker-{i}", daemon=True, args=(
        phase.name, [(label, roots[label][1])], phase.per_worker, random.Random(rng.random()),
        args.kill_fraction, args.kill_ms / 1000, kinds, results, stop))
        for i, label in zip(range(phase.workers), itertools.cycle(phase.roots))]
    start = time.monotonic()
    for t in [*chaos, *workers]:
        t.start()
    try:
        for t in workers:
            t.join()
    finally:
        stop.set()
        chaos_stop.set()
        for t in [*workers, *chaos]:
            t.join()
    seconds = time.monotonic() - start
    print(f"{phase.name}: {phase.workers * phase.per_worker} runs in {seconds:.0f} s",
          file=sys.stderr)
    return Phase(phase.name, phase.workers, phase.per_worker, phase.roots, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sequential", type=int, default=500, metavar="N",
                        help="runs one after another (default 500)")
    parser.add_argument("--workers", type=int, default=20, metavar="W",
                        help="concurrent workers in each concurrent phase (default 20)")
    parser.add_argument("--per-worker", type=int, default=20, metavar="M",
                        help="runs each worker makes (default 20)")
    parser.add_argument("--kill-fraction", type=float, default=0.1, metavar="F",
                        help="the share of runs SIGKILLed (default 0.1)")
    parser.add_argument("--kill-ms", type=float, default=300, metavar="MS",
                        help="a kill comes after a random 0 to MS ms (default 300)")
    parser.add_argument("--chaos", type=int, default=2, metavar="N",
                        help="threads of prune, rm, commit, rmi in each root (default 2)")
    parser.add_argument("--no-bridge", action="store_true",
                        help="no runs with --network bridge")
    parser.add_argument("--seed", type=int, default=None, help="for the random choices")
    parser.add_argument("--write", action="store_true",
                        help=f"also replace the results of this / propagation in {README.name}")
    args = parser.parse_args(argv)
    if min(args.sequential, args.workers, args.per_worker, args.chaos) < 0:
        parser.error("counts must not be negative")
    if not 0 <= args.kill_fraction <= 1:
        parser.error("--kill-fraction is between 0 and 1")
    if os.geteuid() != 0:
        fail("run as root: sudo .venv/bin/python bench/soak.py")
    if not os.access(MINICTR, os.X_OK):
        fail(f"{MINICTR} not found: make setup")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    rng = random.Random(args.seed)
    kinds = [k for k in MIX if k != "bridge" or (not args.no_bridge and bridge_supported())]

    fds_before, mem_before, fd_tables = file_nr(), mem_available(), fds_by_process()
    digest_before = sources_digest()
    # No ',' or ':' in the name (minictr's rule, for overlay's options): mkdtemp has neither.
    base = Path(tempfile.mkdtemp(prefix="minictr-soak-", dir="/var/tmp"))
    about = machine(base)
    prop = propagation()
    # As `sudo` runs it: no PYTHON* variables from the caller; bytecode in our directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
    roots = {label: (base / label, {**env, "MINICTR_ROOT": str(base / label)})
             for label in ("a", "b")}
    before = Host.take(base)
    results = Results()
    try:
        for _, root_env in roots.values():
            sh([MINICTR, "image", "build", "busybox"], env=root_env)
        phases = [run_phase(p, roots, args, kinds, results, rng) for p in (
            Phase("sequential", 1, args.sequential, ("a",)),
            Phase("concurrent, one root", args.workers, args.per_worker, ("a",)),
            Phase("concurrent, two roots", args.workers, args.per_worker, ("a", "b")))]

        pruned, checks = {}, host_checks(base, before)
        for label, (root, root_env) in roots.items():
            done = subprocess.run([MINICTR, "prune"], capture_output=True, text=True,
                                  env=root_env, stdin=subprocess.DEVNULL)
            results.add(Done("final prune", label, "prune", (MINICTR, "prune"),
                             done.returncode, False, done.stderr))
            pruned[label] = len(done.stdout.splitlines()[1:])  # after "Deleted:"
            checks |= store_checks(label, root, root_env)
        left = look(checks)
        if BRIDGE not in before.links:  # ours to remove: it was not there before the soak
            sh([MINICTR, "network", "prune"], env=roots["a"][1])
            left |= look(network_checks(before))
    finally:
        if not any(p.startswith(f"{base}/") for p in mount_points()):
            shutil.rmtree(base, ignore_errors=True)  # never through a mount
        else:
            print(f"soak.py: {base} kept: something is still mounted under it", file=sys.stderr)
    fds_after, mem_after = file_nr(), mem_available()
    fd_note = fd_changes(fd_tables, fds_by_process())
    digest_after = sources_digest()
    about.append(("minictr's sources (sha256 of minictr/**/*.py)", digest_before
                  if digest_after == digest_before else
                  f"**changed during the soak**: {digest_before} → {digest_after}"))

    out = report(args, kinds, phases, results.done, pruned, left, (fds_before, fds_after),
                 fd_note, (mem_before, mem_after), about)
    for d in results.done:  # in full, for whoever reads the bug: the README has one line
        if why := verdict(d):
            print(f"--- {d.phase}, root {d.root}: {d.shown()}: {why}\n{d.stderr.rstrip()}",
                  file=sys.stderr)
    print(out, end="")
    if args.write:
        write_readme(out, prop)
        print(f"wrote the results into {README} (/ {prop})", file=sys.stderr)
    bad = any(left.values()) or any(verdict(d) for d in results.done)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
