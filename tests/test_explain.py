"""--explain and --step: every step of the run, in order, with its shell equivalent."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.root

# The run, in the order the issue and the tutorial give it: (words of the step, shell, where).
STEPS = [
    ("upper, work and merged", "mkdir -p $C/upper $C/work $C/merged", "minictr.run.container.run"),
    ("create cgroup", "mkdir -p /sys/fs/cgroup/", "minictr.run.cgroups.for_container"),  # v1 or v2
    ("move the shim into the cgroup", "echo ", "minictr.run.cgroups.move_shim_in"),
    ("unshare namespaces", "unshare --mount --uts --ipc --pid --net --cgroup --fork",
     "minictr.run.namespaces.unshare_namespaces"),
    ("mount private", "mount --make-rprivate /", "minictr.run.rootfs.make_mounts_private"),
    ("overlay", "cd $LAYERS && mount -t overlay overlay -o nodev,lowerdir=$L1,upperdir=$C/upper,"
     "workdir=$C/work,redirect_dir=off,metacopy=off,index=off $C/merged",
     "minictr.run.overlay.mount_overlay"),
    ("/proc", "mount -t proc -o nosuid,nodev,noexec proc $C/merged/proc",
     "minictr.run.rootfs.mount_proc"),
    ("/dev", "mount -t tmpfs", "minictr.run.rootfs.mount_dev"),
    ("devpts", "mount -t devpts -o newinstance", "minictr.run.rootfs.mount_dev"),
    ("/dev/shm", "mount -t tmpfs -o nosuid,nodev,mode=1777 shm", "minictr.run.rootfs.mount_dev"),
    ("/sys read-only", "mount -t sysfs -o ro,", "minictr.run.rootfs.mount_sys"),
    ("mask paths", "mount --bind /dev/null $C/merged/proc/", "minictr.run.security.mask_paths"),
    ("read-only", "mount --bind $C/merged/proc/sys $C/merged/proc/sys && mount -o remount,bind,ro,",
     "minictr.run.security.make_read_only"),
    ("pivot_root", "cd $C/merged && pivot_root . . && umount -l . && cd /",
     "minictr.run.rootfs.pivot_into"),
    ("hostname", "hostname shown", "minictr.run.container.set_hostname"),
    ("loopback", "ip link set lo up", "minictr.run.network.loopback_up"),  # --network none
    ("drop capabilities", "capsh --drop=cap_dac_read_search,",
     "minictr.run.security.drop_capabilities"),
    ("no_new_privs", "setpriv --no-new-privs", "minictr.run.security.set_no_new_privs"),
    ("exec the command as PID 1", "exec env -i PATH=", "minictr.run.container.exec_command"),
]


def step_lines(stderr: str) -> list[tuple[str, str, str]]:
    """(step title, first shell line, module.function) for each `=> ` line."""
    found = []
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"minictr: => (.*)  \[(.*)\]$", line)
        if m:
            shell = re.sub(r"^minictr:\s+\$ ", "", lines[i + 1])
            found.append((m.group(1), shell, m.group(2)))
    return found


def test_explain_prints_every_step_in_order(minictr):
    minictr("image", "build", "busybox", check=True)  # or building it is the first step
    r = minictr("run", "--rm", "--explain", "--name", "shown", "busybox", "true")
    assert r.returncode == 0, r.stderr
    seen = step_lines(r.stderr)[: len(STEPS)]
    assert len(seen) == len(STEPS), r.stderr
    for (words, shell, where), (title, shown_shell, shown_where) in zip(STEPS, seen, strict=True):
        assert all(w in title for w in words.split() if w not in ("mount",)), (words, title)
        assert shown_shell.startswith(shell), (shell, shown_shell)
        assert shown_where == where
    lines = r.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "remove the container (--rm)" in line)
    assert lines[at + 1:at + 3] == [  # unmount first, never cross a mount
        "minictr:      $ findmnt -rno TARGET | grep '^$C' | sort -r | xargs -r umount -l",
        "minictr:      $ rm -rf --one-file-system $C"]
    assert "$ C=" in r.stderr and "$ LAYERS=" in r.stderr  # the long paths, defined once
    assert "$ L1=" in r.stderr  # each layer's digest, bottom first


def test_explain_is_quiet_without_the_flag(minictr):
    r = minictr("run", "--rm", "busybox", "true")
    assert "=>" not in r.stderr


def test_step_waits_for_a_line_before_each_step(minictr):
    # One Enter per step up to the exec, then a line for the container: it must reach `cat`
    # whole, so the pauses read stdin a byte at a time.
    minictr("image", "build", "busybox", check=True)
    steps = len(STEPS)
    r = minictr("run", "--rm", "--step", "-i", "busybox", "cat",
                input="\n" * steps + "for the container\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "for the container\n"
    before_exec = r.stderr.split("exec the command as PID 1")[0]
    assert before_exec.count("press Enter") == steps - 1
    assert step_lines(r.stderr)[: len(STEPS)] and "(end of input)" in r.stderr
