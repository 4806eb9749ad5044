"""`minictr demo overlay` against the real kernel: what it leaves in DIR, what it prints,
--pause, --cleanup, and bad input.

Every demo runs under /var/tmp (on the disk, not tmpfs), as a subprocess, as a user runs it.
Pausing is synchronised on the demo's own output, never on sleeps.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from minictr import libc
from minictr.errors import StepError
from minictr.explain import step
from minictr.show import demo
from tests.conftest import fstype_of, mounts_under
from tests.helpers import refused, scaled, tree_digest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent
STEPS = 19  # part 1: 13 (two of them the article's mount -l checks), part 2: 6
PART_1_STEPS = 13

# What the article's commands, and part 2's, print: each must appear as a `$ ` line.
SHELL_LINES = [
    "$ mkdir lower upper work merged",
    "$ sudo mount -t overlay -o lowerdir=lower,upperdir=upper,workdir=work,"
    "redirect_dir=off,metacopy=off,index=off overlay merged",
    "$ touch merged/testfile_overlay",
    "$ sudo umount merged",
    "$ touch lower/testfile_lower",
    "$ touch upper/testfile_upper",
    "$ echo test > merged/testfile_lower",
    "$ echo test > merged/testfile_upper",
    "$ rm merged/testfile_overlay",
    "$ rm merged/testfile_lower",
    "$ mkdir lower/testdir_lower",
    "$ rm -rf merged/testdir_lower",
    "$ mkdir merged/testdir_lower",
    "$ mv merged/testfile_old merged/testfile_new",
]

# The end state. Lower is exactly what the demo put there while unmounted: no write through
# merged reached it. Upper has the article's whiteout for testfile_lower, and part 2's.
WHITEOUT = "whiteout"
OPAQUE_EMPTY_DIR = "opaque empty dir"
FINAL_LOWER = {
    "testfile_lower": b"",
    "testdir_lower/": None,
    "testdir_lower/testfile_a": b"",
    "testdir_lower/testfile_b": b"",
    "testfile_old": b"lower\n",
}
FINAL_UPPER = {
    "testfile_lower": WHITEOUT,
    "testfile_upper": b"test\n",
    "testdir_lower/": OPAQUE_EMPTY_DIR,
    "testfile_old": WHITEOUT,
    "testfile_new": b"lower\n",
}


@pytest.fixture
def base() -> Iterator[Path]:
    """A fresh directory on the disk, removed afterwards unless something is mounted in it
    (the leak check then names the mount)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="minictr-demo-test-"))
    assert fstype_of(path) not in ("tmpfs", "overlay"), "/var/tmp must be on the disk"
    yield path
    if not mounts_under(path):
        shutil.rmtree(path)


