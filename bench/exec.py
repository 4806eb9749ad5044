"""How long does `minictr exec NAME true` take, next to `minictr run --rm busybox true`?

    sudo .venv/bin/python bench/exec.py              # 30 pairs + 3 warm-ups, print
    sudo .venv/bin/python bench/exec.py --write      # ... and update bench/README.md

The goal (issue 14): exec <= 0.8 x run, because exec builds no root: no overlay, no mounts,
no cgroup made or removed, no report. Both are timed in pairs, one of each per round, the
order swapped every round, so that whatever else the machine does slows both alike; the
ratio of the medians is what to read.

    1 a fresh MINICTR_ROOT under /var/tmp          minictr image build busybox
    2 a running container to exec into             minictr run -i --name bench ... (a pipe)
    3 warm-ups, then the paired rounds              time.perf_counter_ns around subprocess.run
    4 the table; with --write, into README          between the exec-results markers
    5 stop the container, remove the root           nothing left

Python's standard library only, as bench/startup.py.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
BEGIN, END = "<!-- exec-results:begin -->", "<!-- exec-results:end -->"
MINICTR = str(Path(sys.executable).parent / "minictr")  # the console script, as users run it
GOAL = 0.8


def time_once(argv: list[str], env: dict[str, str]) -> float:
    """Milliseconds from spawn to exit; any exit code but 0 stops the bench."""
    start = time.perf_counter_ns()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env)
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if done.returncode != 0:
        raise SystemExit(f"exec.py: {' '.join(argv)}: exit {done.returncode}: "
                         f"{done.stderr.decode().strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("exec.py: needs root (sudo)")
    root = Path(tempfile.mkdtemp(prefix="minictr-bench-exec-", dir="/var/tmp"))
    # As sudo leaves it: no PYTHON* variables; bytecode cached where the warm-ups fill it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(MINICTR_ROOT=str(root), PYTHONPYCACHEPREFIX=str(root / "pycache"))
    container = None
    try:
        subprocess.run([MINICTR, "image", "build", "busybox"], env=env, check=True,
                       capture_output=True)
        container = subprocess.Popen([MINICTR, "run", "-i", "--name", "bench", "busybox", "sh",
                                      "-c", "echo ready; read x"], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        assert container.stdout is not None
        if container.stdout.readline().strip() != "ready":
            raise SystemExit("exec.py: the container did not start")
        commands = {"exec": [MINICTR, "exec", "bench", "true"],
                    "run": [MINICTR, "run", "--rm", "busybox", "true"]}
        times: dict[str, list[float]] = {"exec": [], "run": []}
        for n in range(3 + args.runs):
            order = ["exec", "run"] if n % 2 else ["run", "exec"]
            for key in order:
                ms = time_once(commands[key], env)
                if n >= 3:
                    times[key].append(ms)
    finally:
        if container is not None:
            container.communicate("", timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    text = report(times, args.runs)
    print(text)
    if args.write:
        readme = README.read_text()
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{text}\n{END}",
                     readme, flags=re.S)
        README.write_text(new)


def report(times: dict[str, list[float]], runs: int) -> str:
    exec_ms, run_ms = (statistics.median(times[k]) for k in ("exec", "run"))
    ratio = exec_ms / run_ms
    pairs = sorted(e / r for e, r in zip(times["exec"], times["run"], strict=True))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return "\n".join([
        f"{when}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, kernel {platform.release()}; {runs} pairs + 3 warm-ups, "
        "interleaved; milliseconds, wall clock from spawn to exit",
        "",
        "| command | median | min | max |",
        "|---|---:|---:|---:|",
        f"| `minictr exec bench true` | {exec_ms:.1f} | {min(times['exec']):.1f} | "
        f"{max(times['exec']):.1f} |",
        f"| `minictr run --rm busybox true` | {run_ms:.1f} | {min(times['run']):.1f} | "
        f"{max(times['run']):.1f} |",
        f"| ratio exec / run, of the medians (goal <= {GOAL}) | {ratio:.2f} | | |",
        f"| ratio of each pair, median | {statistics.median(pairs):.2f} | {pairs[0]:.2f} | "
        f"{pairs[-1]:.2f} |",
    ])


if __name__ == "__main__":
    main()
