"""The levels (levels/NN_*.py), run as a student runs them, against a fresh busybox image.

Each test checks what a person would see, inside the container and from outside: the root,
the way out of a chroot and where it stops, namespaces, the upper layer, the report, the
memory limit. Every run must leave nothing: its temporary directory (TMPDIR, checked after
each run), and the mounts, cgroups and processes that conftest's leak check looks for.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CGROUP_V2_HOST, Run, mountinfo
from tests.helpers import read_line, scaled

REPO = Path(__file__).resolve().parent.parent
LEVELS = {p.name[:2]: p for p in sorted((REPO / "levels").glob("0[1-9]_*.py"))}
ALL = sorted(LEVELS)
NAMESPACED = [n for n in ALL if n >= "02"]  # unshare: hostname, PID 1, own mount table
OVERLAY = [n for n in ALL if n >= "03"]  # the image's layers below, a fresh upper above
PIVOTED = [n for n in ALL if n >= "04"]  # pivot_root: the host's tree is gone
REPORTING = [n for n in ALL if n >= "05"]  # the change report after the exit

LevelRun = Callable[..., subprocess.CompletedProcess[str]]


def test_there_are_six_levels() -> None:
    assert ALL == ["01", "02", "03", "04", "05", "06"]


# --- what the docstrings say -----------------------------------------------------------------

# A path, then the names up to the next path, the end of the sentence, paragraph, list item
# or table cell.
CITATION = re.compile(r"(minictr/[\w/]+\.py)(.*?)(?=minictr/[\w/]+\.py|\.\s|\.$|\n\s*\n|\n\s*-|\|)",
                      re.DOTALL)


def citations(text: str) -> Iterator[tuple[str, str]]:
    """(file, name) for each `name` right after a minictr/... path, in the same sentence."""
    for m in CITATION.finditer(text):
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", m[2]):
            yield m[1], name


@pytest.mark.parametrize("path", [*LEVELS.values(), *(REPO / "levels").glob("[a-z]*.py"),
                                  REPO / "levels/README.md"], ids=lambda p: p.name)
def test_what_a_level_cites_is_in_minictr(path: Path) -> None:
    """Every minictr file a level names exists, with each function, class or name it cites:
    minictr is being changed while students read these."""
    text = path.read_text()
    for file, name in citations(text):
        source = REPO / file
        assert source.is_file(), f"{path.name} cites {file}, which does not exist"
        code = source.read_text()
        *owner, last = name.split(".")
        for cls in owner:
            assert re.search(rf"^class {cls}\b", code, re.M), f"{path.name}: {file} `{name}`"
        assert re.search(rf"^\s*(def|class) {last}\b|^{last} =", code, re.M), (
            f"{path.name} cites {file} `{name}`, which it does not define")


@pytest.mark.parametrize("n", ALL)
def test_a_level_says_its_idea_chapter_and_function(n: str) -> None:
    """The docstring: "Level NN:", the idea, the tutorial chapter (which exists), minictr."""
    doc = LEVELS[n].read_text().split('"""')[1]
    assert doc.startswith(f"Level {n}: ")
    assert "The idea:" in doc
    chapters = re.findall(r"[Cc]hapters? (\d\d)", doc)
    assert chapters, "no tutorial chapter named"
    for chapter in chapters:
        assert list((REPO / "tutorial/en").glob(f"{chapter}-*.md")), chapter
        assert list((REPO / "tutorial/ja").glob(f"{chapter}-*.md")), chapter
    assert "In minictr:" in doc
    assert f"sudo python3 levels/{LEVELS[n].name} " in doc


# --- running them ----------------------------------------------------------------------------


@pytest.fixture
def level(minictr: Run, minictr_root: Path) -> LevelRun:
    """``level(NN, *args, expect_clean=True)``: `python3 levels/NN_*.py ARGS` against a fresh
    busybox image, as root, stdin /dev/null; TMPDIR is checked empty after the run."""
    minictr("image", "build", "busybox", check=True)
    scratch = minictr_root / "level-tmp"  # on the store's disk: overlay can use it as upper
    scratch.mkdir()

    def run(n: str, *args: str, expect_clean: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, str(LEVELS[n]), *args], env=level_env(
            minictr_root, scratch), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=scaled(60))
        if expect_clean:
            assert list(scratch.iterdir()) == [], f"left behind:\n{result.stderr}"
        return result

    return run


def level_env(root: Path, scratch: Path) -> dict[str, str]:
    return {**os.environ, "MINICTR_ROOT": str(root), "TMPDIR": str(scratch)}