def run_demo(*args: str | Path, input: str | None = None, cwd: Path = REPO
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minictr", "demo", "overlay", *map(str, args)],
        input=input, stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True, text=True, cwd=cwd, timeout=scaled(60),
        env={**os.environ, "NO_COLOR": ""},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stderr == ""
    return result.stdout


def contents(root: Path) -> dict[str, object]:
    """Every entry under root: a file's bytes, a whiteout, an (opaque) directory."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found[rel] = WHITEOUT
            elif stat.S_ISDIR(st.st_mode):
                opaque = _xattr(path, "trusted.overlay.opaque") == b"y"
                empty = not any(path.iterdir())
                found[rel + "/"] = OPAQUE_EMPTY_DIR if opaque and empty else (
                    "opaque dir" if opaque else None)
            else:
                found[rel] = path.read_bytes()
    return found


def _xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name)
    except OSError:
        return None


def without_paths(stdout: str, directory: Path) -> str:
    return stdout.replace(str(directory), "DIR")


# --- a whole run ------------------------------------------------------------------------------


def test_the_article_experiment_and_part_2_leave_the_expected_layers(base):
    d = base / "demo"
    out = ok(run_demo("--dir", d))

    assert sorted(os.listdir(d)) == ["lower", "merged", "upper", "work"]
    assert contents(d / "lower") == FINAL_LOWER
    assert contents(d / "upper") == FINAL_UPPER
    whiteout = (d / "upper" / "testfile_lower").lstat()
    assert stat.S_ISCHR(whiteout.st_mode) and stat.S_IMODE(whiteout.st_mode) == 0
    assert (os.major(whiteout.st_rdev), os.minor(whiteout.st_rdev)) == (0, 0)
    assert os.listdir(d / "work") == ["work"]
    assert os.listdir(d / "merged") == []
    assert not os.path.ismount(d / "merged")
    assert mounts_under(base) == []

    for line in SHELL_LINES:
        assert line in out.splitlines(), line
    # the whiteout as the article shows it (ls -al upper/): c--------- 1 root root 0, 0; a
    # link count of 2 while work/work holds the kernel's shared whiteout (Linux 5.8+)
    assert re.search(r"^│   ├── testfile_lower +c--------- [12] root root 0, 0  \(whiteout\)$",
                     out, re.M)
    # the article's check, after the first mount and after the first unmount
    merged = d / "merged"
    mount_l = [line for line in out.splitlines() if line.startswith("overlay on ")]
    assert len(mount_l) == 1 and mount_l[0].startswith(  # then what this kernel adds
        f"overlay on {merged} type overlay (rw,relatime,lowerdir=lower,upperdir=upper,"
        "workdir=work"), mount_l
    assert "(nothing: grep found no overlay line)" in out
    assert re.search(r"testdir_lower/ +trusted\.overlay\.opaque=y  \(opaque\)$", out, re.M)
    assert "work/  d---------" in out  # work/work, not entered
    assert "not mounted: an empty directory" in out
    assert f"[{STEPS}/{STEPS}] unmount" in out
    assert "press Enter" not in out
    assert "\x1b[" not in out  # no colour: not a terminal
    assert str(d) in out.splitlines()[0]


def test_part_1_stops_where_the_article_ends(base):
    """--part 1: the article's experiment only; the directory is as the article leaves it:
    lower/testfile_lower, and in upper its whiteout and testfile_upper; nothing mounted."""
    d = base / "demo"
    out = ok(run_demo("--dir", d, "--part", "1"))
    assert f"[{PART_1_STEPS}/{PART_1_STEPS}] unmount" in out and "Part 2" not in out
    assert contents(d / "lower") == {"testfile_lower": b""}
    assert contents(d / "upper") == {"testfile_lower": WHITEOUT, "testfile_upper": b"test\n"}
    assert mounts_under(base) == []
    refused(run_demo("--dir", base / "other", "--part", "3"), "--part")
    assert not (base / "other").exists()


def test_the_output_is_the_same_every_time_and_on_tmpfs(base):
    """Sorted, no times, no inode numbers: the tutorial can check it. tmpfs can hold an
    upperdir (whiteouts, trusted.* xattrs), so the demo accepts it and says the same there."""
    first, second = base / "first", base / "second"
    tmpfs = base / "tmpfs"
    tmpfs.mkdir()
    out_1 = without_paths(ok(run_demo("--dir", first)), first)
    out_2 = without_paths(ok(run_demo("--dir", second)), second)
    assert out_1 == out_2
    libc.mount("tmpfs", str(tmpfs), "tmpfs", 0, "size=4m")
    try:
        out_tmpfs = without_paths(ok(run_demo("--dir", tmpfs / "demo")), tmpfs / "demo")
        assert contents(tmpfs / "demo" / "upper") == FINAL_UPPER
    finally:
        libc.umount2(str(tmpfs))
    assert out_tmpfs == out_1


def test_default_directory_is_new_under_the_current_one(base):
    out = ok(run_demo(cwd=base))
    assert f"in {base / 'overlay-demo'}" in out.splitlines()[0]
    out = ok(run_demo(cwd=base))
    assert f"in {base / 'overlay-demo-2'}" in out.splitlines()[0]
    assert contents(base / "overlay-demo-2" / "upper") == FINAL_UPPER


# --- --pause ------------------------------------------------------------------------------------


def test_pause_reads_one_line_per_step(base):
    out = ok(run_demo("--pause", "--dir", base / "d", input="\n" * STEPS))
    assert out.count("[press Enter to run this step]") == STEPS


@pytest.mark.parametrize("lines", [0, 3])
def test_pause_goes_on_at_end_of_input(base, lines):
    out = ok(run_demo("--pause", "--dir", base / "d", input="\n" * lines))
    assert out.count("[press Enter to run this step]") == STEPS
    assert contents(base / "d" / "upper") == FINAL_UPPER


def start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "minictr", "demo", "overlay", *map(str, args)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=REPO,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    """Whatever happened: no demo left running, no pipe left open."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def read_until(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if text in line:
            return
    pytest.fail(f"the demo ended before printing {text!r}")


def enter(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def test_pause_waits_before_each_step(base):
    d = base / "d"
    proc = start("--pause", "--dir", d)
    try:
        read_until(proc, "press Enter")
        assert os.listdir(d) == []  # step 1 not done yet
        enter(proc)
        read_until(proc, "[2/")
        read_until(proc, "press Enter")
        assert sorted(os.listdir(d)) == ["lower", "merged", "upper", "work"]
        assert not os.path.ismount(d / "merged")  # step 2 not done yet
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # end of input: the rest runs straight through
        assert proc.stdout.read().count("press Enter") == STEPS - 2
        assert proc.wait(timeout=scaled(60)) == 0
    finally:
        stop(proc)
    assert contents(d / "upper") == FINAL_UPPER


def test_ctrl_c_while_mounted_unmounts(base):
    d = base / "d"
    proc = start("--pause", "--dir", d)
    try:
        for _ in range(4):  # mkdir, mount, mount -l, touch
            read_until(proc, "press Enter")
            enter(proc)
        read_until(proc, "[5/")
        read_until(proc, "press Enter")
        assert os.path.ismount(d / "merged")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=scaled(60))
    finally:
        stop(proc)
    assert proc.returncode == 130, err
    assert not os.path.ismount(d / "merged")
    assert os.listdir(d / "upper") == ["testfile_overlay"]  # left for inspection


def test_busy_merged_is_detached_and_named(base):
    """A shell of the audience cd'd into merged: umount says EBUSY; the demo stops with one
    line and detaches the mount lazily, so nothing stays in the mount table."""
    d = base / "d"
    proc = start("--pause", "--dir", d)
    holder = None
    try:
        for _ in range(3):
            read_until(proc, "press Enter")
            enter(proc)
        read_until(proc, "[4/")
        read_until(proc, "press Enter")
        holder = subprocess.Popen(["sleep", "60"], cwd=d / "merged")
        enter(proc)
        _, err = proc.communicate(timeout=scaled(60))
        assert proc.returncode == 125, err
        assert len(err.strip().splitlines()) == 1
        assert "[EBUSY]" in err and "umount -l" in err
        assert not os.path.ismount(d / "merged")
    finally:
        stop(proc)
        if holder is not None:
            holder.kill()
            holder.wait()


# --- --cleanup ------------------------------------------------------------------------------


def test_cleanup_removes_the_directory_it_made(base):
    out = ok(run_demo("--cleanup", "--dir", base / "d"))
    assert "Removed" in out.splitlines()[-1]
    assert os.listdir(base) == []


def test_cleanup_keeps_an_empty_directory_it_was_given(base):
    ok(run_demo("--cleanup", "--dir", base))
    assert os.listdir(base) == []


def test_cleanup_of_the_default_directory(base):
    ok(run_demo("--cleanup", cwd=base))
    assert os.listdir(base) == []


# --- bad input: one line, exit 125, nothing touched ----------------------------------------


def test_refuses_a_non_empty_directory(base):
    (base / "keep").write_text("mine\n")
    before = tree_digest(base)
    refused(run_demo("--dir", base), "not empty")
    assert tree_digest(base) == before


def test_refuses_a_file_and_a_missing_parent(base):
    (base / "file").write_text("mine\n")
    before = tree_digest(base)
    refused(run_demo("--dir", base / "file"), "not a directory")
    refused(run_demo("--dir", base / "no" / "such"), "no such directory")
    assert tree_digest(base) == before


@pytest.mark.parametrize("exists", [True, False])
def test_refuses_a_directory_inside_an_overlay(base, exists):
    """As inside a container: overlay cannot use an overlay as its upperdir."""
    for name in ("lower", "upper", "work", "merged"):
        (base / name).mkdir()
    options = f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work"
    libc.mount("overlay", str(base / "merged"), "overlay", 0, options)
    try:
        target = base / "merged" / "d"
        if exists:
            target.mkdir()
        before = tree_digest(base / "upper")
        refused(run_demo("--dir", target), "on overlay", "cannot use as upperdir")
        assert tree_digest(base / "upper") == before
        assert target.exists() == exists
    finally:
        libc.umount2(str(base / "merged"))


# A kernel without overlay cannot be had on this host (overlay is built in or loads on
# demand). What can be checked honestly: how the demo reads the kernel's lists, and that the
# errno the real kernel gives for a filesystem type it does not know, ENODEV, gets the
# modprobe hint.


def test_kernel_has_overlay_reads_the_kernels_lists():
    assert demo.kernel_has_overlay(Path("/proc/filesystems").read_text(), "")
    without = "nodev\tsysfs\nnodev\ttmpfs\n\text4\n"
    assert not demo.kernel_has_overlay(without, "")
    assert not demo.kernel_has_overlay(without, "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko\n")
    assert demo.kernel_has_overlay(without, "kernel/fs/overlayfs/overlay.ko.xz:\n")
    assert demo.kernel_has_overlay(without + "nodev\toverlay\n", "")


def test_a_kernel_without_the_filesystem_gets_the_modprobe_hint(tmp_path):
    with pytest.raises(StepError) as caught, step("mount the overlay", demo.MOUNT_SHELL,
                                                  demo.MOUNT_HINTS):
        libc.mount("overlay", str(tmp_path), "minictr-no-such-fs", 0, None)
    assert caught.value.errno == errno.ENODEV
    assert str(caught.value).startswith("minictr: mount the overlay: No such device")
    assert str(caught.value).endswith("[ENODEV]: this kernel has no overlay filesystem: "
                                      "sudo modprobe overlay")
