"""How long does `minictr run --rm busybox /bin/true` take, end to end, next to runc and unshare?

    sudo .venv/bin/python bench/startup.py              # 30 runs + 3 warm-ups each, print
    sudo .venv/bin/python bench/startup.py --write      # ... and update bench/README.md

Every contender starts /bin/true from the same busybox root filesystem, on the same machine,
in the same minute. The contenders take turns, one run each per round, in an order that
rotates every round, so whatever else the machine is doing slows all of them alike.
What to read are the ratios; the milliseconds belong to this machine (bench/README.md).

    1 a fresh MINICTR_ROOT under /var/tmp     minictr image build busybox
    2 an OCI bundle on that same rootfs       runc spec; config.json: root, args, no terminal
    3 warm-ups, then the interleaved rounds   time.perf_counter_ns around subprocess.run
    4 the imports of `run`                    python -X importtime .venv/bin/minictr run ...
    5 the table; with --write, into README    between the results markers
    6 leave nothing behind                    no mounts, no runc containers, no cgroups, no dirs

Python's standard library only: it must run wherever minictr's tests run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"

PYTHON = sys.executable  # the venv's: the interpreter that `minictr` itself runs on
MINICTR = str(Path(sys.executable).parent / "minictr")  # the console script, as users run it
RUNC = shutil.which("runc") or "/usr/sbin/runc"

# The namespaces of `minictr run` (minictr/run/namespaces.py), and unshare(1)'s options for them.
UNSHARE = ["unshare", "--mount", "--uts", "--ipc", "--pid", "--net", "--cgroup", "--fork"]
# What `run` imports, without running anything: cli.cmd_run imports these.
RUN_IMPORTS = ("import minictr.cli, minictr.run.container, minictr.show.report, minictr.spec, "
               "minictr.store")
# The standard library's modules that `run` cannot do without (its own code aside): the floor
# of any Python runtime written as minictr is, with argparse and pathlib for readability.
STDLIB_IMPORTS = "import argparse, ctypes, json, pathlib, shutil, signal, socket, typing"
# Both then end as `minictr` does (minictr.cli.entry): os._exit, without tearing the modules
# down one by one, which would add ~10 ms that `run` does not pay.
QUICK_EXIT = "; import os; os._exit(0)"
# Dependencies that `run` must not import (only `minictr.run.network` and cgroups v1 need them).
MUST_NOT_IMPORT = ("pyroute2",)  # cgroupspy is the cgroup v1 backend: expected on a v1 host
IMPORTTIME_RUNS = 5


@dataclass(frozen=True)
class Contender:
    key: str
    shown: str  # the command, as the table shows it
    argv: Callable[[int], list[str]]  # the command line of run number n
    floor: bool = False  # a part of minictr's time, not a runtime


@dataclass(frozen=True)
class Timing:
    median: float  # milliseconds
    p90: float
    low: float
    high: float


def fail(message: str) -> NoReturn:
    print(f"startup.py: {message}", file=sys.stderr)
    raise SystemExit(1)


def sh(argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a setup command; its stdout, or exit with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          cwd=cwd, env=env)
    if done.returncode != 0:
        fail(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


# --- 1, 2: the image and the bundle --------------------------------------------------------


def build_image(env: dict[str, str], root: Path) -> Path:
    """minictr's own busybox image; its one layer is also runc's and chroot's root."""
    sh([MINICTR, "image", "build", "busybox"], env=env)
    info = json.loads(sh([MINICTR, "image", "inspect", "busybox"], env=env))
    rootfs = Path(info[0]["layers"][0]["path"])
    if not (rootfs / "bin" / "true").exists():
        fail(f"no /bin/true in {rootfs}")
    return rootfs


