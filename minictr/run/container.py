"""The recipe: one `minictr run`, top to bottom, in the order of the tutorial's chapters.

Three processes, each a function of this module (as contained.c has main and child):

    run()                  on the host, as the runtime
      the image              busybox is built from its recipe on first use
      upper/work/merged      store.Store.new_container; state.json (first_state)
      the cgroup (ch.8)      cgroups.for_container: mkdir, the limits; nothing in it yet
      --userns (ch.10)       userns.prepared: the user namespace, idmapped mounts
      the network (ch.9)     network.attached: an address, port rules (eth0 needs init's pid)
      spawn the shim         namespaces.spawn(shim): it waits for "go"
      go; init's pid         the shim moves into the cgroup, unshares, forks init
      shim out, eth0, ready  cgroups.move_shim_out (if it could not), net.connect, say_ready
      wait for the exec      wait_for_exec: the init's steps, its errors, the pty
      wait for the exit      terminal.relay when interactive; signals are passed on
      what the limits did    cg.stats: peak memory, OOM kills, forks refused, cpu time
      what changed           diff.scan of the upperdir against the image
      (undo, in reverse)     kill and reap; the network, the cgroup; the directory (--rm)
    shim()                 between, because a new PID namespace is for children only
      wait for "go" → parent-death signal → into the cgroup → (--userns: enter it) →
      unshare(mount, UTS, IPC, PID, net, cgroup) → fork init → out of the cgroup (v1) →
      report init's pid → wait for init, exit as it does
    init_container()       inside, as PID 1 of the new PID namespace
      wait for "ready" → make / rprivate → mount the overlay → /proc, /dev, /sys → (--init:
      tini on /dev/init) → mask and read-only paths → /etc files → -v volumes, --tmpfs →
      (-u: read /etc/passwd) → (--read-only: remount /) → pivot_root → hostname → lo →
      workdir → (-t: a pty) → drop capabilities → (-u: setuid) → no_new_privs → exec
      (ch.5, ch.10, ch.13)
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from minictr import explain
from minictr.errors import EXIT_RUNTIME_ERROR, StepError
from minictr.explain import note, step
from minictr.fs import remove
from minictr.images import catalog
from minictr.run import (
    cgroups,
    namespaces,
    network,
    overlay,
    pid1,
    rootfs,
    security,
    terminal,
    user,
    userns,
    volumes,
)
from minictr.show import diff
from minictr.spec import ContainerDirs, Image, Limits, RunSpec
from minictr.store import Store, write_state

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TTY_GID = 5  # the tty group, which owns the ptys (devpts gid=5), as Docker's containers have


class Outcome(NamedTuple):
    """What `run` tells the CLI: the exit code and what the container changed."""

    exit_code: int
    dirs: ContainerDirs
    image: Image
    changes: list[diff.Change]
    upper_bytes: int
    limits: Limits
    stats: cgroups.Stats  # what its cgroup counted, read after the exit
    wall: float  # seconds from "go" to the exit
    security: security.Policy | None = None  # what it was allowed: capabilities, masks


class Plan(NamedTuple):
    """Everything the shim and the container's init need, decided on the host before the
    fork: one record, handed down (a fork copies it), read and never changed."""

    spec: RunSpec
    layers: Path  # $LAYERS: the store's layer directories
    image: Image
    dirs: ContainerDirs
    hostname: str
    command: tuple[str, ...]
    env: list[str]
    policy: security.Policy
    cgroup: cgroups.Cgroup
    runtime_cgroups: list[Path]  # where the shim goes back to, once init is born
    user_ns: userns.Prepared | None  # --userns: the user namespace and idmapped mounts
    net: network.Attachment


def run(spec: RunSpec) -> Outcome:
    store = Store.open()
    policy = security.policy(spec)  # bad --cap-add: refused before anything is made
    if spec.userns:
        userns.check_host()
    overlay.check_upper_filesystem(store.containers)  # before the image: nothing is built
    if not catalog.exists(store, spec.image):  # busybox: built from its recipe on first use
        from minictr.images import recipes  # only then: it imports what `run` never needs

        recipes.build_missing(store, spec.image)
    # No rmi until this container's state names the image's layers (released below)
    image_lock = catalog.hold_for_start(store)
    try:
        image = catalog.get_existing(store, spec.image)  # read once, under the lock
        command = container_command(image, spec)  # none at all: refused, nothing made yet
        explain.define("LAYERS", store.layers)
        for number, digest in enumerate(image.digests, 1):  # bottom first, as `images` has
            explain.define(f"L{number}", digest.removeprefix("sha256:"))
        cid = store.new_id()
        explain.define("C", store.containers / cid)
        with step("create the container's upper, work and merged directories",
                  "mkdir -p $C/upper $C/work $C/merged",
                  why="overlay needs an empty upper and work on one filesystem, and a mount "
                  "point; first, so that a lock on the container exists before anything else"):
            dirs, lock = store.new_container(cid, spec.name, spec.image)
    except BaseException:
        os.close(image_lock)
        raise
    hostname = spec.hostname or dirs.name
    env = container_env(image, spec, hostname)
    started = removing = False
    with ExitStack() as undo:  # undone in reverse order, whatever happens
        undo.callback(os.close, lock)
        # The directory goes after the cgroup and the links, with the lock still held: a
        # prune meanwhile sees it alive. A failed start leaves no trace; --rm, once reported.
        undo.callback(lambda: remove_at_end(store, dirs, started, removing))
        try:
            write_state(dirs, **first_state(spec, image, dirs, command, hostname, env, policy))
        finally:
            os.close(image_lock)  # the state names the layers: rmi now sees this container
        # ch.8: the cgroup exists, limits written, before any process of the container does
        cg = undo.enter_context(cgroups.for_container(dirs.id, spec.limits))
        user_ns = None
        if spec.userns:  # the user namespace and the idmapped mounts, before the shim exists
            user_ns = undo.enter_context(userns.prepared(spec.userns, dirs, image))
        # ch.9: an address and the port rules before the shim exists (a taken port or a full
        # subnet is refused with nothing started); eth0 itself needs the init's pid, below
        net = undo.enter_context(network.attached(spec.network, spec.ports, dirs.id, dirs.name,
                                                  hostname, dirs.path))
        write_state(dirs, cgroup=cg.describe(), network=net.as_dict())
        plan = Plan(spec, store.layers, image, dirs, hostname, command, env, policy, cg,
                    cg.runtime_cgroups(), user_ns, net)
        # ch.4: the shim, then (in it) the namespaces and the init: see shim() below
        child = namespaces.spawn(partial(shim, plan))
        undo.callback(child.kill_and_reap)
        undo.enter_context(passing_signals_to(child))
        child.go()
        began = time.monotonic()
        wait_for_init_pid(child)  # the shim has moved into the cgroup, unshared, forked init
        if not child.shim_moved_out:  # v2, or --userns: the shim could not move itself
            cgroups.move_shim_out(cg, plan.runtime_cgroups, child.shim_pid)
        if net.waits_for_ready:  # ch.9: eth0 into the init's network namespace
            net.connect(child.init_pid)
        child.say_ready()  # the init waits for this before its first step
        write_state(dirs, pid=child.init_pid, network=net.as_dict())
        pty, mounted = wait_for_exec(child)  # the init's steps, until its exec or an error
        # ch.10: what the init mounted, not what it was asked: this kernel may lack some paths
        policy = policy.with_mounted(mounted.get("masked", ()), mounted.get("read_only", ()))
        started = True
        write_state(dirs, status="running", started=time.time(), security=policy.as_dict())
        exit_code = wait_for_exit(child, pty)
        wall = time.monotonic() - began
        finished = time.time()
        note(f"the container exited with code {exit_code}; its mounts went with its namespace")
        with step("read what its cgroup counted",
                  "\n".join(f"grep . {f}" for f in cg.counter_files()),
                  why="peak memory, OOM kills, forks refused, cpu time: the limits line of "
                  "the report; before the cgroup is removed, which loses them"):
            stats = cg.stats()
        # The command has run: from here a full disk costs the record, never the exit code,
        # the report or --rm (the report needs no disk).
        record_after_exit(dirs, status="exited", exit_code=exit_code, finished=finished,
                          stats={**stats.as_dict(), "wall_seconds": round(wall, 3)},
                          ended_by=cgroups.why_it_ended(spec.limits, stats, exit_code))
        with step("read what changed: the entries of the upperdir",
                  f"find {dirs.upper} -printf '%y %p\\n'",
                  why="everything the container wrote is in upper, and only there: the "
                  "change report; after the exit, so that nothing moves while it is read"):
            changes = diff.scan(dirs.upper, image.lowers)
            upper_bytes = diff.tree_bytes(dirs.upper)
        removing = spec.remove
    return Outcome(exit_code, dirs, image, changes, upper_bytes, spec.limits, stats, wall,
                   security=policy)


def first_state(spec: RunSpec, image: Image, dirs: ContainerDirs, command: tuple[str, ...],
                hostname: str, env: list[str], policy: security.Policy) -> dict[str, object]:
    """state.json as it is first written, before anything of the container exists: what
    `ps`, `inspect`, `commit` and `prune` read. Later writes change only some keys."""
    return {"id": dirs.id, "name": dirs.name, "image": image.name, "command": list(command),
            "hostname": hostname, "env": env, "created": time.time(), "status": "created",
            "pid": None, "exit_code": None, "layers": list(image.digests),
            "config": container_config(image, spec),
            "lower": [str(p) for p in image.lowers], "upper": str(dirs.upper),
            "work": str(dirs.work), "merged": str(dirs.merged),
            "limits": limits_state(spec.limits), "security": policy.as_dict(),
            "volumes": [v._asdict() for v in spec.volumes], "tmpfs": list(spec.tmpfs),
            "read_only": spec.read_only, "user": spec.user, "init": spec.init}


def record_after_exit(dirs: ContainerDirs, **changes: object) -> None:
    """write_state, once the command has exited: if the disk is full, say so in one line and
    go on (the state then still says "running"; its lock, free, says it is not)."""
    try:
        write_state(dirs, **changes)
    except StepError as e:
        print(f"{e} (the exit code and the report follow)", file=sys.stderr)


def remove_at_end(store: Store, dirs: ContainerDirs, started: bool, removing: bool) -> None:
    """The last undo before the lock is let go: the directory of a start that failed, or of
    a run with --rm whose command has exited and was read.

    A start that failed: if removing fails too, the error that stopped the start is still
    the one shown (it is the cause); this one is a warning."""
    if removing:
        with step("remove the container (--rm)", remove.shell_line(dirs.path),
                  why="after the report was read, and the cgroup and links removed, with "
                  "the lock still held: a prune meanwhile sees it alive"):
            store.remove_container(dirs)
    elif not started:
        try:
            store.remove_container(dirs)
        except StepError as e:
            print(f"{e} (and the start failed)", file=sys.stderr)


def limits_state(limits: Limits) -> dict[str, object]:
    """For state.json and inspect: each limit as asked, and as the kernel takes it."""
    return {"memory": limits.memory, "pids": limits.pids, "cpus": limits.cpus,
            "cpu_quota_us": None if limits.cpus is None else cgroups.cpu_quota_us(limits.cpus),
            "cpu_period_us": None if limits.cpus is None else cgroups.CPU_PERIOD_US}


def container_config(image: Image, spec: RunSpec) -> dict[str, object]:
    """The container's own config, as `commit` gives it to a new image (Docker's rules): the
    command it ran becomes the default, -e adds to the environment, --entrypoint and -w
    replace the image's."""
    c = image.config
    entrypoint = c.entrypoint if spec.entrypoint is None else spec.entrypoint
    cmd = spec.command or (c.cmd if spec.entrypoint is None else ())
    return {"cmd": list(cmd), "entrypoint": list(entrypoint),
            "env": [*c.env, *spec.env], "workdir": spec.workdir or c.workdir}


