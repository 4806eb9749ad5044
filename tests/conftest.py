"""What every test gets: the root marker, a leak check around root tests, a fresh MINICTR_ROOT.

- ``@pytest.mark.root``: the test needs root and the real kernel. Skipped when not root, except
  with ``CI=true``, where it fails instead: CI never skips a root test.
- ``@pytest.mark.v2_host``: the test needs a cgroup v2 host (the Vagrant box). Skipped on a v1
  or hybrid host, with that reason, in CI too: the one skip CI allows.
- Every root test is checked for leaks: the mounts, minictr cgroups, network links, network
  namespaces and minictr processes that exist after it and did not before fail it, by name.
  Nothing waits for them to go away: minictr must have cleaned up by the time it exits.
- ``minictr_root``: a fresh state directory on the real disk, as ``MINICTR_ROOT``. At the end
  of the test, every layer in it must still hash to its digest: a test in which anything wrote
  or deleted through to a layer fails.
- ``minictr``: runs ``python -m minictr ARGS`` against that directory, as a user would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import TIMEOUT_FACTOR, scaled

IN_CI = os.environ.get("CI") == "true"
# as minictr.run.cgroups sees it
CGROUP_V2_HOST = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


# --- the root marker ------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture: a root test without root is skipped, or in CI, failed. A v2_host
    test on a host without cgroup v2 is skipped, in CI too."""
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        if IN_CI:
            pytest.fail("needs root, and with CI=true a root test never skips", pytrace=False)
        pytest.skip("needs root: sudo make test")
    if item.get_closest_marker("v2_host") is not None and not CGROUP_V2_HOST:
        pytest.skip("needs a cgroup v2 host (the Vagrant box: Ubuntu 24.04); this host's "
                    "memory, pids and cpu controllers are cgroup v1")


def root_propagation() -> str:
    """How / propagates in this mount namespace: shared (systemd's hosts, and CI: .ci/run),
    or private. See mount_namespaces(7), "Shared subtrees"; shell: findmnt -o PROPAGATION /"""
    shared = False
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.partition(" - ")[0].split()
        if fields[4] == "/":  # the last mount on / is the one seen
            shared = any(f.startswith("shared:") for f in fields[6:])
    return "shared" if shared else "private"


def pytest_report_header() -> str:
    """Which kind of host this run tests: the README lists the ones the suite runs on."""
    return (f"host: / is {root_propagation()}, cgroup {'v2' if CGROUP_V2_HOST else 'v1'}, "
            f"timeouts x{TIMEOUT_FACTOR:g}")


# --- what a test can leave behind -----------------------------------------------------------


def mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, fstype, source) for each line of /proc/self/mountinfo, in order.

    See: proc(5) /proc/pid/mountinfo. Field 5 is the mount point, with spaces and the like
    escaped as octal (\\040); after the " - " separator come fstype and source.
    """
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        point = before.split()[4]
        fstype, source = [*after.split(), "", ""][:2]
        mounts.append((_unescape(point), fstype, _unescape(source)))
    return mounts


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def fstype_of(path: str | os.PathLike[str]) -> str:
    """The filesystem that holds path: the longest mount point above it wins (the last one of
    several on the same point)."""
    path = os.path.realpath(path)
    best, fstype = "", ""
    for point, fs, _ in mountinfo():
        above = path == point or path.startswith(point.rstrip("/") + "/")
        if above and len(point) >= len(best):
            best, fstype = point, fs
    return fstype


def mounts_under(path: str | os.PathLike[str]) -> list[str]:
    prefix = os.path.realpath(path).rstrip("/") + "/"
    return [point for point, _, _ in mountinfo() if point.startswith(prefix)]


def minictr_cgroups() -> set[str]:
    """Directories under /sys/fs/cgroup, at most 3 deep, whose path names minictr.

    Depth 3 covers v1 (memory/minictr/ID) and v2 (minictr/ID, system.slice/minictr-ID).
    """
    found: set[str] = set()

    def walk(directory: str, depth: int) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError:  # removed meanwhile, or not readable
            return
        for entry in entries:
            # Follow links only at the top: v1's cpu and cpuacct may link to cpu,cpuacct.
            if not entry.is_dir(follow_symlinks=depth == 1):
                continue
            if "minictr" in entry.path[len("/sys/fs/cgroup/") :]:
                found.add(entry.path)
            if depth < 3:
                walk(entry.path, depth + 1)

    walk("/sys/fs/cgroup", 1)
    return found


def _listdir(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


@dataclass(frozen=True)
class Proc:
    """A process, equal to another only by (pid, start): it may exec or move meanwhile."""

    pid: int
    start: int  # clock ticks after boot: with pid, names one process even if pids are reused
    ppid: int = field(compare=False)
    comm: str = field(compare=False)
    cmdline: str = field(compare=False)
    cgroup: str = field(compare=False)

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.comm}): {self.cmdline or '[no cmdline]'}"


def _read_proc(pid: int) -> Proc | None:
    base = f"/proc/{pid}"
    try:
        stat = Path(f"{base}/stat").read_text()
        argv = Path(f"{base}/cmdline").read_bytes().split(b"\0")
        cgroup = Path(f"{base}/cgroup").read_text()
    except OSError:  # it exited meanwhile
        return None
    # "pid (comm) state ppid ... starttime": comm may hold spaces and parentheses.
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2 :].split()
    state, ppid, start = rest[0], int(rest[1]), int(rest[19])
    if state in ("Z", "X"):  # exited; only waits for its parent to reap it
        return None
    cmdline = " ".join(os.fsdecode(a) for a in argv if a)
    return Proc(pid, start, ppid, comm, cmdline, cgroup)


def _ancestors() -> set[int]:
    """This process and its ancestors (pytest, make, sudo, .ci/run...): never leaks."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        proc = _read_proc(pid)
        pid = proc.ppid if proc else 0
    return pids


def _names_minictr(proc: Proc, own_cgroup: str) -> bool:
    """By its program or arguments (minictr, python -m minictr), its name, or its cgroup.

    Basenames, not the whole command line: the repo's own path may contain "minictr"
    (/home/vagrant/minictr/.venv/bin/python runs every test).
    """
    words = [os.path.basename(w) for w in proc.cmdline.split()]
    return (
        any("minictr" in w for w in words)
        or "minictr" in proc.comm
        or ("minictr" in proc.cgroup and proc.cgroup != own_cgroup)
    )


def minictr_processes() -> set[Proc]:
    """Live processes that are minictr's, or children of this test process."""
    me, skip = os.getpid(), _ancestors()
    own_cgroup = Path("/proc/self/cgroup").read_text()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        proc = _read_proc(int(name))
        if proc and (proc.ppid == me or _names_minictr(proc, own_cgroup)):
            found.add(proc)
    return found


def state_dirs() -> set[str]:
    """Test state roots under /var/tmp, and containers in the real default root, which a
    test must never touch (each test has its own MINICTR_ROOT)."""
    found = {f"/var/tmp/{n}" for n in _listdir("/var/tmp") if n.startswith("minictr-test-")}
    found |= {f"/var/lib/minictr/containers/{n}" for n in _listdir("/var/lib/minictr/containers")}
    return found


