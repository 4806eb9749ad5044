"""-v, --tmpfs, --read-only, -w, -u, --entrypoint (issue 14): real containers, real mounts.

A volume's writes reach the host and are not in the upper; :ro and --read-only refuse writes;
a hostile image's symlink at a volume's container path (or at /etc/passwd for -u) is refused;
bad input is one line, exit 125, nothing made; and each new mount's --explain line is what the
container's mountinfo has (the pattern of test_explain.py, reused)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import refused
from tests.test_explain import explained_mounts, mountinfo

pytestmark = pytest.mark.root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "in").write_text("from the host\n")
    return d


def diff_of(minictr, name: str) -> list[str]:
    return minictr("diff", name, check=True).stdout.splitlines()


def test_a_volume_s_writes_reach_the_host_and_are_not_in_the_upper(minictr, data):
    r = minictr("run", "--name", "v", "-v", f"{data}:/data", "busybox", "sh", "-c",
                "cat /data/in; echo out > /data/out; mkdir /data/d; echo up > /up")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "from the host\n"
    assert (data / "out").read_text() == "out\n" and (data / "d").is_dir()
    # The mount point the image lacked was made in upper (as Docker makes it); nothing below it
    assert diff_of(minictr, "v") == ["A /data", "A /up"]
    assert (f"volumes: /data (from {data}, rw): its writes are on the host, not in upper"
            in r.stderr.splitlines())
    minictr("rm", "v", check=True)
    assert (data / "out").exists()  # rm removes the container, never the volume's files


def test_a_read_only_volume_refuses_writes(minictr, data):
    r = minictr("run", "--rm", "-v", f"{data}:/data:ro", "busybox", "sh", "-c",
                "cat /data/in; echo x > /data/out")
    assert r.returncode == 1 and r.stdout == "from the host\n"
    assert "Read-only file system" in r.stderr
    assert sorted(os.listdir(data)) == ["in"]
    assert "(from " in r.stderr and ", ro): its writes" in r.stderr


def test_read_only_refuses_writes_to_root_but_tmpfs_and_dev_shm_work(minictr):
    r = minictr("run", "--name", "ro", "--read-only", "--tmpfs", "/tmp", "busybox", "sh", "-c",
                "echo a > /tmp/a && cat /tmp/a; echo b > /dev/shm/b && cat /dev/shm/b; "
                "grep -E ' /tmp ' /proc/self/mountinfo; echo c > /c")
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["a", "b"]
    assert "nosuid,nodev,noexec" in lines[2] and "tmpfs" in lines[2]  # Docker's --tmpfs
    assert "can't create /c: Read-only file system" in r.stderr
    assert diff_of(minictr, "ro") == []  # the upper still exists, and nothing reached it
    minictr("rm", "ro", check=True)


def test_tmpfs_on_a_missing_path_and_its_report_line(minictr):
    r = minictr("run", "--rm", "--tmpfs", "/scratch", "busybox", "sh", "-c",
                "echo x > /scratch/x && stat -c %a /scratch")
    assert (r.returncode, r.stdout) == (0, "1777\n"), r.stderr
    assert "tmpfs: /scratch: in memory, gone with the container, not in upper" in r.stderr


def test_a_volume_over_etc_hosts_wins_over_minictr_s_own(minictr, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.7 mine\n")
    r = minictr("run", "--rm", "-v", f"{hosts}:/etc/hosts:ro", "busybox", "cat", "/etc/hosts")
    assert (r.returncode, r.stdout) == (0, "192.0.2.7 mine\n"), r.stderr


def test_the_host_s_root_as_a_volume_is_that_filesystem_only(minictr):
    # Not recursive: none of the host's mounts below / (its /proc, /dev, /sys) ride along
    r = minictr("run", "--rm", "-v", "/:/host:ro", "busybox", "sh", "-c",
                "test -d /host/etc && ls -A /host/proc | wc -l; touch /host/x")
    assert r.returncode == 1 and r.stdout.split() == ["0"], r.stderr
    assert "Read-only file system" in r.stderr
    assert not os.path.exists("/x")


def test_a_host_path_with_spaces_and_quotes(minictr, tmp_path):
    odd = tmp_path / "my data 'q' $x"
    odd.mkdir()
    r = minictr("run", "--rm", "--explain", "-v", f"{odd}:/data", "busybox", "sh", "-c",
                "echo hi > /data/f")
    assert r.returncode == 0, r.stderr
    assert (odd / "f").read_text() == "hi\n"
    assert "mount --bind " + re.sub(r"([ '$])", r"\\\1", str(odd)) in r.stderr


# --- bad input: one line, exit 125, nothing made --------------------------------------------


@pytest.mark.parametrize(("args", "words"), [
    (["-v", "/no/such/dir:/data"], "does not exist"),  # os.strerror: No such file or directory
    (["-v", "relative:/data"], "is relative"),
    (["-v", "{d}:data"], "is relative"),
    (["-v", "{d}/../data:/data"], "'..'"),
    (["-v", "{d}:/a/../b"], "'..'"),
    (["-v", "{d}:/data:rw:x"], "invalid volume"),
    (["-v", "{d}:/data:rx"], "invalid volume"),
    (["-v", "{d}:/da,ta"], "',' or ':'"),
    (["-v", "{d}:/"], "container's root is the overlay"),
    (["-v", "{d}:/proc"], "under /proc, /sys or /dev"),
    (["-v", "{d}:/dev/x"], "under /proc, /sys or /dev"),
    (["-v", "{d}:/sys/fs"], "under /proc, /sys or /dev"),
    (["-v", "{d}:/da\x1bta"], "control character"),
    (["-v", "{d}:/data", "--tmpfs", "/data"], "two volumes or tmpfs mounts"),
    (["--tmpfs", "/"], "container's root"),
    (["--tmpfs", "/run:size=1m"], "options are not supported"),
    (["-w", "relative"], "not an absolute path"),
    (["-u", "a:b:c"], "invalid user"),
    (["-u", "4294967295"], "out of range"),
    (["-u", ""], "invalid user"),
], ids=lambda v: "" if isinstance(v, list) else v)
def test_bad_input_is_one_line_and_nothing_is_made(minictr, minictr_root, data, args, words):
    minictr("image", "build", "busybox", check=True)
    argv = [a.replace("{d}", str(data)) for a in args]
    r = minictr("run", "--rm", *argv, "busybox", "true")
    if words == "does not exist":
        refused(r, "/no/such/dir", "No such file or directory")
    else:
        refused(r, words)
    assert os.listdir(minictr_root / "containers") == []
    assert sorted(os.listdir(data)) == ["in"]


# --- a hostile image: symlinks where a volume goes ------------------------------------------


def hostile_image(minictr, tmp_path: Path, name: str, change: Callable[[Path], None]) -> None:
    """busybox's files, changed by ``change``, imported as image ``name``."""
    minictr("image", "build", "busybox", check=True)
    layer = Path(json.loads(minictr("image", "inspect", "busybox", check=True).stdout)
                 [0]["layers"][0]["path"])
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", layer, rootfs], check=True)
    change(rootfs)
    subprocess.run(["tar", "-C", rootfs, "-cf", tmp_path / "bad.tar", "."], check=True)
    minictr("image", "import", tmp_path / "bad.tar", name, check=True)