def make_bundle(bundle: Path, rootfs: Path) -> list[str]:
    """`runc spec`, then the same root and command as minictr's; return runc's namespaces.

    runc's defaults stay: its namespaces, mounts, masked paths, capabilities and rlimits.
    Shell: runc spec; jq '.root = {path: ROOTFS, readonly: true} | .process.terminal = false
           | .process.args = ["/bin/true"]' config.json
    """
    bundle.mkdir()
    sh([RUNC, "spec"], cwd=bundle)
    config_file = bundle / "config.json"
    config = json.loads(config_file.read_text())
    config["root"] = {"path": str(rootfs), "readonly": True}  # absolute: no copy, no link
    config["process"]["terminal"] = False  # stdin is /dev/null, as for the others
    config["process"]["args"] = ["/bin/true"]
    config_file.write_text(json.dumps(config, indent=2))
    return [ns["type"] for ns in config["linux"]["namespaces"]]


# --- 3: the interleaved rounds ---------------------------------------------------------------


def time_once(argv: list[str], env: dict[str, str]) -> int:
    """Nanoseconds from spawn to exit; stdout thrown away, stderr kept for the error."""
    start = time.perf_counter_ns()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter_ns() - start
    if done.returncode != 0:
        fail(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.decode().strip()}")
    return elapsed


def nearest_rank(ordered: Sequence[float], fraction: float) -> float:
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(samples_ns: Sequence[int]) -> Timing:
    ms = sorted(s / 1e6 for s in samples_ns)
    return Timing(statistics.median(ms), nearest_rank(ms, 0.9), ms[0], ms[-1])


