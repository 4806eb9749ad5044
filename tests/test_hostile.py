"""Hostile cases (issue 11): what a container, or whoever starts minictr, tries against the host.

Each attack runs for real, inside a real container; the leak fixture of conftest fails any
test that leaves a mount, cgroup, link or process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import refused, scaled, set_immutable

pytestmark = pytest.mark.root

MODES = {"plain": [], "userns": ["--userns", "100000:65536"], "interactive": ["-i"]}


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_no_inherited_fd_reaches_the_container(minictr, minictr_root: Path, mode: list[str]):
    """`exec 9</; minictr run ...` gave the container the host's / as /proc/self/fd/9. Its
    first process must start with 0, 1 and 2 only, whatever its caller had open."""
    minictr("image", "build", "busybox", check=True)
    host_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)  # inheritable: no O_CLOEXEC
    read_end, write_end = os.pipe()
    fds = [host_root, read_end, write_end]
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "minictr", "run", "--rm", *mode, "busybox", "sh", "-c",
             # in the background: a redirection or a pipe would give sh an fd of its own
             f"ls /proc/1/fd & wait; ls /proc/1/fd/{host_root}/ 2>&1 & wait"],
            pass_fds=fds, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env={**os.environ, "MINICTR_ROOT": str(minictr_root)}, timeout=scaled(60))
    finally:
        for fd in fds:
            os.close(fd)
    assert r.returncode == 0, r.stderr
    *listed, tried = r.stdout.splitlines()
    assert listed == ["0", "1", "2"], r.stdout
    assert "No such file or directory" in tried, r.stdout  # not the host's /


# Names a container can give its files: a forged line of `diff`, a screen clear, a window
# title, a byte that is not UTF-8; and a symlink whose target is one.
FORGE = ("cd /tmp; mkdir -p \"$(printf 'x\\nD /etc')\"; touch \"$(printf 'x\\nD /etc/passwd')\"; "
         "touch \"$(printf '\\033[2J\\033]0;pwned\\007')\"; touch \"$(printf 'bad\\377')\"; "
         "ln -s \"$(printf 'to\\033[31mred')\" link")


def test_names_a_container_chose_reach_no_terminal_raw(minictr):
    """Every name, link target and reason the report, `diff` and `layers` print is escaped
    as `ls -b` does: no control character of the container's reaches the user's screen."""
    minictr("image", "build", "busybox", check=True)
    run = minictr("run", "--name", "forger", "busybox", "sh", "-c", FORGE)
    assert run.returncode == 0, run.stderr
    shown = {"report": run.stderr, "diff": minictr("diff", "forger", check=True).stdout,
             "layers": minictr("layers", "forger", "--path", "/tmp", check=True).stdout}
    for what, text in shown.items():
        for bad in ("\x1b", "\x07", "\udcff", "\xff"):
            assert bad not in text, (what, text)
        assert "D /etc/passwd" not in text.splitlines(), (what, text)
        assert "x\\nD " in text, (what, text)
        assert "bad\\377" in text, (what, text)
    assert "A /tmp/x\\nD /etc/passwd" in shown["diff"].splitlines()
    assert "to\\e[31mred" in shown["layers"] and "to\\e[31mred" in shown["report"]
    minictr("rm", "forger", check=True)


def test_rm_frees_the_name_of_a_container_whose_state_is_unreadable(minictr, minictr_root):
    """A damaged state.json (a disk that filled, a crash): `rm NAME` printed an empty line,
    exited 0 and kept the name. The name is the link's, so it is freed."""
    minictr("run", "--name", "damaged", "busybox", "true", check=True)
    state = (minictr_root / "names" / "damaged").resolve() / "state.json"
    state.write_text("{ not json")
    r = minictr("rm", "damaged", check=True)
    assert r.stdout == "damaged\n"
    assert os.listdir(minictr_root / "names") == []
    assert os.listdir(minictr_root / "containers") == []