def container_command(image: Image, spec: RunSpec) -> tuple[str, ...]:
    """ENTRYPOINT + CMD, as Docker joins them: --entrypoint replaces the image's and clears
    its default command (`--entrypoint ''`: no entrypoint at all); CMD replaces the default."""
    entrypoint = image.config.entrypoint if spec.entrypoint is None else spec.entrypoint
    command = entrypoint + (spec.command or (image.config.cmd if spec.entrypoint is None
                                             else ()))
    if not command:
        raise StepError("check input", "no command to run: --entrypoint '' and no CMD",
                        hint="give a command after the image: minictr run --entrypoint '' "
                        "IMAGE CMD")
    return command


def container_env(image: Image, spec: RunSpec, hostname: str) -> list[str]:
    """The environment, as Docker builds it: image's, then HOSTNAME, HOME, TERM, then -e."""
    env = {"PATH": DEFAULT_PATH}
    env.update(item.split("=", 1) for item in image.config.env)  # type: ignore[arg-type]
    env["HOSTNAME"] = hostname
    if spec.user is None:  # with -u, the user's home, from the image's /etc/passwd (init)
        env.setdefault("HOME", "/root")
    if spec.tty:
        env["TERM"] = os.environ.get("TERM", "xterm")
    env.update(item.split("=", 1) for item in spec.env)  # type: ignore[arg-type]
    return [f"{k}={v}" for k, v in env.items()]