def _link(path: str, target: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(target)
    return change


@pytest.mark.parametrize(("link", "target", "cpath"), [
    ("data", "/etc", "/data"),  # the volume's own path: onto the host's /etc, before pivot_root
    ("data", "../../..", "/data"),
    ("a", "/var/tmp", "/a/b"),  # a component above it
    ("a/b", "/", "/a/b/c"),  # one in the middle
    ("tmp", "/etc", "/tmp"),  # --tmpfs too
], ids=["abs", "dotdot", "first-component", "middle-component", "tmpfs"])
def test_a_symlink_in_the_image_at_a_volume_path_is_refused(minictr, minictr_root, tmp_path,
                                                            data, link, target, cpath):
    def change(root: Path) -> None:
        if (root / link).is_dir() and not (root / link).is_symlink():
            subprocess.run(["rm", "-rf", root / link], check=True)
        _link(link, target)(root)

    hostile_image(minictr, tmp_path, "bad", change)
    etc = os.stat("/etc").st_mtime_ns
    flag = ["--tmpfs", cpath] if link == "tmp" else ["-v", f"{data}:{cpath}"]
    r = minictr("run", "--rm", *flag, "bad", "true")
    refused(r, f"mount a volume: /{link} is a symlink in the image (to {target}): refused")
    assert os.listdir(minictr_root / "containers") == []
    assert os.stat("/etc").st_mtime_ns == etc
    assert sorted(os.listdir(data)) == ["in"]


def test_a_volume_file_onto_an_image_directory_is_refused(minictr, tmp_path):
    f = tmp_path / "f"
    f.write_text("x\n")
    minictr("image", "build", "busybox", check=True)
    refused(minictr("run", "--rm", "-v", f"{f}:/etc", "busybox", "true"),
            "/etc is a directory in the image, and the host path a file")


# --- -u, -w, --entrypoint ---------------------------------------------------------------------


@pytest.mark.parametrize(("user", "out"), [
    ("nobody", "65534 65534 /nonexistent"),  # by name, from the image's /etc/passwd; its HOME
    ("65534", "65534 65534 /nonexistent"),  # a uid the image has: its gid and home
    ("nobody:0", "65534 0 /nonexistent"),
    ("nobody:tty", "65534 5 /nonexistent"),  # a group by name, from /etc/group
    ("1234", "1234 0 /"),  # a uid the image lacks: gid 0, HOME /
    ("1234:55", "1234 55 /"),
    ("0:0", "0 0 /root"),
    ("4294967294:4294967294", "4294967294 4294967294 /"),  # the largest id there is
])
def test_user(minictr, user, out):
    r = minictr("run", "--rm", "-u", user, "busybox", "sh", "-c",
                "echo $(id -u) $(id -g) $HOME; grep CapEff /proc/self/status")
    assert r.returncode == 0, r.stderr
    ids, caps = r.stdout.splitlines()
    assert ids == out
    # A non-root user gets none of the bounding set at its exec (capabilities(7))
    assert caps.split()[1] == ("00000000a80425fb" if user == "0:0" else "0000000000000000")


def test_a_user_or_group_the_image_lacks_is_refused(minictr, minictr_root):
    minictr("image", "build", "busybox", check=True)
    refused(minictr("run", "--rm", "-u", "nosuch", "busybox", "true"), "unable to find user nosuch")
    refused(minictr("run", "--rm", "-u", "nobody:nosuch", "busybox", "true"),
            "unable to find group nosuch")
    assert os.listdir(minictr_root / "containers") == []


@pytest.mark.parametrize(("change", "words"), [
    (lambda r: ((r / "etc/passwd").unlink(), (r / "etc/passwd").symlink_to("/etc/shadow")),
     "/etc/passwd in the image: Too many levels of symbolic links"),
    (lambda r: (subprocess.run(["rm", "-rf", r / "etc"], check=True),
                (r / "etc").symlink_to("/etc")), "/etc in the image:"),
    (lambda r: ((r / "etc/passwd").unlink(), os.mkfifo(r / "etc/passwd")),
     "/etc/passwd in the image is not a regular file"),
    (lambda r: (r / "etc/passwd").write_bytes(b"x" * (1 << 20) + b"\nnobody:x:1:1::/:/bin/sh\n"),
     "larger than 1048576 bytes"),
], ids=["passwd-symlink", "etc-symlink", "passwd-fifo", "passwd-huge"])
def test_a_hostile_etc_passwd_is_refused(minictr, minictr_root, tmp_path, change, words):
    hostile_image(minictr, tmp_path, "bad", change)
    refused(minictr("run", "--rm", "-u", "nobody", "bad", "true"), words)
    assert os.listdir(minictr_root / "containers") == []
    # UID:GID needs no lookup. (Not `id`: the image's own libc would open that FIFO and wait)
    r = minictr("run", "--rm", "-u", "1000:1000", "bad", "grep", "^Uid:", "/proc/self/status")
    assert (r.returncode, r.stdout.split()[:2]) == (0, ["Uid:", "1000"]), r.stderr


def test_bad_lines_of_etc_passwd_are_skipped(minictr, tmp_path):
    def change(root: Path) -> None:
        (root / "etc/passwd").write_text("evil:x:99999999999:0::/:/bin/sh\nshort:x:5\n"
                                         "ok:x:42:43::/home/ok:/bin/sh\n")
    hostile_image(minictr, tmp_path, "odd", change)
    refused(minictr("run", "--rm", "-u", "evil", "odd", "true"), "unable to find user evil")
    r = minictr("run", "--rm", "-u", "ok", "odd", "sh", "-c", "echo $(id -u) $(id -g) $HOME")
    assert (r.returncode, r.stdout) == (0, "42 43 /home/ok\n"), r.stderr


def test_workdir(minictr):
    r = minictr("run", "--name", "w", "-w", "/work/here", "busybox", "pwd")
    assert (r.returncode, r.stdout) == (0, "/work/here\n"), r.stderr
    assert diff_of(minictr, "w") == ["A /work", "A /work/here"]  # made, as Docker makes it
    minictr("rm", "w", check=True)
    r = minictr("run", "--rm", "--read-only", "-w", "/nowhere", "busybox", "pwd")
    refused(r, "Read-only file system", "--read-only: the working directory must exist")


def test_entrypoint(minictr):
    r = minictr("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b")
    assert (r.returncode, r.stdout) == (0, "a b\n"), r.stderr
    # --entrypoint clears the image's CMD too: echo with no arguments
    r = minictr("run", "--rm", "--entrypoint", "echo", "busybox")
    assert (r.returncode, r.stdout) == (0, "\n"), r.stderr
    r = minictr("run", "--rm", "--entrypoint", "", "busybox", "echo", "c")
    assert (r.returncode, r.stdout) == (0, "c\n"), r.stderr
    refused(minictr("run", "--rm", "--entrypoint", "", "busybox"), "no command to run")


# --- --explain: each new mount's line is what the container has -------------------------------


def test_explain_shows_the_new_mounts_the_container_has(minictr, data, tmp_path):
    minictr("image", "build", "busybox", check=True)
    other = tmp_path / "other"
    other.mkdir()
    r = minictr("run", "--rm", "--explain", "--init", "--read-only", "-v", f"{data}:/data",
                "-v", f"{other}:/deep/ro:ro", "--tmpfs", "/tmp", "--tmpfs", "/scratch",
                "busybox", "cat", "/proc/self/mountinfo")
    assert r.returncode == 0, r.stderr
    merged = re.search(r"^minictr:      \$ C=(\S+)$", r.stderr, re.M)[1] + "/merged"
    shown, _ = explained_mounts(r.stderr, merged)
    has = mountinfo(r.stdout)
    assert sorted(shown) == sorted(has)  # every mount it has is shown, and none more
    for point in ("/", "/data", "/deep/ro", "/tmp", "/scratch", "/dev/init"):
        line, real = shown[point], has[point]
        where = f"{point}: shown {line}, mounted {real}"
        if line.flags is not None:
            assert line.flags == real.flags, where
        if line.fstype is None:
            assert real.source.endswith("/" + os.path.basename(line.source)), where
        else:
            assert line.fstype == real.fstype, where
    assert {"ro"} <= has["/"].flags and {"ro"} <= has["/deep/ro"].flags
    assert "ro" not in has["/data"].flags and "ro" not in has["/tmp"].flags
    assert has["/dev/init"].flags >= {"ro"} and has["/dev/init"].source == "/usr/bin/tini-static"
    for title in ("bind the volume /data", "mount a tmpfs on /tmp", "make the root read-only",
                  "bind tini read-only onto /dev/init"):
        at = r.stderr.index(title)
        assert r.stderr[at:].split("\n", 2)[1].startswith("minictr:      why: "), title