def busybox_layer(root: Path) -> Path:
    (layer,) = [p for p in (root / "layers").iterdir() if p.is_dir()]
    return layer


@pytest.mark.parametrize("n", ALL)
def test_a_missing_image_says_how_to_build_it(n: str, minictr_root: Path) -> None:
    """Exit 125, one line that says which command builds it; nothing made."""
    result = subprocess.run([sys.executable, str(LEVELS[n]), "busybox", "true"],
                            env=level_env(minictr_root, minictr_root), capture_output=True,
                            text=True, timeout=scaled(30))
    assert result.returncode == 125, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"{LEVELS[n].stem}: no such image: busybox")
    assert "sudo minictr image build busybox" in result.stderr
    assert list(minictr_root.iterdir()) == []


@pytest.mark.root
@pytest.mark.parametrize("n", ALL)
def test_the_command_runs_in_the_image(n: str, level: LevelRun, minictr_root: Path) -> None:
    """`/` is the image's; the command's exit code is the level's; a missing command is 127."""
    result = level(n, "busybox", "sh", "-c", "ls /; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout.split() == sorted(os.listdir(busybox_layer(minictr_root)))
    missing = level(n, "busybox", "no-such-command")
    assert missing.returncode == 127, missing.stderr
    assert "no-such-command: No such file or directory" in missing.stderr


@pytest.mark.root
@pytest.mark.parametrize("n", ALL)
def test_the_way_out_of_a_chroot_works_until_pivot_root(n: str, level: LevelRun,
                                                        tmp_path: Path) -> None:
    """chroot, then chdir("..") until ".." is ".", then chroot("."): the escape reaches the
    host's "/" from a chroot (01 to 03), and nothing from a pivot_root (04 on). The escaped
    command only reads a file this test made."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("a file on the host\n")
    kept_in = level(n, "busybox", "cat", str(secret))
    assert kept_in.returncode == 1 and kept_in.stdout == "", kept_in
    escaped = level(n, "--escape", "busybox", "cat", str(secret))
    if n in PIVOTED:
        assert escaped.returncode == 1 and escaped.stdout == "", escaped
        assert "=> no way out: .. of / is / itself" in escaped.stderr
    else:
        assert escaped.returncode == 0, escaped.stderr
        assert escaped.stdout == "a file on the host\n"
        assert "=> escaped: / is the host's /" in escaped.stderr


@pytest.mark.root
def test_a_mount_in_a_chroot_is_a_mount_on_the_host(level: LevelRun, minictr_root: Path) -> None:
    """Level 01 has one mount table: the jail's `mount` shows on the host, and the level then
    refuses to remove the jail (rmtree would delete through the mount) and says how."""
    result = level("01", "busybox", "mount", "-t", "proc", "proc", "/proc", expect_clean=False)
    (jail,) = (minictr_root / "level-tmp").iterdir()
    try:
        assert result.returncode == 125, result
        assert f"{jail} not removed: the jail mounted {jail}/rootfs/proc on the host" in (
            result.stderr)
        assert (f"{jail}/rootfs/proc", "proc", "proc") in mountinfo()
    finally:
        subprocess.run(["umount", f"{jail}/rootfs/proc"], check=False)
        subprocess.run(["rm", "-r", "--one-file-system", jail], check=True)


@pytest.mark.root
@pytest.mark.parametrize("n", NAMESPACED)
def test_a_mount_in_the_container_stays_in_it(n: str, level: LevelRun) -> None:
    """From level 02 on, the container's mounts are in its own mount table, private: not on
    the host, also when the host's / is shared (the leak check fails a test otherwise)."""
    result = level(n, "busybox", "sh", "-c", "mount -t tmpfs inside /mnt && grep -c ' /mnt ' "
                   "/proc/self/mountinfo")
    assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr
    assert not [m for m in mountinfo() if m[2] == "inside"]


@pytest.mark.root
@pytest.mark.parametrize("n", NAMESPACED)
def test_namespaces_a_hostname_and_pid_1(n: str, level: LevelRun) -> None:
    """PID 1, a hostname of its own (the host's is unchanged), and its own UTS, PID, mount
    and IPC namespaces; the network namespace stays the host's (the levels make none)."""
    host = socket.gethostname()
    kinds = ("uts", "pid", "mnt", "ipc", "net")
    script = "echo $$; hostname; " + "; ".join(f"readlink /proc/self/ns/{k}" for k in kinds)
    result = level(n, "busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    pid, hostname, *links = result.stdout.split()
    assert pid == "1"
    assert hostname.startswith("busybox-") and hostname != host
    assert f"=> set the hostname in the new UTS namespace $ hostname {hostname}" in (
        " ".join(result.stderr.split()))
    ours = [os.readlink(f"/proc/self/ns/{k}") for k in kinds]
    assert [a != b for a, b in zip(links, ours, strict=True)] == [True] * 4 + [False]
    assert socket.gethostname() == host


@pytest.mark.root
@pytest.mark.parametrize("n", NAMESPACED)
def test_what_the_container_sees_mounted(n: str, level: LevelRun) -> None:
    """The mounts the container can see: /proc in the chroot of 02; the overlay as / and /proc
    from 03 on. In 03 the host's mounts are only out of sight (the escape above still works);
    from 04 on they are gone."""
    # Fields 5 and 8: the mount point, and the type (a private mount has no optional fields)
    result = level(n, "busybox", "cut", "-d", " ", "-f", "5,8", "/proc/self/mountinfo")
    assert result.returncode == 0, result.stderr
    expected = ["/proc proc"] if n == "02" else ["/ overlay", "/proc proc"]
    assert result.stdout.splitlines() == expected


PIVOT_INTO = ("import sys, importlib; sys.path.insert(0, sys.argv[1]); "
              "importlib.import_module('04_pivot_root').pivot_into(__import__('pathlib').Path("
              "sys.argv[2]))")


@pytest.mark.root
@pytest.mark.parametrize("shared", [False, True], ids=["plain directory", "shared mount"])
def test_pivot_root_s_errors_say_what_to_check(shared: bool, tmp_path: Path) -> None:
    """The errors everyone meets once: a new root that is a plain directory (EBUSY on the root
    filesystem, EINVAL on another), or a shared bind mount of it (EINVAL). Each in a mount
    namespace of its own, made private first, so nothing reaches this one."""
    new_root = tmp_path / "new-root"
    new_root.mkdir()
    call = f"{sys.executable} -c \"{PIVOT_INTO}\" {REPO / 'levels'} {new_root}"
    if shared:
        call = f"mount --make-rshared / && mount --bind {new_root} {new_root} && {call}"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", call],
                            capture_output=True, text=True, timeout=scaled(30))
    assert result.returncode == 125, result
    on_root_fs = os.stat(new_root).st_dev == os.stat("/").st_dev
    if on_root_fs and not shared:
        assert "Device or resource busy: the new root is no mount point (mount --bind" in (
            result.stderr)
    else:
        assert "Invalid argument: a shared mount (mount --make-rprivate /), or a new root" in (
            result.stderr)


def start(n: str, root: Path, *args: str) -> subprocess.Popen[str]:
    """A level in the background; stdout and stderr as one pipe, stdin a pipe."""
    return subprocess.Popen([sys.executable, str(LEVELS[n]), *args],
                            env=level_env(root, root / "level-tmp"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def lines_until(proc: subprocess.Popen[str], last: str) -> list[str]:
    """The lines it prints, up to the one that is ``last``: the container says when it is
    ready, and waits on its stdin (no sleeps)."""
    lines: list[str] = []
    while not lines or lines[-1] != last:
        lines.append(read_line(proc))
        assert len(lines) < 100, lines
    return lines


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate("go on\n", timeout=scaled(30))
    return proc.returncode, out


@pytest.mark.root
@pytest.mark.parametrize("n", OVERLAY)
def test_a_write_lands_in_upper_never_in_the_layer(n: str, level: LevelRun,
                                                   minictr_root: Path) -> None:
    """Seen from outside while the container runs: the new file and the copied-up passwd are
    in upper; the layer has neither change (conftest also hashes every layer after the test).
    Once it exited, the upper is gone with the rest of the level's directory."""
    layer = busybox_layer(minictr_root)
    passwd = (layer / "etc/passwd").read_text()
    proc = start(n, minictr_root, "busybox", "sh", "-c",
                 "echo hello > /root/new.txt; echo x >> /etc/passwd; echo ready; read line")
    try:
        lines = lines_until(proc, "ready")
        (upper,) = {m[1] for line in lines if (m := re.search(r"upperdir=([^,]+),", line))}
        assert Path(upper, "root/new.txt").read_text() == "hello\n"
        assert Path(upper, "etc/passwd").read_text() == passwd + "x\n"
        assert not (layer / "root/new.txt").exists()
        assert (layer / "etc/passwd").read_text() == passwd
    finally:
        code, out = finish(proc)
    assert code == 0, out
    assert not Path(upper).exists()
    assert list((minictr_root / "level-tmp").iterdir()) == []


REPORT_LINE = re.compile(r"^(A|C|D|C O)\s+(/\S*)\s+(.+)$")


@pytest.mark.root
@pytest.mark.parametrize("n", REPORTING)
def test_the_report_says_what_changed(n: str, level: LevelRun) -> None:
    """A new file, a changed /etc/passwd, a removed /bin/ls, a /home removed and made again:
    A, C, D and an opaque C O, each with its reason, and the copied-up parents as C."""
    script = "echo hi > /root/new.txt; echo x >> /etc/passwd; rm /bin/ls; rmdir /home; mkdir /home"
    result = level(n, "busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    report = [m.groups() for line in result.stderr.splitlines() if (m := REPORT_LINE.match(line))]
    assert [(mark, path) for mark, path, _ in report] == [
        ("C", "/bin"), ("D", "/bin/ls"), ("C", "/etc"), ("C", "/etc/passwd"),
        ("C O", "/home"), ("C", "/root"), ("A", "/root/new.txt")]
    why = {path: reason for _, path, reason in report}
    assert why["/bin/ls"] == "whiteout (char 0:0): hides the image's entry"
    assert why["/home"].startswith("opaque: removed and made again")
    assert why["/root/new.txt"] == "new file"
    assert why["/etc"] == "copied up from the image: holds changes below"
    assert re.search(rf"^{LEVELS[n].stem}: busybox-\w+ exited with code 0; what it changed, in "
                     r"its upper layer \(.*/upper\):$", result.stderr, re.M)


@pytest.mark.root
@pytest.mark.parametrize("n", REPORTING)
def test_a_command_that_writes_nothing_changes_nothing(n: str, level: LevelRun) -> None:
    result = level(n, "busybox", "true")
    assert result.returncode == 0, result.stderr
    assert "\nno changes: the upper layer is empty\n" in result.stderr


def cgroup_limit_file(proc_self_cgroup: str) -> Path:
    """The memory limit file of the cgroup a process's /proc/self/cgroup names."""
    if CGROUP_V2_HOST:
        (path,) = [line[3:] for line in proc_self_cgroup.splitlines() if line.startswith("0::")]
        return Path("/sys/fs/cgroup", path.lstrip("/"), "memory.max")
    (path,) = [line.split(":", 2)[2] for line in proc_self_cgroup.splitlines()
               if line.split(":")[1] == "memory"]
    return Path("/sys/fs/cgroup/memory", path.lstrip("/"), "memory.limit_in_bytes")


@pytest.mark.root
def test_the_memory_limit_seen_inside_and_outside(minictr: Run, minictr_root: Path) -> None:
    """Inside, /proc/self/cgroup names the level's cgroup; outside, while it runs, that
    cgroup holds the container's PID 1 and the limit, 16 MiB; after it exited, it is gone."""
    minictr("image", "build", "busybox", check=True)
    (minictr_root / "level-tmp").mkdir()
    proc = start("06", minictr_root, "--memory", "16m", "busybox", "sh", "-c",
                 "cat /proc/self/cgroup; echo ready; read line")
    try:
        lines = lines_until(proc, "ready")
        cgroups = "\n".join(line for line in lines if re.match(r"^\d+:[\w,=]*:/", line))
        limit = cgroup_limit_file(cgroups)
        assert limit.parent.name.startswith("minictr-level06-")
        assert limit.read_text() == f"{16 << 20}\n"
        (pid,) = {m[1] for line in lines if (m := re.search(r"PID 1 inside, (\d+) outside", line))}
        assert (limit.parent / "cgroup.procs").read_text().split() == [pid]
    finally:
        code, out = finish(proc)
    assert code == 0, out
    assert re.search(r"^limits: memory peak [\d.]+ MiB of 16 MiB, OOM kills: 0$", out, re.M)
    assert not limit.parent.exists()


@pytest.mark.root
@pytest.mark.parametrize(("memory", "code"), [("16m", 137), ("512m", 0)])
def test_past_the_limit_the_oom_killer_ends_it(memory: str, code: int, level: LevelRun) -> None:
    """A string doubled 26 times (64 MiB, and copies of it): killed at 16 MiB, exit 137 (128 +
    SIGKILL), one OOM kill counted; under 512 MiB it finishes."""
    grow = "a=a; i=0; while [ $i -lt 26 ]; do a=$a$a; i=$((i+1)); done; echo survived"
    result = level("06", "--memory", memory, "busybox", "sh", "-c", grow)
    assert result.returncode == code, result.stderr
    assert ("survived" in result.stdout) == (code == 0)
    kills = re.search(r"^limits: memory peak [\d.]+ MiB of \d+ MiB, OOM kills: (\d+)$",
                      result.stderr, re.M)
    assert kills, result.stderr
    assert (int(kills[1]) > 0) == (code == 137)