def wait_for_init_pid(child: namespaces.Child) -> None:
    """Read the start-up socket until the shim reports init's pid (child.init_pid), or an
    error: a step of the shim failed (the cgroup, the user namespace, unshare)."""
    while child.init_pid is None:
        message = child.receive()
        if message is None:
            raise StepError("start the container", "its shim ended before it forked init "
                            "(killed?)", hint="run again with --explain to see the last step")
        raise_if_error(*message)
    note(f"the container's init is PID {child.init_pid} on the host: look at it with "
         f"ls -l /proc/{child.init_pid}/ns; cat /proc/{child.init_pid}/mountinfo")


def wait_for_exec(child: namespaces.Child) -> tuple[int | None, dict[str, list[str]]]:
    """Read the start-up socket until end-of-file, while the init takes its steps; return the
    pty's master fd, if any, and the paths the init masked and made read-only, as it
    reported them ({"mounted": ...}). The end-of-file must come after {"exec": true}."""
    pty, execs, mounted = None, False, None
    while (message := child.receive()) is not None:
        data, fds = message
        raise_if_error(data, fds)
        if "pty" in data:
            pty = fds[0]
        if "mounted" in data:
            mounted = data["mounted"]
        execs = execs or "exec" in data
    if not execs:
        raise StepError("start the container", "its first process ended before it started "
                        "(killed?)", hint="run again with --explain to see the last step")
    if mounted is None:  # sent before every exec: a bug of ours, and no report may guess
        if pty is not None:
            os.close(pty)
        raise StepError("start the container", "its init did not say which paths it masked")
    return pty, mounted


