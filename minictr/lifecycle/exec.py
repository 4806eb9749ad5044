"""`minictr exec`: one more command in a running container, as `docker exec` runs it.

`run` makes a container's namespaces; `exec` joins them. Nothing is built: the root, the
masks, the hostname are there already, held by the container's PID 1. Three processes again,
for the same reason as in `run` (pid_namespaces(7): a process cannot change its own PID
namespace, only the one its children are born in):

    runtime  (minictr exec, on the host)
      check    the container runs: its lock held (the CLI), its PID 1 alive (a pidfd)
      open     /proc/PID/ns/{user,ipc,uts,net,cgroup,pid,mnt}, then the pidfd says that PID
               was still the container's PID 1 when they were opened: a reused pid is never
               joined
      -u NAME  the container's /etc/passwd, read through /proc/PID/root, by fd, bounded
      └─ joiner   into the container's cgroup; setns(2) into each namespace but the mount
           │        one; fork; out of the cgroup again (as run's shim); wait, exit as the child
           └─ exec   born in the PID namespace: setns(2) the mount one → (-t: a pty) →
                     capabilities → user → workdir → no_new_privs → fds above 2 closed → exec

Shell: nsenter --target PID --mount --uts --ipc --net --pid --cgroup -- CMD   See: nsenter(1)

What the exec'd process shares with PID 1: every namespace, the cgroup (so its limits), the
mount table (so the masked and read-only paths of minictr.run.security), the environment of
state.json, the capabilities kept (state.json's security), no_new_privs. What it does not:
it is not PID 1, so a signal without a handler kills it as anywhere else.

Hostile by construction: the container owns its /etc/passwd (a symlink to the host's
/etc/shadow, a fifo, 10 GB), and every process in it can see the joiner's children in its
/proc. So the files are walked by fd and never followed, and the joiner is non-dumpable until
the exec (runc's CVE-2016-9962: a container that ptraces or opens /proc/PID/fd of the
half-joined process gets the host's fds).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import signal
import socket
import stat
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import prctl

from minictr import explain, libc
from minictr.errors import EXIT_RUNTIME_ERROR, StepError
from minictr.explain import step
from minictr.run import cgroups, namespaces, security
from minictr.spec import ContainerDirs

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to setresuid(2)
MAX_ACCOUNT_FILE = 1 << 20  # bytes of /etc/passwd or /etc/group read, at most: 1 MiB
_NAME = r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}"  # useradd's names, and plain numbers
USER_PATTERN = re.compile(rf"({_NAME}\$?)(?::({_NAME}))?")

# The namespaces joined, in this order, with nsenter(1)'s option and why each is there. The
# user namespace, with --userns, comes before them all (join_user_namespace).
JOINED = (
    ("ipc", libc.CLONE_NEWIPC, "--ipc",
     "its System V IPC and POSIX message queues: a shm segment of the container is shared"),
    ("uts", libc.CLONE_NEWUTS, "--uts", "its hostname: `hostname` says the container's"),
    ("net", libc.CLONE_NEWNET, "--net", "its network stack: its lo, its eth0, its ports"),
    ("cgroup", libc.CLONE_NEWCGROUP, "--cgroup",
     "after the move into its cgroup: /proc/self/cgroup then says / as in PID 1"),
    ("pid", libc.CLONE_NEWPID, "--pid",
     "for the children only (pid_namespaces(7)): the fork that follows is born in it"),
    ("mnt", libc.CLONE_NEWNS, "--mount",
     "last, as nsenter does, and by the child only: it takes the host's paths away. setns(2) "
     "sets / and the cwd to the container's root: its overlay, masks and read-only paths"),
)


class Request(NamedTuple):
    """What the user asked for, checked by the CLI: the record handed to the processes."""

    command: tuple[str, ...]
    env: tuple[str, ...]  # -e KEY=VALUE, over the container's
    workdir: str | None  # -w: absolute, inside the container
    user: str | None  # -u as given: UID[:GID] or NAME[:GROUP]
    interactive: bool  # -i: the command reads our stdin (else /dev/null)
    tty: bool  # -t: a pty of the container's devpts


class Plan(NamedTuple):
    """Everything the joiner and the exec'd process need, decided in the runtime."""

    request: Request
    pid: int  # the container's PID 1, on the host
    ns_fds: tuple[tuple[str, int, str, str, int], ...]  # JOINED rows, each with its open fd
    user_ns_fd: int | None  # --userns containers: /proc/PID/ns/user
    cgroup: cgroups.Cgroup
    runtime_cgroups: list[Path]  # where the joiner goes back to, once it has forked
    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    env: list[str]
    workdir: str
    uid: int
    gid: int