def test_a_reader_that_goes_away_gets_no_traceback(minictr, minictr_root):
    """`minictr images | head -1`: every write after the reader has gone fails (EPIPE).
    Unbuffered, so the very first print meets it; exit 141, as a command SIGPIPE ends."""
    minictr("image", "build", "busybox", check=True)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, "-m", "minictr", "images"], stdout=write_end,
                           stderr=subprocess.PIPE, text=True, timeout=scaled(60),
                           env={**os.environ, "MINICTR_ROOT": str(minictr_root),
                                "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (141, "")


@pytest.mark.parametrize("record", ['{"layers": ["sha256:', '{"layers": 5}',
                                    '{"layers": ["../../../etc"], "config": {}}'],
                         ids=["cut-short", "wrong-type", "path-for-digest"])
def test_a_damaged_image_record_is_one_line_and_rmi_removes_it(minictr, minictr_root, record):
    minictr("image", "build", "busybox", check=True)
    (minictr_root / "images" / "bad.json").write_text(record)
    listed = minictr("images", check=True)
    assert "busybox" in listed.stdout and "bad" not in listed.stdout
    assert listed.stderr.startswith("minictr: images/bad.json is damaged")
    refused(minictr("run", "--rm", "bad", "true"), "images/bad.json is damaged", "minictr rmi bad")
    assert os.listdir(minictr_root / "containers") == []
    assert minictr("rmi", "bad", check=True).stdout == "Untagged: bad\n"
    assert [p.name for p in (minictr_root / "images").glob("*.json")] == ["busybox.json"]
    minictr("run", "--rm", "busybox", "true", check=True)  # its layers untouched


@pytest.mark.parametrize(("name", "make", "words"), [
    ("proc", lambda p: p.symlink_to("/etc"), "mount target /proc in the image is a symlink"),
    ("sys", lambda p: p.symlink_to("../tmp"), "mount target /sys in the image is a symlink"),
    ("dev", lambda p: p.write_text("a file\n"), "mount target /dev in the image is not a dir"),
], ids=["proc-symlink", "sys-symlink", "dev-file"])
def test_an_image_whose_mount_point_is_not_a_directory_is_refused(minictr, minictr_root,
                                                                  tmp_path, name, make, words):
    """runc: "mount target is a symlink". A symlink was followed (an image's /proc -> /etc
    mounted procfs on the host's /etc, in the container's namespace, and ran without /proc);
    a file for /dev failed with FileExistsError."""
    minictr("image", "build", "busybox", check=True)
    layer = Path(json.loads(minictr("image", "inspect", "busybox", check=True).stdout)
                 [0]["layers"][0]["path"])
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", layer, rootfs], check=True)
    subprocess.run(["rm", "-rf", rootfs / name], check=True)
    make(rootfs / name)
    subprocess.run(["tar", "-C", rootfs, "-cf", tmp_path / "bad.tar", "."], check=True)
    minictr("image", "import", tmp_path / "bad.tar", "bad", check=True)
    before = os.stat("/etc").st_mtime_ns
    refused(minictr("run", "--rm", "bad", "true"), words)
    assert os.listdir(minictr_root / "containers") == []
    assert os.stat("/etc").st_mtime_ns == before


def test_rm_of_a_container_whose_runtime_was_killed_removes_its_cgroup(minictr):
    """Only prune removed it; a SIGKILLed runtime (here at the shim's join, when the cgroup
    exists) leaves it, and `rm NAME` must not leave it behind (the leak fixture checks)."""
    minictr("image", "build", "busybox", check=True)
    r = minictr("run", "--name", "killed", "busybox", "true",
                env={"MINICTR_FAIL_AT": "minictr.run.cgroups.move_shim_in:kill"})
    assert r.returncode == -9, r
    assert "killed" in minictr("ps", "-a", check=True).stdout
    assert minictr("rm", "killed", check=True).stdout == "killed\n"


def test_a_full_disk_costs_the_record_never_the_exit_code_the_report_or_rm(minictr, tmp_path):
    """MINICTR_ROOT on an 8 MiB tmpfs. A container that fills it: the runtime crashed in
    write_state (exit 1, a traceback, no report, the data kept despite --rm). And a start on
    the full disk left an empty containers/<id>/. Now: one line each, and nothing kept."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", small], check=True)
    try:
        env = {"MINICTR_ROOT": str(small / "root")}
        minictr("image", "build", "busybox", check=True, env=env)
        r = minictr("run", "--rm", "busybox", "sh", "-c",
                    "dd if=/dev/zero of=/big bs=1M 2>/dev/null; exit 3", env=env)
        assert r.returncode == 3, r.stderr
        assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
        assert "exited with code 3" in r.stderr and "big" in r.stderr  # the report
        assert os.listdir(small / "root" / "containers") == []  # --rm did remove it
        # now full before the start (ENOSPC ends the loop)
        with open(small / "fill", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while f.write(b"\0" * (1 << 20)):
                pass
        r = minictr("run", "--rm", "busybox", "true", env=env)
        refused(r, "No space left on device", "df -h")
        assert os.listdir(small / "root" / "containers") == []
        assert os.listdir(small / "root" / "names") == []
    finally:
        subprocess.run(["umount", small], check=True)


def test_prune_of_another_root_leaves_the_empty_cgroup_of_a_starting_container(minictr):
    """A container that is starting in one MINICTR_ROOT has its cgroup before any process
    is in it; a prune in another root called it an orphan and removed it (17 of 25 bridged
    starts failed). Its runtime owns it (cgroups.OWNERS) from before it exists."""
    from minictr.run import cgroups
    from minictr.spec import Limits

    cid = os.urandom(32).hex()
    with cgroups.for_container(cid, Limits()) as cg:  # as a starting runtime has it
        assert cg.exists() and not cg.procs()
        pruned = minictr("prune", check=True)  # another root: this test's own, empty
        assert cid not in pruned.stdout
        assert cg.exists()
    assert not cg.exists()
    assert not (cgroups.OWNERS / f"{cid}.lock").exists()


def test_a_container_is_locked_from_the_moment_it_is_visible(minictr, minictr_root):
    """Store.new_container made containers/<id> first and locked it after: a prune in that
    moment deleted a container being created. It is now made as .new-<id>, locked, then
    renamed. prune removes a .new-* nobody holds (a start killed there), never a held one."""
    from minictr.store import hold_lock

    minictr("image", "build", "busybox", check=True)
    containers = minictr_root / "containers"
    (containers / ".new-killed").mkdir()  # what a start SIGKILLed before its lock leaves
    (containers / ".new-starting").mkdir()
    lock = hold_lock(containers / ".new-starting" / "lock")  # a start right now
    try:
        minictr("prune", check=True)
        assert sorted(os.listdir(containers)) == [".new-starting"]
    finally:
        os.close(lock)
    minictr("prune", check=True)
    assert os.listdir(containers) == []
    r = minictr("run", "--name", "made", "busybox", "true", check=True)
    assert r.returncode == 0
    [made] = os.listdir(containers)
    assert len(made) == 64 and (containers / made / "lock").exists()
    minictr("rm", "made", check=True)


def test_rmi_waits_for_a_starting_container_and_is_then_refused(minictr, minictr_root):
    """`rmi` of an image whose container is starting deleted its layers under it. The start
    holds the image lock (shared) from loading the image until its state names the layers.
    The start is stopped right there (MINICTR_FAIL_AT=...:stop), rmi is run, and only once
    rmi has either finished or is seen waiting for the lock (/proc/locks) does it go on."""
    minictr("image", "build", "busybox", check=True)
    env = {**os.environ, "MINICTR_ROOT": str(minictr_root)}
    run = subprocess.Popen([sys.executable, "-m", "minictr", "run", "--name", "starting",
                            "busybox", "true"], env={**env, "MINICTR_FAIL_AT":
                                                     "minictr.run.container.run:stop"},
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(run.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        rmi = subprocess.Popen([sys.executable, "-m", "minictr", "rmi", "busybox"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        blocks_on_a_lock(rmi)  # or has ended: then it did not wait
    finally:
        os.kill(run.pid, signal.SIGCONT)
    _, run_err = run.communicate(timeout=scaled(60))
    _, rmi_err = rmi.communicate(timeout=scaled(60))
    assert run.returncode == 0, run_err
    assert rmi.returncode == 125 and "container starting uses busybox" in rmi_err, rmi_err
    minictr("rm", "starting", check=True)


def blocks_on_a_lock(proc: subprocess.Popen[str]) -> bool:
    """Wait until ``proc`` is blocked in flock(2) (True) or has ended (False)."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        while not waits_for_a_lock(proc.pid):
            if select.select([pidfd], [], [], 0.05)[0]:
                return False
        return True
    finally:
        os.close(pidfd)


def waits_for_a_lock(pid: int) -> bool:
    """/proc/locks lists a process blocked in flock(2) with "->" before its line."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines()
               if len(line.split()) > 5)


def test_prune_waits_for_a_start_between_its_mkdir_and_its_lock(minictr_root):
    """A start makes containers/.new-<id>, then locks it: a prune in between removed the
    live start's directory, and the start failed with ENOENT (soak bug 1). The start holds
    starting.lock shared across that gap; prune takes it exclusively before it calls an
    unlocked .new-* dead. This test is the start, stopped in the gap."""
    import fcntl

    from minictr.store import hold_lock

    env = {**os.environ, "MINICTR_ROOT": str(minictr_root)}
    subprocess.run([sys.executable, "-m", "minictr", "ps"], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # makes the store
    starting = os.open(minictr_root / "starting.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(starting, fcntl.LOCK_SH)
    new = minictr_root / "containers" / ".new-gap"
    new.mkdir()
    prune = subprocess.Popen([sys.executable, "-m", "minictr", "prune"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waited = blocks_on_a_lock(prune)
        lock = hold_lock(new / "lock")  # the start goes on: ENOENT if prune removed it
    finally:
        os.close(starting)
    try:
        out, err = prune.communicate(timeout=scaled(60))
        assert waited and prune.returncode == 0, err
        assert ".new-gap" not in out and new.is_dir()
    finally:
        os.close(lock)
    pruned = subprocess.run([sys.executable, "-m", "minictr", "prune"], env=env, check=True,
                            capture_output=True, text=True)  # now it is a killed start's
    assert ".new-gap" in pruned.stdout and not new.exists()


def test_rm_removes_the_lock_file_last(minictr, minictr_root):
    """--rm deleted containers/<id> (its lock file with it) while its runtime still held
    the lock: a prune meanwhile found no lock file, called the live container dead and
    removed its cgroup too (ENODEV, 125: soak bug 2). The lock file now goes last: here a
    removal is stopped half-way (an immutable file: chattr +i) and the lock is still there."""
    minictr("run", "--name", "half", "busybox", "true", check=True)
    [cid] = os.listdir(minictr_root / "containers")
    path = minictr_root / "containers" / cid
    extra = 0
    while os.listdir(path)[0] == "lock":  # then even lock-first would keep it: not a test
        (path / f"extra{extra}").write_text("")
        extra += 1
    first = next(name for name in os.listdir(path) if name != "lock")  # removed last of all
    stuck = path / first / "stuck" if (path / first).is_dir() else path / first
    if stuck.parent != path:
        stuck.write_text("")
    set_immutable(stuck, True)
    try:
        r = minictr("rm", "half")
        assert r.returncode == 125 and "Operation not permitted" in r.stderr, r.stderr
        assert (path / "lock").exists(), os.listdir(path)
    finally:
        set_immutable(stuck, False)
    minictr("rm", cid, check=True)  # its name went first: by its id
    assert not path.exists()


def test_rm_of_its_own_container_comes_after_the_cgroup_with_the_lock_held(minictr,
                                                                           minictr_root):
    """--rm removes the directory last, after the cgroup and the links, the lock still held:
    stopped at that step (MINICTR_FAIL_AT=...:stop), the cgroup is gone, the container is
    running to `ps`, and a prune leaves it alone; then the run ends with its own code."""
    from tests.conftest import minictr_cgroups

    minictr("image", "build", "busybox", check=True)
    env = {**os.environ, "MINICTR_ROOT": str(minictr_root),
           "MINICTR_FAIL_AT": "minictr.run.container.remove_at_end:stop"}
    run = subprocess.Popen([sys.executable, "-m", "minictr", "run", "--rm", "--name", "ending",
                            "busybox", "sh", "-c", "exit 3"], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(run.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        [cid] = os.listdir(minictr_root / "containers")
        assert not any(cid in cg for cg in minictr_cgroups())
        assert " Up " in minictr("ps", "-a", check=True).stdout  # its runtime holds it
        pruned = minictr("prune", check=True)
        assert cid not in pruned.stdout and (minictr_root / "containers" / cid).is_dir()
    finally:
        os.kill(run.pid, signal.SIGCONT)
    _, err = run.communicate(timeout=scaled(60))
    assert run.returncode == 3, err
    assert os.listdir(minictr_root / "containers") == []


# --- 11.2 and 11.3: swapped paths, deep and wide trees ------------------------------------

# Wrap the tree in a new parent, 5000 times: each step uses short paths only, since a
# shell's `cd` stops at PATH_MAX (about 2000 levels of "a/").
DEEP = ("cd /tmp; mkdir a; i=0; while [ $i -lt 5000 ]; do mkdir t; mv a t/a; mv t a; "
        "i=$((i+1)); done; touch a/f")


def test_a_tree_5000_deep_is_reported_diffed_committed_and_removed(minictr, minictr_root):
    """A RecursionError in run, rm and prune made such a container unremovable; diff,
    layers, commit and import failed from depth ~500. All walk by fd, iteratively now."""
    minictr("image", "build", "busybox", check=True)
    run = minictr("run", "--name", "deep", "busybox", "sh", "-c", DEEP, timeout=scaled(300))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert "levels down, not drawn" in run.stderr  # the report draws 32 levels, counts the rest
    assert len(run.stderr) < 200_000
    lines = minictr("diff", "deep", check=True, timeout=scaled(120)).stdout.splitlines()
    assert len(lines) == 5003  # /tmp, 5001 directories a, and the file
    deepest = "A /tmp" + "/a" * 5001
    assert "A /tmp/a/f" in lines and max(lines, key=len) == deepest, "deepest path missing"
    layers = minictr("layers", "deep", "--path", "/tmp", check=True).stdout
    assert "what is below is not drawn" in layers
    minictr("commit", "deep", "deepimg", check=True, timeout=scaled(300))
    tar = minictr_root / "deep.tar"
    minictr("image", "export", "deepimg", tar, check=True, timeout=scaled(300))
    minictr("image", "import", tar, "deepback", check=True, timeout=scaled(300))
    def digests(image: str) -> list[str]:
        shown = json.loads(minictr("image", "inspect", image, check=True).stdout)
        return [layer["digest"] for layer in shown[0]["layers"]]

    # The same tar back (a layer is stored by the digest of its tar): the whole tree went out
    # and came in. (busybox's find inside stops at PATH_MAX, about 2000 levels.)
    assert digests("deepback") == digests("deepimg")
    again = minictr("run", "--rm", "deepback", "sh", "-c", "cd /tmp/a/a/a && ls", check=True)
    assert again.stdout == "a\n"
    minictr("rm", "deep", check=True, timeout=scaled(120))
    minictr("rmi", "deepimg", "deepback", check=True, timeout=scaled(120))
    minictr("prune", check=True)
    assert os.listdir(minictr_root / "containers") == []


def test_100000_entries_are_reported_diffed_committed_and_removed(minictr, minictr_root):
    minictr("image", "build", "busybox", check=True)
    make = "mkdir /tmp/w && cd /tmp/w && seq 100000 | xargs touch"
    run = minictr("run", "--name", "wide", "busybox", "sh", "-c", make, timeout=scaled(300))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "upper: 0 B in 100002 entries" in run.stderr
    diff = minictr("diff", "wide", check=True, timeout=scaled(120)).stdout.splitlines()
    assert len(diff) == 100002 and "A /tmp/w/99999" in diff
    minictr("commit", "wide", "wideimg", check=True, timeout=scaled(300))
    count = minictr("run", "--rm", "wideimg", "sh", "-c", "ls /tmp/w | wc -l", check=True,
                    timeout=scaled(120))
    assert count.stdout.strip() == "100000"
    minictr("rm", "wide", check=True, timeout=scaled(120))
    minictr("rmi", "wideimg", check=True)
    minictr("prune", check=True)


# A directory and a symlink to the host's /etc trade places, as fast as the shell can.
# It ends when its stdin closes: PID 1 then exits, and the kernel kills the loop with it.
SWAP = ("mkdir -p /tmp/zzz; touch /tmp/zzz/mine; "
        "(while :; do mv /tmp/zzz /tmp/zzz.d; ln -s /etc /tmp/zzz; rm /tmp/zzz; "
        "mv /tmp/zzz.d /tmp/zzz; done) & echo ready; read line || true")


def test_a_directory_swapped_for_a_symlink_never_shows_the_host(minictr, minictr_root):
    """`diff` and `commit` run while the container swaps a directory of its upper for a
    symlink to /etc: a walk by path would list, or commit, the host's /etc."""
    host_only = "debian_version"  # in the host's /etc, not in the busybox image's
    assert (Path("/etc") / host_only).exists()
    minictr("image", "build", "busybox", check=True)
    argv = [sys.executable, "-m", "minictr", "run", "-i", "--name", "swapper", "busybox", "sh",
            "-c", SWAP]
    env = {**os.environ, "MINICTR_ROOT": str(minictr_root)}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for i in range(100):
            r = minictr("diff", "swapper", timeout=scaled(60))
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
            assert host_only not in r.stdout and "/tmp/zzz/" + "passwd" not in r.stdout
            if i % 10 == 0:
                c = minictr("commit", "swapper", f"snap{i}", timeout=scaled(120))
                assert "Traceback" not in c.stderr, c.stderr
                if c.returncode == 0:
                    ls = minictr("run", "--rm", f"snap{i}", "sh", "-c",
                                 "ls -R /tmp; cat /tmp/zzz*/passwd 2>/dev/null; true",
                                 check=True)
                    assert host_only not in ls.stdout
                    assert "root:x:0:0:root:/root:/bin/bash" not in ls.stdout  # the host's
                else:
                    assert len(c.stderr.strip().splitlines()) == 1, c.stderr
    finally:
        proc.communicate(timeout=scaled(60))  # closes its stdin: the container ends
    assert proc.returncode == 0
    minictr("rm", "swapper", check=True)
    for i in range(0, 100, 10):
        minictr("rmi", f"snap{i}")


def test_a_container_is_found_by_its_full_64_digit_id(minictr, minictr_root):
    """Found in the soak run (bench/soak.py): the full id was checked as a name (at most 63)."""
    minictr("run", "--name", "fullid", "busybox", "true", check=True)
    (cid,) = os.listdir(minictr_root / "containers")
    assert len(cid) == 64
    assert minictr("rm", cid, check=True).stdout == "fullid\n"