def raise_if_error(data: dict[str, Any], fds: list[int]) -> None:
    """A step of the shim or the init failed: its error, as the runtime's own."""
    if "error" in data:
        for fd in fds:
            os.close(fd)
        raise StepError.from_dict(data["error"])


def wait_for_exit(child: namespaces.Child, pty: int | None) -> int:
    """Relay the terminal (if any) until the container exits; return its exit code."""
    if pty is not None:
        try:
            with terminal.raw_mode(sys.stdin.fileno()):
                terminal.relay(pty, sys.stdin.fileno(), sys.stdout.fileno())
        finally:
            os.close(pty)
    return child.wait()


@contextmanager
def passing_signals_to(child: namespaces.Child) -> Iterator[None]:
    """SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to minictr go to the container's PID 1,
    which (as in Docker) ignores those it has no handler for: the kernel drops a signal to a
    namespace's init that would take the default action (pid_namespaces(7)). So a Ctrl-C to
    a PID 1 without a SIGINT handler says so, and how many more kill it; the third does."""
    interrupts = 0

    def pass_on(signum: int, _frame: object) -> None:
        nonlocal interrupts
        interrupts += signum == signal.SIGINT
        if interrupts >= 3:
            print("minictr: third interrupt: killing the container (SIGKILL)", file=sys.stderr)
            signum = signal.SIGKILL
        elif signum == signal.SIGINT and child.handles(signum) is False:
            print("minictr: the container ignored SIGINT (its PID 1 has no handler for it); "
                  "two more to kill it" if interrupts == 1 else "minictr: one more to kill it",
                  file=sys.stderr)
        child.signal(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {s: signal.signal(s, pass_on) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# --- between: the shim ------------------------------------------------------------------------


def shim(plan: Plan, sock: socket.socket, runtime_pid: int) -> NoReturn:
    """The shim: a fork of the runtime, the parent of the container's init. It exists because
    a new PID namespace applies to the children of the process that unshares it, never to
    that process itself (pid_namespaces(7)). Shell: unshare --fork ... does the same."""
    explain.acting_as("shim")  # --explain: the steps from here on are the shim's
    try:
        os.setsid()  # out of the terminal's process group: a Ctrl-C for the runtime is not ours
        # Until "go", a runtime that dies closes the socket: wait_for_go reads end-of-file
        # and the shim leaves. Its first step comes after "go" has been read, so that a step
        # that fails never leaves "go" unread (the runtime would get ECONNRESET, not the error)
        namespaces.wait_for_go(sock)
        namespaces.die_with_parent(runtime_pid)  # a container never outlives its runtime
        # ch.8: first, while still root on the host: --userns's uid may not write there
        cgroups.move_shim_in(plan.cgroup, plan.runtime_cgroups)
        if plan.user_ns is not None:  # ch.10: the namespaces made next belong to this one
            userns.enter(plan.user_ns)
            namespaces.die_with_parent(runtime_pid)  # a change of uid clears it (prctl(2))
        namespaces.unshare_namespaces(host_network=plan.spec.network == "host")  # ch.4
        init_pid = namespaces.fork_init(partial(init_container, plan), sock)  # PID 1
        moved_out = False
        if plan.user_ns is None:  # in the user namespace it may not write the host's cgroups
            moved_out = cgroups.move_shim_out(plan.cgroup, plan.runtime_cgroups)
        namespaces.report_init(sock, init_pid, moved_out)
    except StepError as e:  # the runtime reads the error, and undoes all (init included)
        namespaces.send(sock, {"error": e.to_dict()})
        os._exit(EXIT_RUNTIME_ERROR)
    namespaces.exit_as(init_pid)  # the runtime waits for the shim: it exits as init does


# --- inside the container ----------------------------------------------------------------------


def init_container(plan: Plan, sock: socket.socket) -> NoReturn:
    """PID 1 of the new namespaces: build the container's root, then become its command."""
    explain.acting_as("init")  # --explain: the steps from here on are the init's
    spec, image, dirs, user_ns, policy = plan.spec, plan.image, plan.dirs, plan.user_ns, plan.policy
    try:
        os.setsid()  # its own session, as Docker's containers have: no host terminal signals
        namespaces.wait_until_ready(sock)  # the shim out of the cgroup, eth0 made (ch.9)
        rootfs.make_mounts_private()
        if user_ns is None:
            overlay.mount_overlay(plan.layers, [p.name for p in image.lowers], dirs.upper,
                                  dirs.work, dirs.merged)
            merged = dirs.merged
        else:  # --userns: the same directories, reached through the idmapped $C
            mapped = userns.attach(user_ns)
            overlay.mount_overlay(mapped / "lowers", idmapped_lowers(len(image.layers)),
                                  mapped / "upper", mapped / "work", mapped / "merged",
                                  userxattr=True)
            merged = mapped / "merged"
        rootfs.mount_proc(merged)
        rootfs.mount_dev(merged, tty_group=user_ns is None or user_ns.idmap.maps(TTY_GID))
        rootfs.mount_sys(merged, read_only=policy.sys_read_only)
        if spec.init:  # onto /dev/init: /dev's tmpfs is minictr's own, so not in the upper
            pid1.bind_init(merged)
        # ch.10: once /proc and /sys are there to mask, and before pivot_root, so that every
        # mount of the container is made here, under merged/
        masked = security.mask_paths(merged, policy.masked)
        read_only = security.make_read_only(merged, policy.read_only)
        # The runtime reports and records what was mounted, and only the init knows it
        namespaces.send(sock, {"mounted": {"masked": masked, "read_only": read_only}})
        # $C/hosts... onto /etc: while $C (merged's parent) is reachable
        network.bind_files(merged.parent, merged, plan.net.files)
        # ch.13: the volumes, then the tmpfs mounts: after /etc's files, so that a volume on
        # /etc/hosts is on top (as Docker's), before pivot_root, while the host's paths can
        # still be reached. Their mount points are made, if missing, in the upper.
        volumes.bind_volumes(merged, spec.volumes)
        volumes.mount_tmpfs(merged, spec.tmpfs)
        # The user's /etc/passwd as the command will see it (a volume may be over /etc)
        ids = None if spec.user is None else user.resolve(merged, spec.user, spec.userns)
        if spec.read_only:  # last: every mkdir of a mount point above writes to the upper
            volumes.make_root_read_only(merged)
        rootfs.pivot_into(merged)
        if user_ns is not None:
            userns.forget(user_ns)  # no fd of the host's mounts may reach the command
        set_hostname(plan.hostname)
        if spec.network != "host":  # a new network namespace has lo down
            network.loopback_up()
        enter_workdir(spec.workdir or image.config.workdir)
        if spec.tty:
            terminal.attach_new_pty(sock)
        # Last: every step above needed root's full powers (mount: CAP_SYS_ADMIN)
        security.drop_capabilities(policy.kept, policy.dropped)
        env = plan.env
        if ids is not None:  # -u: needs CAP_SETUID and CAP_SETGID, so after the drop keeps them
            user.switch(ids)
            # A change of uid clears the parent-death signal (prctl(2)): ask for it again, or
            # a killed runtime would leave this init running, orphaned, outside any undo
            namespaces.die_with_parent(0, explained=False)
            env = user.with_home(env, ids)
        security.set_no_new_privs()  # from the exec on, no setuid binary gives them back
        # --init: tini is PID 1 and the command its child, which signals reach (ch.13)
        command = pid1.command(plan.command) if spec.init else plan.command
        exec_command(command, env, sock, stdin_from_null=not spec.interactive)
    except StepError as e:
        namespaces.send(sock, {"error": e.to_dict()})
        os._exit(e.exit_code)
    except BaseException as e:  # a bug of ours: still one line, still 125
        namespaces.send(sock, {"error": StepError("start the container", repr(e)).to_dict()})
        os._exit(EXIT_RUNTIME_ERROR)


def idmapped_lowers(count: int) -> list[str]:
    """--userns: the layers as userns.attach puts them, $CM/lowers/1 (the bottom) to N,
    named top first, as overlay's lowerdir= lists them."""
    return [str(n) for n in reversed(range(1, count + 1))]


def set_hostname(hostname: str) -> None:
    """Only the new UTS namespace sees it. Shell: hostname NAME   See: sethostname(2)"""
    with step("set the hostname in the new UTS namespace", f"hostname {hostname}",
              why="the UTS namespace starts with the host's name; only this one changes"):
        socket.sethostname(hostname)


def enter_workdir(workdir: str) -> None:
    """The image's WorkingDir, or -w's, made if missing as Docker does (that mkdir lands in
    upper; with --read-only it must exist). Shell: mkdir -p WORKDIR && cd WORKDIR"""
    if workdir in ("", "/"):
        return
    with step("enter the working directory", f"mkdir -p {workdir} && cd {workdir}",
              {errno.EROFS: "--read-only: the working directory must exist in the image, or be a "
                   "volume or --tmpfs"},
              why="the image's WorkingDir (or -w), as Docker enters it; after pivot_root, so "
              "that the path is the container's"):
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)


def exec_command(command: tuple[str, ...], env: list[str], sock: socket.socket, *,
                 stdin_from_null: bool) -> NoReturn:
    """Replace this process (PID 1) by the command, searching the container's PATH.

    Without -i or a terminal the command reads /dev/null, as under `docker run`: a shell then
    exits at once instead of waiting for input that never comes. Exit codes as Docker's: 127
    when the command is not found, 126 when it cannot be run.
    Shell: exec env -i KEY=VALUE... COMMAND [</dev/null]      See: execve(2)
    """
    redirect = " </dev/null" if stdin_from_null else ""
    with step("exec the command as PID 1",
              "exec env -i " + " ".join(env + list(command)) + redirect,
              why="last: the command replaces the init, keeps its pid (1), its namespaces "
              "and what the steps before took away, and nothing of minictr"):
        namespaces.become(command, env, sock, stdin_from_null=stdin_from_null)
