"""A start that fails, at any step, leaves the image as it was and nothing behind (issue 17).

The users' hosts run systemd, which mounts `/` shared: a mount that a container's namespace
does not cut off comes back to the host, and a removal that walks into it deletes the image.
So each test here runs minictr in a mount namespace of its own whose `/` is shared (as under
systemd) or private (as on a plain Debian host): `unshare --mount --propagation shared`.

Every step of a start is made to fail in turn (MINICTR_FAIL_AT, see minictr.explain): with an
error (EIO, as if the kernel refused it), or by a SIGKILL (of the runtime for its own steps and
the shim's, then `minictr prune` must clean up; of the init for its steps); and a command that
does not exist. After each one: no container directory, no name, no mount under MINICTR_ROOT,
and every layer still hashes to its digest (tests.helpers.damaged_layers: byte for byte).

The driver runs *inside* the new namespace (`python -m tests.test_failed_starts`): a mount
left behind there is seen only from there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import damaged_layers, scaled

USERNS = ["--userns", "100000:65536"]
MODES = {"plain": [], "userns": USERNS}
LAST_START_STEP = "minictr.run.container.exec_command"


def in_namespace(propagation: str, *argv: str, timeout: float = 600) -> str:
    """Run ARGV in a new mount namespace whose mounts are all ``propagation``; its stdout."""
    result = subprocess.run(["unshare", "--mount", "--propagation", propagation, *argv],
                            capture_output=True, text=True, timeout=scaled(timeout),
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout


def drive(propagation: str, plan: dict[str, object]) -> list[dict[str, object]]:
    """The driver below, in a namespace of its own, following ``plan``: what it saw."""
    out = in_namespace(propagation, sys.executable, "-m", "tests.test_failed_starts",
                       json.dumps(plan))
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def busybox(minictr: object, minictr_root: Path) -> Path:
    minictr("image", "build", "busybox", check=True)  # type: ignore[operator]
    return minictr_root


@pytest.mark.root
@pytest.mark.parametrize("propagation", ["shared", "private"])
def test_userns_works_on_a_shared_root_and_keeps_the_image(busybox: Path, propagation: str) -> None:
    """The issue's reproduction: on a shared `/` this run failed at pivot_root (EINVAL), and
    its cleanup deleted the busybox layer through a mount that had come back to the host."""
    [seen] = drive(propagation, {"root": str(busybox), "runs": [
        {"args": ["run", *USERNS, "busybox", "sh", "-c", "id -u; cat /proc/self/uid_map"]},
    ]})
    assert seen["rc"] == 0, seen
    assert seen["stdout"].split()[:4] == ["0", "0", "100000", "65536"], seen
    assert seen["mounts"] == [], seen
    assert seen["damaged"] == [], seen


@pytest.mark.root
@pytest.mark.parametrize(("mode", "propagation", "how"), [
    ("plain", "shared", "error"), ("plain", "shared", "kill"), ("plain", "private", "error"),
    ("userns", "shared", "error"), ("userns", "shared", "kill"), ("userns", "private", "error"),
])
def test_every_step_of_a_start_failing_leaves_nothing(
    busybox: Path, minictr: object, mode: str, propagation: str, how: str
) -> None:
    steps = start_steps(minictr, MODES[mode])
    suffix = ":kill" if how == "kill" else ""
    runs = [{"args": ["run", *MODES[mode], "busybox", "true"], "fail_at": s + suffix,
             "prune": how == "kill", "no_trace": True} for s in steps]
    runs.append({"args": ["run", *MODES[mode], "busybox", "/no/such/command"], "no_trace": True})
    seen = drive(propagation, {"root": str(busybox), "runs": runs})
    assert seen[-1]["rc"] == 127 and seen[-1]["containers"] == [], seen[-1]
    assert seen[-1]["mounts"] == [] and seen[-1]["damaged"] == [], seen[-1]
    assert len(seen) == len(steps) + 1
    for step, result in zip(steps, seen[:-1], strict=True):
        where = f"{how} at {step}: {result}"
        if how == "error":  # the runtime reports it: one line, 125, and no trace
            assert result["rc"] == 125, where
            assert "failed on purpose" in result["stderr"], where
        else:  # a killed runtime (-9) or its report of a killed init (125)
            assert result["rc"] in (-9, 125), where
        assert result["containers"] == [] and result["names"] == [], where
        assert result["mounts"] == [], where
        assert result["damaged"] == [], where
    minictr("run", "--rm", *MODES[mode], "busybox", "true", check=True)  # type: ignore[operator]


def start_steps(minictr: object, mode_args: list[str]) -> list[str]:
    """The functions (as --explain names them) of every step up to the command's exec."""
    r = minictr("run", "--rm", "--explain", *mode_args, "busybox", "true",  # type: ignore[operator]
                check=True)
    steps: list[str] = []
    for line in r.stderr.splitlines():
        if "=> " in line and line.rstrip().endswith("]"):
            where = line.rstrip()[:-1].rsplit("[", 1)[1].split(": ")[-1]  # [init: where]
            if where not in steps:
                steps.append(where)
            if where == LAST_START_STEP:
                return steps
    raise AssertionError(f"no {LAST_START_STEP} in the --explain output:\n{r.stderr}")


# --- the driver, run inside the new mount namespace -----------------------------------------


def main(plan: dict[str, object]) -> None:
    """For each run of the plan: run it, prune if asked, and print what is left, as JSON."""
    root = Path(str(plan["root"]))
    for run in plan["runs"]:  # type: ignore[attr-defined]
        env = {**os.environ, "MINICTR_ROOT": str(root)}
        if run.get("fail_at"):
            env["MINICTR_FAIL_AT"] = run["fail_at"]
        r = subprocess.run([sys.executable, "-m", "minictr", *run["args"]], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=scaled(60))
        if run.get("prune"):
            subprocess.run([sys.executable, "-m", "minictr", "prune"], check=True,
                           env={**os.environ, "MINICTR_ROOT": str(root)},
                           capture_output=True, timeout=scaled(60))
        print(json.dumps({
            "rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr[-2000:],
            "containers": sorted(os.listdir(root / "containers")) if run.get("no_trace") else [],
            "names": sorted(os.listdir(root / "names")) if run.get("no_trace") else [],
            "mounts": [p for p in mount_points() if p.startswith(str(root) + "/")],
            "damaged": damaged_layers(root),
        }), flush=True)


def mount_points() -> list[str]:
    from minictr.fs.remove import mounts_under

    return mounts_under(Path("/"))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