def exec_in(dirs: ContainerDirs, state: dict[str, Any], request: Request) -> int:
    """Run request.command in the running container ``dirs``; its exit code (docker exec's:
    the command's own, 126, 127, 128+N for signal N)."""
    pid = state.get("pid")
    if not isinstance(pid, int):
        raise not_running(dirs, "it has no PID 1 yet")
    if request.tty:  # imported on the host: in the container's mounts there is no minictr/
        from minictr.run import terminal  # noqa: F401 - the exec'd process uses it
    explain.define("PID", pid)
    with ExitStack() as undo:  # undone in reverse order, whatever happens
        pidfd = undo.enter_context(opened(open_pidfd(dirs, pid)))
        plan = undo.enter_context(planned(dirs, state, request, pid, pidfd))
        child = namespaces.spawn(partial(joiner, plan))
        undo.callback(child.kill_and_reap)
        undo.enter_context(forwarding_signals(child))
        pty = wait_for_exec(child, plan)
        exit_code = wait_for_exit(child, pty, request)
    return exit_code


def not_running(dirs: ContainerDirs, why: str) -> StepError:
    return StepError("find container", f"container {dirs.name} is not running ({why})",
                     hint=f"start a new one, or look at it: minictr ps -a; minictr inspect "
                     f"{dirs.name}")


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_pidfd(dirs: ContainerDirs, pid: int) -> int:
    """A pidfd on the container's PID 1, and proof that this pid is it: in the container's
    cgroup, in a PID namespace other than ours. A pidfd names that process, never a later one
    that reuses its pid.   See: pidfd_open(2)"""
    with step("open a pidfd on the container's PID 1", f"cat /proc/{pid}/cgroup",
              why="the state's pid may be a recycled one if the container has just exited: "
              "a pidfd holds on to the process itself, and alive() checks it later"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise not_running(dirs, "its PID 1 has exited") from None
        try:
            try:
                cgroup = f"/{cgroups.PARENT}/{dirs.id}"
                with open(f"/proc/{pid}/cgroup") as f:
                    inside = any(line.rstrip("\n").split(":", 2)[2].startswith(cgroup)
                                 for line in f)
                ours, theirs = os.stat("/proc/self/ns/pid"), os.stat(f"/proc/{pid}/ns/pid")
            except OSError:  # gone meanwhile (ENOENT, ESRCH)
                raise not_running(dirs, "its PID 1 has exited") from None
            if not inside or (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
                raise not_running(dirs, f"pid {pid} is not its PID 1 any more")
        except BaseException:
            os.close(pidfd)
            raise
    return pidfd


def alive(pidfd: int) -> bool:
    """A pidfd turns readable when its process exits (pidfd_open(2)): not readable, alive."""
    return not select.select([pidfd], [], [], 0)[0]


@contextlib.contextmanager
def planned(dirs: ContainerDirs, state: dict[str, Any], request: Request, pid: int,
            pidfd: int) -> Iterator[Plan]:
    """Open the namespaces of PID 1 and resolve -u, while the pidfd says PID 1 is alive; the
    Plan. Its fds close when the block ends (the joiner, forked meanwhile, has its own)."""
    userns = (state.get("security") or {}).get("userns")
    fds: list[int] = []
    try:
        user_ns_fd = open_namespaces(dirs, pid, userns, fds)
        rows = tuple((*row, fds[i + (user_ns_fd is not None)]) for i, row in enumerate(JOINED))
        uid, gid = resolve_user(dirs, pid, request.user, userns)
        if not alive(pidfd):  # checked last: all that was read above was PID 1's
            raise not_running(dirs, "its PID 1 exited just now")
        caps = state["security"]["capabilities"]
        workdir = request.workdir or state.get("config", {}).get("workdir") or "/"
        cg = cgroups.backend(dirs.id)
        yield Plan(request, pid, rows, user_ns_fd, cg, cg.runtime_cgroups(),
                   tuple(caps["kept"]), tuple(caps["dropped"]),
                   exec_env(state.get("env", []), request), workdir, uid, gid)
    finally:
        for fd in fds:
            os.close(fd)


def open_namespaces(dirs: ContainerDirs, pid: int, userns: dict[str, str] | None,
                    fds: list[int]) -> int | None:
    """Open /proc/PID/ns/* (the user one first, with --userns) into ``fds``; the user one's fd.

    A PID 1 that made itself a user namespace (`exec unshare -U ...`: any process may) is not
    joined: its namespaces would no longer be the ones minictr made for it.
    Shell: ls -l /proc/PID/ns     See: namespaces(7)"""
    names = (["user"] if userns else []) + [name for name, *_ in JOINED]
    with step("open the namespaces of the container's PID 1",
              f"# all of exec, as util-linux does it: nsenter --target {pid}"
              f"{' --user' if userns else ''} --mount --uts --ipc --net --pid --cgroup -- CMD\n"
              f"ls -l /proc/{pid}/ns", {errno.ENOENT: "has the container just exited?"},
              why="opened now, while the pidfd says PID 1 is alive; the joiner setns(2)s into "
              "them after its fork"):
        for name in names:
            fds.append(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
        ours, theirs = os.stat("/proc/self/ns/user"), os.stat(f"/proc/{pid}/ns/user")
        same_user_ns = (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)
        with open(f"/proc/{pid}/uid_map") as f:
            uid_map = " ".join(f.read().split())
    moved = not same_user_ns if userns is None else uid_map != userns["uid_map"]
    if moved:
        raise StepError("open the namespaces of the container's PID 1",
                        f"the PID 1 of {dirs.name} is in a user namespace of its own making",
                        hint="exec joins only the namespaces minictr made; run a new container")
    return fds[0] if userns else None


def exec_env(container_env: list[str], request: Request) -> list[str]:
    """The container's environment (state.json's, as PID 1 got it), then -e, as docker exec;
    with -t, TERM if the container has none."""
    env = dict(item.split("=", 1) for item in container_env)
    if request.tty:
        env.setdefault("TERM", os.environ.get("TERM", "xterm"))
    env.update(item.split("=", 1) for item in request.env)
    return [f"{k}={v}" for k, v in env.items()]


# --- -u: a number, or a name from the container's /etc/passwd ------------------------------


def parse_user(text: str | None) -> None:
    """-u UID[:GID] or NAME[:GROUP]: the syntax alone (names are resolved in the container)."""
    if text is None:
        return
    m = USER_PATTERN.fullmatch(text)
    if not m or any(p.isdigit() and int(p) > MAX_ID for p in (m[1], m[2] or "")):
        raise StepError("check input", f"invalid -u {text[:80]!r}",
                        hint="UID[:GID] (0 to 4294967294) or NAME[:GROUP], as docker exec -u")


def resolve_user(dirs: ContainerDirs, pid: int, text: str | None,
                 userns: dict[str, str] | None) -> tuple[int, int]:
    """-u as a uid and gid inside the container, as Docker resolves it: a name through the
    image's /etc/passwd (and its group); a uid alone takes its passwd line's gid, or 0."""
    if text is None:
        return 0, 0
    user, _, group = text.partition(":")
    passwd = None if user.isdigit() and group else account_file(dirs, pid, "passwd")
    entry = find_entry(passwd, user, key=2 if user.isdigit() else 0)
    if entry is None and not user.isdigit():
        raise StepError("check input", f"unable to find user {user}: no matching entries in "
                        f"the container's /etc/passwd", hint="give a number: -u 1000:1000")
    uid = int(user) if user.isdigit() else number_of(entry, 2, user)
    if group:
        found = None if group.isdigit() else find_entry(
            account_file(dirs, pid, "group"), group, key=0)
        if found is None and not group.isdigit():
            raise StepError("check input", f"unable to find group {group}: no matching "
                            "entries in the container's /etc/group", hint="give a number")
        gid = int(group) if group.isdigit() else number_of(found, 2, group)
    else:
        gid = number_of(entry, 3, user) if entry else 0
    size = int(userns["uid_map"].split()[2]) if userns else MAX_ID + 1
    if uid >= size or gid >= size:
        raise StepError("check input", f"-u {text}: the container's user namespace has ids "
                        f"0 to {size - 1} only", hint="see its --userns")
    return uid, gid


def find_entry(text: bytes | None, wanted: str, key: int) -> list[bytes] | None:
    """The first line of a passwd or group file whose field ``key`` is ``wanted``."""
    for line in (text or b"").splitlines():
        fields = line.split(b":")
        if len(fields) > max(key, 3) and fields[key] == wanted.encode():
            return fields
    return None


def number_of(entry: list[bytes] | None, field: int, name: str) -> int:
    """A uid or gid field, checked: the container wrote it. Its text is never shown."""
    value = entry[field] if entry else b""
    if not re.fullmatch(rb"[0-9]{1,10}", value) or int(value) > MAX_ID:
        raise StepError("check input", f"the container's account file gives {name} an id "
                        "that is not a number from 0 to 4294967294", hint="give a number: -u UID")
    return int(value)


def account_file(dirs: ContainerDirs, pid: int, name: str) -> bytes | None:
    """The container's /etc/NAME (passwd, group), read through /proc/PID/root one directory
    fd at a time, never following a symlink (the container may plant one to the host's
    /etc/shadow), only if it is a regular file (a fifo would block), at most 1 MiB.
    None if it has none. Shell: cat /proc/PID/root/etc/NAME (which would follow links)"""
    with step(f"read the container's /etc/{name}", f"cat /proc/{pid}/root/etc/{name}",
              why="-u names a user of the image: the container's file, so hostile input; "
              "read by fd, through its root, before anything joins it"):
        fds: list[int] = []
        try:
            fds.append(os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            fds.append(os.open("etc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                               dir_fd=fds[0]))
            fds.append(os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[1]))
        except FileNotFoundError:
            return None
        except OSError as e:  # ELOOP, ENOTDIR: /etc itself is a link or not a directory
            raise hostile(name, "its /etc is not a directory") from e
        finally:
            for fd in fds[:-1]:
                os.close(fd)
        with opened(fds[-1]) as path_fd:
            st = os.fstat(path_fd)
            if not stat.S_ISREG(st.st_mode):
                raise hostile(name, f"it is not a regular file ({kind(st.st_mode)})")
            if st.st_size > MAX_ACCOUNT_FILE:
                raise hostile(name, f"it holds {st.st_size} bytes, more than 1 MiB")
            # Reopened through the O_PATH fd: the very inode checked above, not a path again
            with opened(os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK
                                | os.O_NOCTTY | os.O_CLOEXEC)) as fd:
                data = os.read(fd, MAX_ACCOUNT_FILE + 1)
        if len(data) > MAX_ACCOUNT_FILE:
            raise hostile(name, "it grew past 1 MiB while it was read")
        return data


def hostile(name: str, what: str) -> StepError:
    return StepError(f"read the container's /etc/{name}", f"not read: {what}",
                     hint="give a number instead: -u UID[:GID]")


def kind(mode: int) -> str:
    return ("a symbolic link" if stat.S_ISLNK(mode) else "a fifo" if stat.S_ISFIFO(mode)
            else "a directory" if stat.S_ISDIR(mode) else "a device or socket")


# --- the runtime, while the command runs ---------------------------------------------------


def wait_for_exec(child: namespaces.Child, plan: Plan) -> int | None:
    """Read the socket: first the exec'd process's host pid, from the joiner (Child.receive
    opens a pidfd on it, while the process waits for our "ready": so it is alive, never
    reaped yet); then that process's messages until end-of-file, which must follow
    {"exec": true}, else it died before its exec. The pty's master fd with -t. Between the
    two, the joiner leaves the container's cgroup, if it could not by itself."""
    try:
        while child.init_pid is None:
            if (message := child.receive()) is None:
                raise StepError("join the container", "the joiner ended before it forked "
                                "(killed?)", hint="is the container still running? minictr ps")
            raise_if_error(*message)
    except ProcessLookupError:  # killed already: by the container, which can see it
        raise StepError("join the container", "its process was killed before its exec",
                        hint="is the container still running? minictr ps") from None
    if not child.shim_moved_out:  # v2, or --userns: it may not move itself (see joiner)
        cgroups.move_shim_out(plan.cgroup, plan.runtime_cgroups, child.shim_pid)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it died: EOF next
        namespaces.send(child.sock, {"ready": True})
    pty, execs = None, False
    while (message := child.receive()) is not None:
        raise_if_error(*message)
        if "pty" in message[0]:
            pty = message[1][0]
        execs = execs or "exec" in message[0]
    if not execs:
        raise StepError("join the container", "its process ended before the exec (killed, "
                        "as the container stopped?)", hint="is it still running? minictr ps")
    return pty


def raise_if_error(data: dict[str, Any], fds: list[int]) -> None:
    if "error" in data:
        for fd in fds:
            os.close(fd)
        raise StepError.from_dict(data["error"])


def wait_for_exit(child: namespaces.Child, pty: int | None, request: Request) -> int:
    """Relay the pty (-t) until the command closes it; wait; its exit code."""
    if pty is not None:
        from minictr.run import terminal  # only with -t: termios and tty

        with ExitStack() as restore:
            restore.callback(os.close, pty)
            stdin = 0  # -t without -i: the command's keys come from nowhere, as docker's
            if not request.interactive:
                stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                restore.callback(os.close, stdin)
            elif os.isatty(0):
                restore.enter_context(terminal.raw_mode(0))
            terminal.relay(pty, stdin, 1)
    return child.wait()


@contextlib.contextmanager
def forwarding_signals(child: namespaces.Child) -> Iterator[None]:
    """SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to minictr go to the exec'd process (by its
    pidfd). It is not a PID 1: a signal it has no handler for kills it, as docker exec's."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {s: signal.signal(s, lambda n, _: child.signal(n)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# --- the joiner: a fork of the runtime, on the host until its setns ------------------------


def joiner(plan: Plan, sock: socket.socket, runtime_pid: int) -> NoReturn:
    """Join the cgroup, then the namespaces but the mount one; fork the process that execs
    (it joins the mount namespace itself); leave the cgroup; exit as that process does.

    The joiner never enters the container's mount namespace: it keeps the host's
    /sys/fs/cgroup, to leave the cgroup by itself (v1) once it has forked. So the cgroup, its
    limits and its OOM killer hold the command only, as in `run` once the shim is out."""
    explain.acting_as("joiner")
    try:
        os.setsid()  # out of the terminal's process group: a Ctrl-C goes through the runtime
        namespaces.die_with_parent(runtime_pid, explained=False)
        prctl.set_dumpable(False)  # before anything of the container can see us
        join_cgroup(plan)
        if plan.user_ns_fd is not None:
            join_user_namespace(plan.user_ns_fd, runtime_pid)
        for name, flag, option, why, fd in plan.ns_fds[:-1]:  # the mount one: in the child
            join_namespace(name, flag, option, why, fd, plan.pid)
        pid = fork_into_pid_namespace(partial(exec_process, plan), sock)
        moved_out = False
        if plan.user_ns_fd is None:  # in the user namespace it may not write the host's cgroups
            moved_out = cgroups.move_shim_out(plan.cgroup, plan.runtime_cgroups)
        namespaces.report_init(sock, pid, moved_out)
    except StepError as e:
        namespaces.send(sock, {"error": e.to_dict()})
        os._exit(EXIT_RUNTIME_ERROR)
    namespaces.exit_as(pid)  # docker exec's codes: the command's, or 128+N


def join_cgroup(plan: Plan) -> None:
    """Into the container's cgroup, before the namespaces: its limits count this process and
    its children, and the cgroup namespace joined next shows it as /.   See: cgroups(7)"""
    cg = plan.cgroup
    with step("move into the container's cgroup",
              "\n".join(f"echo 0 > {d}/{cg.move_file(0)}" for d in cg.dirs),
              {errno.ENOENT: "has the container just exited? Its cgroup is gone"},
              why="first, from the host, where the cgroup's files are: its limits hold for "
              "the command as for PID 1"):
        cg.move_in()


def join_user_namespace(fd: int, runtime_pid: int) -> None:
    """--userns: join the container's user namespace and become its root (host uid
    100000), as minictr.run.userns.enter does in the shim. After the cgroup: the container's
    root may not write the host's cgroup files. Shell: nsenter --user=... --setuid=0"""
    with step("setns: the user namespace, and become its root",
              "nsenter --user=/proc/$PID/ns/user --setuid=0 --setgid=0",
              why="first of the namespaces: the others belong to it, and only its root may "
              "join them (setns(2): CAP_SYS_ADMIN in their owner)"):
        libc.setns(fd, libc.CLONE_NEWUSER)
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    namespaces.die_with_parent(runtime_pid, explained=False)  # a change of uid clears it
    prctl.set_dumpable(False)  # and this too (prctl(2) PR_SET_DUMPABLE)


def join_namespace(name: str, flag: int, option: str, why: str, fd: int, pid: int) -> None:
    """setns(2) into one namespace of PID 1, by the fd the runtime opened.
    Shell: nsenter --ipc=/proc/PID/ns/ipc (and so on)"""
    with step(f"setns: the {name} namespace", f"nsenter {option}=/proc/$PID/ns/{name}",
              why=why):
        libc.setns(fd, flag)
        os.close(fd)


def fork_into_pid_namespace(process: Any, sock: socket.socket) -> int:
    """Fork the process that execs: the first of ours in the PID namespace. Its host pid."""
    with step("fork: the child is born in the container's PID namespace",
              "nsenter --pid=... --fork", {errno.ENOMEM: "ENOMEM here: the container's PID 1 has "
                                              "exited, and its PID namespace with it"},
              why="setns(2) CLONE_NEWPID moved only our children: in pid_namespaces(7) a "
              "process keeps its own for life"):
        pid = os.fork()
    if pid == 0:
        try:
            namespaces.die_with_parent(0, explained=False)  # our parent is outside: pid 0
            process(sock)
        finally:
            os._exit(EXIT_RUNTIME_ERROR)
    return pid


# --- the exec'd process: inside the container's PID namespace ------------------------------


def exec_process(plan: Plan, sock: socket.socket) -> NoReturn:
    """Take what PID 1 has, in the order the init takes it, and exec."""
    explain.acting_as("exec")
    request = plan.request
    try:
        namespaces.wait_until_ready(sock)  # the runtime has its pidfd: see wait_for_exec
        join_namespace(*plan.ns_fds[-1], plan.pid)  # mnt: last, as nsenter(1) joins it
        os.setsid()  # its own session: a terminal's signals come through minictr
        if request.tty:
            from minictr.run import terminal  # imported already, by exec_in

            terminal.attach_new_pty(sock)
        security.drop_capabilities(plan.kept, plan.dropped)  # needs CAP_SETPCAP: first
        if (plan.uid, plan.gid) != (0, 0):
            become(plan.uid, plan.gid)
        enter_workdir(plan.workdir)
        security.set_no_new_privs()
        exec_command(request.command, plan.env, sock, stdin_from_null=not request.interactive)
    except StepError as e:
        namespaces.send(sock, {"error": e.to_dict()})
        os._exit(e.exit_code)
    except BaseException as e:  # a bug of ours: still one line, still 125
        namespaces.send(sock, {"error": StepError("exec", repr(e)).to_dict()})
        os._exit(EXIT_RUNTIME_ERROR)


def become(uid: int, gid: int) -> None:
    """-u: the user and group, no supplementary groups. A uid other than 0 loses the
    effective and permitted capabilities (capabilities(7)): as Docker's, its CapEff is 0.
    Shell: setpriv --reuid=UID --regid=GID --clear-groups"""
    with step(f"become uid {uid}, gid {gid}",
              f"setpriv --reuid={uid} --regid={gid} --clear-groups",
              {errno.EPERM: "the container dropped cap_setuid or cap_setgid, which this needs"},
              why="after the capabilities were cut (that needs CAP_SETPCAP, which uid "
              f"{uid} would not have), before the exec"):
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    namespaces.die_with_parent(0, explained=False)  # a change of uid clears it
    prctl.set_dumpable(False)


def enter_workdir(workdir: str) -> None:
    """-w, or the image's WorkingDir; unlike run, never made. Shell: cd DIR"""
    with step(f"enter the working directory {workdir}", f"cd {workdir}",
              {errno.ENOENT: "it is not in the container (exec makes no directory; run does)"},
              why="after the user change, so that it is entered with the user's rights"):
        os.chdir(workdir)


def exec_command(command: tuple[str, ...], env: list[str], sock: socket.socket, *,
                 stdin_from_null: bool) -> NoReturn:
    """Replace this process by the command, with PID 1's environment, as run's init does
    (minictr.run.namespaces.become: default signals, /dev/null stdin unless -i, every fd above
    2 closed, 127 and 126 as Docker's).   Shell: exec env -i KEY=VALUE... CMD"""
    with step("exec the command in the container",
              "exec env -i " + " ".join(env + list(command))
              + (" </dev/null" if stdin_from_null else ""),
              why="last: it keeps the namespaces, the cgroup and what was taken away above, "
              "and nothing of minictr"):
        namespaces.become(command, env, sock, stdin_from_null=stdin_from_null)