def measure(contenders: Sequence[Contender], env: dict[str, str], runs: int,
            warmups: int) -> dict[str, Timing]:
    """Round r runs every contender once, starting at contender r mod n: drift and the
    neighbours' load hit all of them alike, and none always follows the same other one."""
    samples: dict[str, list[int]] = {c.key: [] for c in contenders}
    n = 0
    for r in range(warmups + runs):
        order = [*contenders[r % len(contenders):], *contenders[:r % len(contenders)]]
        for c in order:
            n += 1
            elapsed = time_once(c.argv(n), env)
            if r >= warmups:
                samples[c.key].append(elapsed)
        if sys.stderr.isatty():
            print(f"\rround {r + 1}/{warmups + runs}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return {key: summarize(s) for key, s in samples.items()}


# --- 4: the imports of `run` -----------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    name: str
    importer: str  # the module whose import statement loaded it ("" when at the top)
    self_us: int  # its own top-level code (for minictr.libc: also the ldconfig it runs)
    cumulative_us: int


def parse_importtime(stderr: str) -> list[Imported]:
    """`-X importtime` lines: 'import time: self | cumulative | <indent>name'. A module is
    printed after the modules it imports, so its importer is the next line less indented."""
    rows = []
    for line in stderr.splitlines():
        m = re.fullmatch(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if m:
            rows.append((len(m.group(3)), m.group(4), int(m.group(1)), int(m.group(2))))
    found = []
    for i, (depth, name, own, cumulative) in enumerate(rows):
        importer = next((n for d, n, _, _ in rows[i + 1:] if d < depth), "")
        found.append(Imported(name, importer, own, cumulative))
    return found


def imports_of_run(env: dict[str, str]) -> tuple[float, dict[str, Imported]]:
    """Median total import time (ms) of `minictr run`, and every module it imports (with
    its median cumulative time); -X importtime makes imports slower, so this is a breakdown,
    not a measurement to add up with the table."""
    argv = [PYTHON, "-X", "importtime", MINICTR, "run", "--rm", "busybox", "/bin/true"]
    totals: list[int] = []
    per_module: dict[str, list[Imported]] = {}
    for _ in range(IMPORTTIME_RUNS):
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env)
        if done.returncode != 0:
            fail(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
        seen = {}
        for imp in parse_importtime(done.stderr):
            seen.setdefault(imp.name, imp)  # the container's init is a fork: first one wins
        totals.append(sum(i.cumulative_us for i in seen.values() if not i.importer))
        for name, imp in seen.items():
            per_module.setdefault(name, []).append(imp)
    merged = {
        name: Imported(name, imps[0].importer, int(statistics.median(i.self_us for i in imps)),
                       int(statistics.median(i.cumulative_us for i in imps)))
        for name, imps in per_module.items()
    }
    return statistics.median(totals) / 1000, merged


# --- 5: the report ----------------------------------------------------------------------------


def machine(runc_namespaces: list[str], root: Path) -> list[tuple[str, str]]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("kernel", platform.release()),
        ("CPUs", f"{os.cpu_count()} × {cpu}"),
        ("Python", f"{platform.python_version()} ({PYTHON})"),
        ("runc", sh([RUNC, "--version"]).splitlines()[0].removeprefix("runc version ")),
        ("unshare", sh(["unshare", "--version"]).strip().rsplit(" ", 1)[-1]),
        ("filesystem of MINICTR_ROOT", filesystem_of(root)),
        ("bytecode (.pyc)", "cached, as after `pip install` or a first `sudo minictr` "
         "(PYTHONPYCACHEPREFIX in the bench's directory)"),
        ("cgroup version", "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1"),
        ("load average at the start", Path("/proc/loadavg").read_text().split()[0]),
        ("runc's namespaces", ", ".join(runc_namespaces)),
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


def report(contenders: Sequence[Contender], timings: dict[str, Timing], runs: int,
           warmups: int, about: list[tuple[str, str]], import_ms: float,
           imported: dict[str, Imported]) -> str:
    t = timings
    ratio_runc = t["minictr"].median / t["runc"].median
    ratio_chroot = t["minictr"].median / t["chroot"].median
    out = [f"{runs} timed runs + {warmups} warm-ups of each command, interleaved; "
           "milliseconds, wall clock from spawn to exit.", ""]
    out += ["| command | median | p90 | min | max | ÷ runc | ÷ unshare+chroot |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for c in contenders:
        s = t[c.key]
        out.append(f"| {c.shown} | {s.median:.1f} | {s.p90:.1f} | {s.low:.1f} | {s.high:.1f} "
                   f"| {s.median / t['runc'].median:.2f} | {s.median / t['chroot'].median:.1f} |")
    verdict = "no slower than runc: goal met" if ratio_runc <= 1 else "slower than runc"
    out += ["", f"**minictr ÷ runc = {ratio_runc:.2f}** ({verdict}); "
            f"**minictr ÷ unshare+chroot = {ratio_chroot:.1f}**.", ""]

    floor_s, floor, stdlib, imports, run = (t[k].median for k in ("python-S", "python",
                                                                   "stdlib", "imports",
                                                                   "minictr"))
    parts = [
        ("the interpreter, without `site` (`python -S -c pass`)", floor_s),
        ("`site`: the venv and its .pth files (`python -c pass` − the above)",
         floor - floor_s),
        ("the standard library `run` needs (`python -c 'import argparse, …'` − the above)",
         stdlib - floor),
        ("minictr, its dependencies and the rest of `run`'s imports (`python -c 'import "
         "minictr.cli, …'` − the above)", imports - stdlib),
        ("the run itself: namespaces, mounts, exec, wait, diff, --rm (the rest)", run - imports),
    ]
    out += ["Where minictr's median goes (differences of the medians above):", "",
            "| part | ms | share |", "|---|---:|---:|"]
    out += [f"| {what} | {ms:.1f} | {ms / run:.0%} |" for what, ms in parts]

    heavy = sorted((i for i in imported.values()
                    if i.importer.startswith("minictr") and not i.name.startswith("minictr")),
                   key=lambda i: -i.cumulative_us)[:10]
    ours = sorted((i for i in imported.values() if i.name.startswith("minictr")),
                  key=lambda i: -i.cumulative_us)[:6]
    checks = "; ".join(f"`{m}` **imported (it must not be)**" if m in imported
                       else f"`{m}` not imported" for m in MUST_NOT_IMPORT)
    out += ["", f"Imports of `minictr run` (`python -X importtime`, median of {IMPORTTIME_RUNS} "
            f"runs; importtime itself slows imports down): {import_ms:.1f} ms in all, "
            f"{len(imported)} modules. {checks}.", "",
            "| module | first imported by | self ms | cumulative ms |", "|---|---|---:|---:|"]
    out += [f"| `{i.name}` | `{i.importer or '(top level)'}` | {i.self_us / 1000:.1f} "
            f"| {i.cumulative_us / 1000:.1f} |" for i in [*ours, *heavy]]
    out += ["", "| machine | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in about]
    return "\n".join(out) + "\n"


def write_readme(results: str) -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        fail(f"{README}: the markers {BEGIN} and {END} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{results}{END}{tail}")


# --- 6: leave nothing behind ------------------------------------------------------------------


def leftovers(base: Path, runc_root: Path) -> list[str]:
    """What the runs left: mounts under our directory, runc containers, runc's cgroups."""
    found = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
             if str(base) in line]
    if runc_root.exists():
        found += [f"runc container {c['id']}" for c in
                  json.loads(sh([RUNC, "--root", str(runc_root), "list", "--format", "json"])
                             or "null") or []]
    cgroups = Path("/sys/fs/cgroup")
    found += [str(p) for p in cgroups.glob(f"*/{base.name}-*")]
    found += [str(p) for p in cgroups.glob(f"{base.name}-*")]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each (default 30)")
    parser.add_argument("--warmups", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--write", action="store_true",
                        help=f"also replace the results section of {README.name}")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmups < 0:
        parser.error("--runs must be at least 1, --warmups at least 0")
    if os.geteuid() != 0:
        fail("run as root: sudo .venv/bin/python bench/startup.py")
    for tool in (MINICTR, RUNC, shutil.which("unshare") or "unshare"):
        if not os.access(tool, os.X_OK):
            fail(f"{tool} not found")

    # No ',' or ':' in the name (minictr's rule, for overlay's options): mkdtemp has neither.
    base = Path(tempfile.mkdtemp(prefix="minictr-bench-", dir="/var/tmp"))
    root, bundle, runc_root = base / "root", base / "bundle", base / "runc"
    # As `sudo` runs it: no PYTHON* variables from the caller's shell (PYTHONDONTWRITEBYTECODE
    # would make every run compile minictr again). Bytecode goes to our own directory, so
    # nothing is written into the source tree; the warm-ups fill it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env |= {"MINICTR_ROOT": str(root), "PYTHONPYCACHEPREFIX": str(base / "pycache")}
    try:
        rootfs = build_image(env, root)
        runc_namespaces = make_bundle(bundle, rootfs)
        rid = base.name  # runc ids: also the names of its cgroups, found again by leftovers()
        contenders = [
            Contender("minictr", "`minictr run --rm busybox /bin/true`",
                      lambda n: [MINICTR, "run", "--rm", "busybox", "/bin/true"]),
            Contender("runc", "`runc run --bundle B ID`",
                      lambda n: [RUNC, "--root", str(runc_root), "run", "--bundle", str(bundle),
                                 f"{rid}-{n}"]),
            Contender("chroot", f"`{' '.join(UNSHARE)} chroot ROOTFS /bin/true`",
                      lambda n: [*UNSHARE, "chroot", str(rootfs), "/bin/true"]),
            Contender("python-S", "floor: `python -S -c pass`",
                      lambda n: [PYTHON, "-S", "-c", "pass"], floor=True),
            Contender("python", "floor: `python -c pass`",
                      lambda n: [PYTHON, "-c", "pass"], floor=True),
            Contender("stdlib", "floor: `python -c 'import argparse, ctypes, json, pathlib, "
                      "shutil, signal, socket, typing'`",
                      lambda n: [PYTHON, "-c", STDLIB_IMPORTS + QUICK_EXIT], floor=True),
            Contender("imports", "floor: `python -c 'import minictr.cli, …'` (run's imports)",
                      lambda n: [PYTHON, "-c", RUN_IMPORTS + QUICK_EXIT], floor=True),
        ]
        timings = measure(contenders, env, args.runs, args.warmups)
        import_ms, imported = imports_of_run(env)
        results = report(contenders, timings, args.runs, args.warmups,
                         machine(runc_namespaces, root), import_ms, imported)
        left = leftovers(base, runc_root)
        if left or any((root / "containers").iterdir()):
            fail(f"left behind: {left or list((root / 'containers').iterdir())}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(results, end="")
    if args.write:
        write_readme(results)
        print(f"wrote the results into {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
