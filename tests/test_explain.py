"""--explain and --step: every step of the run, in order, with the process that takes it, why,
and its shell equivalent; the pauses of --step numbered across the three processes; and the
mount and ln lines checked against what the container has (its mountinfo, its /dev)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import pytest

pytestmark = pytest.mark.root

# The run, in the order the issue and the tutorial give it: (words of the step, a shell line
# of it, the process that takes it, where).
STEPS = [
    ("upper, work and merged", "mkdir -p $C/upper $C/work $C/merged", "runtime",
     "minictr.run.container.run"),
    ("create cgroup", "mkdir -p /sys/fs/cgroup/", "runtime",  # v1 or v2
     "minictr.run.cgroups.for_container"),
    ("parent-death signal", "setpriv --pdeathsig KILL", "shim",
     "minictr.run.namespaces.die_with_parent"),
    ("move the shim into the cgroup", "echo ", "shim", "minictr.run.cgroups.move_shim_in"),
    ("unshare namespaces", "unshare --mount --uts --ipc --pid --net --cgroup --fork", "shim",
     "minictr.run.namespaces.unshare_namespaces"),
    ("tell the init it may start", '# on the start-up socket: {"ready": true}', "runtime",
     "minictr.run.namespaces.Child.say_ready"),
    ("mount private", "mount --make-rprivate /", "init", "minictr.run.rootfs.make_mounts_private"),
    ("overlay", "cd $LAYERS && mount -t overlay -o nodev,lowerdir=$L1,upperdir=$C/upper,"
     "workdir=$C/work,redirect_dir=off,metacopy=off,index=off overlay $C/merged", "init",
     "minictr.run.overlay.mount_overlay"),
    ("/proc", "mount -t proc -o nosuid,nodev,noexec proc $C/merged/proc", "init",
     "minictr.run.rootfs.mount_proc"),
    ("/dev", "mount -t tmpfs -o nosuid,nodev,noexec,mode=755,size=64k tmpfs $C/merged/dev",
     "init", "minictr.run.rootfs.mount_dev"),
    ("devpts", "mount -t devpts -o nosuid,noexec,newinstance,", "init",
     "minictr.run.rootfs.mount_dev"),
    ("/dev/shm", "mount -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=65536k shm", "init",
     "minictr.run.rootfs.mount_dev"),
    ("/sys read-only", "mount -t sysfs -o ro,nosuid,nodev,noexec sysfs", "init",
     "minictr.run.rootfs.mount_sys"),
    ("mask paths", "mount --bind /dev/null $C/merged/proc/", "init",
     "minictr.run.security.mask_paths"),
    ("read-only", "mount --rbind $C/merged/proc/sys $C/merged/proc/sys && "
     "mount -o remount,bind,ro,", "init", "minictr.run.security.make_read_only"),
    ("pivot_root", "cd $C/merged && pivot_root . . && umount -l . && cd /", "init",
     "minictr.run.rootfs.pivot_into"),
    ("hostname", "hostname shown", "init", "minictr.run.container.set_hostname"),
    ("loopback", "ip link set lo up", "init", "minictr.run.network.loopback_up"),  # none
    ("drop capabilities", "capsh --drop=cap_dac_read_search,", "init",
     "minictr.run.security.drop_capabilities"),
    ("no_new_privs", "setpriv --no-new-privs", "init", "minictr.run.security.set_no_new_privs"),
    ("exec the command as PID 1", "exec env -i PATH=", "init",
     "minictr.run.container.exec_command"),
]
# The steps of minictr's own modules that say why they are there (the others' will follow).
WITH_WHY = ("minictr.run.rootfs.", "minictr.run.overlay.", "minictr.run.security.",
            "minictr.run.network.")


class Shown(NamedTuple):
    """One step as --explain shows it."""

    title: str
    process: str | None  # runtime, shim or init
    where: str  # module.function, as MINICTR_FAIL_AT names it
    why: str
    shell: list[str]  # its shell lines


def step_lines(stderr: str) -> list[Shown]:
    """Each `=> ` line, with the `why:` and `$ ` lines under it."""
    found: list[Shown] = []
    for line in stderr.splitlines():
        if m := re.match(r"minictr: => (.*)  \[(?:(\w+): )?(minictr\.[\w.]+)\]$", line):
            found.append(Shown(m[1], m[2], m[3], "", []))
        elif found and (m := re.match(r"minictr:      why: (.*)", line)):
            found[-1] = found[-1]._replace(why=m[1])
        elif found and (m := re.match(r"minictr:      \$ (.*)", line)):
            found[-1].shell.append(m[1])
    return found


def test_explain_prints_every_step_in_order(minictr):
    minictr("image", "build", "busybox", check=True)  # or building it is the first step
    r = minictr("run", "--rm", "--explain", "--name", "shown", "busybox", "true")
    assert r.returncode == 0, r.stderr
    seen = step_lines(r.stderr)[: len(STEPS)]
    assert len(seen) == len(STEPS), r.stderr
    for (words, shell, process, where), shown in zip(STEPS, seen, strict=True):
        assert all(w in shown.title for w in words.split() if w not in ("mount",)), (words, shown)
        assert any(line.startswith(shell) for line in shown.shell), (shell, shown)
        assert (shown.process, shown.where) == (process, where), shown
        if where.startswith(WITH_WHY):
            assert shown.why, shown
    lines = r.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "remove the container (--rm)" in line)
    assert lines[at + 1].startswith("minictr:      why: ")
    assert lines[at + 2:at + 4] == [  # unmount first, never cross a mount
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


def test_step_numbers_its_pauses_across_the_three_processes(minictr):
    # At end of input --step goes on: each pause still says its number, and the count goes on
    # from the runtime to the shim, to the init, and back to the runtime after the exit.
    minictr("image", "build", "busybox", check=True)
    r = minictr("run", "--rm", "--step", "busybox", "true")  # stdin: /dev/null
    assert r.returncode == 0, r.stderr
    numbers = [int(n) for n in re.findall(r"^minictr:    \[(\d+)\] press Enter", r.stderr, re.M)]
    steps = step_lines(r.stderr)
    assert numbers == list(range(1, len(steps) + 1)), r.stderr
    assert {s.process for s in steps} == {"runtime", "shim", "init"}
    assert steps[-1].title == "remove the container (--rm)"  # the runtime's, after the exit


# --- the shell lines are the truth: what they say is mounted is what the container has -------

FLAGS = {"ro", "nosuid", "nodev", "noexec"}
FS_OPTIONS = ("mode", "size", "ptmxmode", "gid")  # the ones that change what the mount does
OCTAL = ("mode", "ptmxmode")
# What mountinfo leaves out because it is the filesystem's default (shmem_show_options,
# devpts_show_options in the kernel source): the line may say it, mountinfo need not.
DEFAULTS = {("tmpfs", "mode"): "1777", ("devpts", "mode"): "600", ("devpts", "ptmxmode"): "0"}


class Mounted(NamedTuple):
    """What a mount point has: by the shell lines, or by /proc/self/mountinfo (proc(5))."""

    fstype: str | None  # None: a bind mount, whose type is its source's
    flags: frozenset[str] | None  # of FLAGS; None: a bind's, its source mount's
    options: dict[str, str]  # the fs options of FS_OPTIONS, and "newinstance"
    source: str  # a bind's source; mountinfo: the root of the mount within its filesystem
    device: str = ""  # mountinfo: major:minor


def shell_commands(stderr: str) -> list[str]:
    """Every command of every `$ ` line, with the $NAMES of `define` put back, one a string
    (a line `cd D && mount ... X; ln -s ...` is three)."""
    names = dict(re.findall(r"^minictr:      \$ ([A-Z][A-Z0-9]*)=(\S+)$", stderr, re.M))
    commands = []
    for s in step_lines(stderr):
        for line in s.shell:
            for name in sorted(names, key=len, reverse=True):
                line = line.replace(f"${name}", names[name])
            commands += [c.strip() for c in re.split(r"&&|;", line) if c.strip()]
    return commands


def explained_mounts(stderr: str, merged: str) -> tuple[dict[str, Mounted], list[str]]:
    """Replay the `mount` commands, as mount(8) would do them: what each mount point in the
    container (merged/X is /X) ends up with; and the propagation changes, by target."""
    state: dict[str, Mounted] = {}
    propagation = []
    cwd = "/"
    for command in shell_commands(stderr):
        argv = shlex.split(command)
        if argv[0] == "cd":
            cwd = os.path.join(cwd, argv[1])
            continue
        if argv[0] != "mount":
            continue
        fstype, options, kind, args = None, [], "new", []
        words = iter(argv[1:])
        for word in words:
            if word == "-t":
                fstype = next(words)
            elif word == "-o":
                options = next(words).split(",")
            elif word in ("--bind", "--rbind"):
                kind = "bind"
            elif word.startswith("--make-"):
                kind = "propagation"
            else:
                args.append(word)
        target = os.path.join(cwd, args[-1])
        point = "/" + os.path.relpath(target, merged).removeprefix(".")
        assert not point.startswith("/.."), command  # every mount is made in the container
        if kind == "propagation":
            propagation.append(target)
        elif "remount" in options:
            state[point] = state[point]._replace(flags=frozenset(FLAGS & set(options)))
        elif kind == "bind":
            state[point] = Mounted(None, None, {}, os.path.join(cwd, args[0]))
        else:
            fs = dict(o.split("=", 1) for o in options if "=" in o)
            fs = {k: v for k, v in fs.items() if k in FS_OPTIONS}
            if "newinstance" in options:
                fs["newinstance"] = ""
            state[point] = Mounted(fstype, frozenset(FLAGS & set(options)), fs, args[0])
    return state, propagation


def mountinfo(text: str) -> dict[str, Mounted]:
    """Each mount point of /proc/self/mountinfo, as the last mount on it has it."""
    mounts = {}
    for line in text.splitlines():
        if " - " not in line:
            continue
        before, after = line.split(" - ", 1)
        fields, (fstype, _source, superopts) = before.split(), after.split()
        options = dict(o.partition("=")[::2] for o in superopts.split(","))
        mounts[fields[4]] = Mounted(fstype, frozenset(FLAGS & set(fields[5].split(","))),
                                    {k: v for k, v in options.items() if k in FS_OPTIONS},
                                    fields[3], fields[2])
    return mounts


def test_explain_shows_the_mounts_the_container_has(minictr):
    minictr("image", "build", "busybox", check=True)
    r = minictr("run", "--rm", "--explain", "busybox", "cat", "/proc/self/mountinfo")
    assert r.returncode == 0, r.stderr
    merged = re.search(r"^minictr:      \$ C=(\S+)$", r.stderr, re.M)[1] + "/merged"
    shown, propagation = explained_mounts(r.stderr, merged)
    has = mountinfo(r.stdout)
    assert propagation == ["/"]  # made private first: no mount of it is shared any more
    assert "shared:" not in r.stdout
    assert sorted(shown) == sorted(has)  # every mount it has is shown, and none more
    host_pts = mountinfo(Path("/proc/self/mountinfo").read_text())["/dev/pts"].device
    for point, line in shown.items():
        real = has[point]
        where = f"{point}: shown {line}, mounted {real}"
        if line.flags is not None:  # (a bind's are its source's: the host's /dev has its own)
            assert line.flags == real.flags, where
        if line.fstype is None:  # a bind: the root of the mount is the source's own name
            assert real.source.endswith("/" + os.path.basename(line.source)), where
            continue
        assert line.fstype == real.fstype, where
        for key in FS_OPTIONS:
            said = line.options.get(key, DEFAULTS.get((line.fstype, key)))
            got = real.options.get(key, DEFAULTS.get((line.fstype, key)))
            if key in OCTAL and said is not None and got is not None:
                said, got = int(said, 8), int(got, 8)
            assert said == got, f"{key}: {where}"
        if "newinstance" in line.options:  # a devpts of its own: not the host's
            assert real.device != host_pts, where


def test_explain_shows_the_links_the_container_has_in_dev(minictr):
    minictr("image", "build", "busybox", check=True)
    r = minictr("run", "--rm", "--explain", "busybox", "sh", "-c",
                'for l in /dev/*; do [ -L "$l" ] && echo "$l $(readlink "$l")"; done; true')
    assert r.returncode == 0, r.stderr
    merged = re.search(r"^minictr:      \$ C=(\S+)$", r.stderr, re.M)[1] + "/merged"
    shown, cwd = set(), "/"
    for command in shell_commands(r.stderr):
        if command.startswith("cd "):
            cwd = os.path.join(cwd, shlex.split(command)[1])
        elif command.startswith("ln -s "):
            _, _, target, link = shlex.split(command)
            shown.add(f"/{os.path.relpath(os.path.join(cwd, link), merged)} {target}")
    assert shown == set(r.stdout.splitlines())
    assert "/dev/stderr /proc/self/fd/2" in shown