@dataclass(frozen=True)
class Snapshot:
    mounts: Counter[str]  # a Counter: a second mount on the same point is new too
    mount_info: dict[str, str]
    cgroups: set[str]
    links: set[str]
    netns: set[str]
    processes: set[Proc]
    state_dirs: set[str]  # test MINICTR_ROOTs, and containers in the default root

    @classmethod
    def take(cls) -> Snapshot:
        info = mountinfo()
        return cls(
            mounts=Counter(point for point, _, _ in info),
            mount_info={point: f"{fstype} {source}" for point, fstype, source in info},
            cgroups=minictr_cgroups(),
            links=_listdir("/sys/class/net"),
            netns=_listdir("/run/netns"),
            processes=minictr_processes(),
            state_dirs=state_dirs(),
        )

    def leaks_since(self, before: Snapshot) -> list[str]:
        """One line for each thing that is here now and was not before."""
        lines = []
        new_mounts = self.mounts - before.mounts
        # The first `ip netns add` (or pyroute2's netns.create) on a machine bind-mounts
        # /run/netns on itself, shared, and leaves it there for good, as it should: not a leak.
        new_mounts.pop("/run/netns", None)
        for point in sorted(new_mounts.elements()):
            lines.append(f"mount: {point} ({self.mount_info[point]})")
        lines += [f"cgroup: {path}" for path in sorted(self.cgroups - before.cgroups)]
        lines += [f"network link: {name}" for name in sorted(self.links - before.links)]
        lines += [f"network namespace: /run/netns/{n}" for n in sorted(self.netns - before.netns)]
        new = sorted(self.processes - before.processes, key=lambda p: p.pid)
        lines += [f"process: {proc}" for proc in new]
        lines += [f"state directory: {d}" for d in sorted(self.state_dirs - before.state_dirs)]
        return lines


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Around each root test: what it leaves behind fails it.

    Autouse, so set up before and torn down after the test's other fixtures (minictr_root
    included): what they clean up does not count.
    """
    if request.node.get_closest_marker("root") is None:
        yield
        return
    before = Snapshot.take()
    yield
    leaks = Snapshot.take().leaks_since(before)
    if leaks:
        pytest.fail(
            "left behind after the test (still there when it ended):\n  " + "\n  ".join(leaks),
            pytrace=False,
        )


# --- MINICTR_ROOT and the minictr command ---------------------------------------------------

# Overlay cannot use these as upperdir, so root tests could not run containers on them.
NOT_FOR_UPPERDIR = {"overlay", "nfs", "nfs4", "vboxsf", "9p", "virtiofs", "cifs", "smb3"}


@pytest.fixture
def minictr_root(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh MINICTR_ROOT for one test, on the real disk (/var/tmp: not tmpfs), then removed.

    Not removed if something is still mounted under it: rmtree would delete through the
    mount. The leak check names those mounts; outside a root test, this fixture does.
    """
    root = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="minictr-test-"))
    fstype = fstype_of(root)
    if fstype in NOT_FOR_UPPERDIR or fstype.startswith("fuse"):
        root.rmdir()
        pytest.fail(f"/var/tmp is on {fstype}, which overlay cannot use as upperdir", pytrace=False)
    monkeypatch.setenv("MINICTR_ROOT", str(root))
    yield root
    fail_if_layers_changed(root)
    if mounted := mounts_under(root):
        if request.node.get_closest_marker("root") is None:
            pytest.fail(f"still mounted under {root}, so not removed: {mounted}", pytrace=False)
        return
    shutil.rmtree(root)  # root removes the d--------- work/work directories too


def fail_if_layers_changed(store: Path) -> None:
    """Every test's store, at its end: a layer is never changed once stored. A container's
    writes go to its upper; nothing, failing or not, may write or delete through to a layer."""
    from tests.helpers import damaged_layers

    if damaged := damaged_layers(store):
        pytest.fail(f"layers of {store} changed during the test:\n  " + "\n  ".join(damaged),
                    pytrace=False)


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def minictr(minictr_root: Path) -> Run:
    """``run(*args, input=None, env=None, check=False, timeout=60)``: ``python -m minictr``.

    stdin is /dev/null unless input is given; stdout and stderr come back as text. The
    environment is this one, with MINICTR_ROOT set to minictr_root, then env on top.
    With check=True, a non-zero exit fails the test and shows both outputs.
    """

    def run(
        *args: str | os.PathLike[str],
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = False,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "minictr", *map(os.fspath, args)]
        result = subprocess.run(
            argv,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            env={**os.environ, "MINICTR_ROOT": str(minictr_root), **(env or {})},
            timeout=scaled(timeout),
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"minictr {' '.join(map(os.fspath, args))} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}",
                pytrace=False,
            )
        return result

    return run
