"""Starting the container's processes in new namespaces, and talking to them while they start.

Three processes take part, because a new PID namespace only applies to the children of the
process that unshares it (pid_namespaces(7)):

    runtime  (minictr, on the host)
      └─ shim    setsid; waits for "go"; joins the cgroup; unshare(mount, uts, ipc, pid, net,
           │     cgroup); fork
           └─ init  PID 1 of the new PID namespace: mounts, pivot_root, hostname, exec

Shell: unshare --mount --uts --ipc --pid --net --cgroup --fork COMMAND

They talk over one SOCK_SEQPACKET socket pair, one JSON message per packet:
runtime→shim "go"; shim→runtime {"pid": init's pid on the host, "shim_moved_out": ...};
runtime→init {"ready": true};
init→runtime {"error": ...}
if a step fails, {"mounted": {"masked": [...], "read_only": [...]}} (the paths the security
step really mounted over: the security line counts them), {"pty": ...} with the terminal's fd
attached, {"exec": true} just before the exec. The init's end is close-on-exec, so when the
runtime reads end-of-file after "exec" the command has been executed: that is how it knows
that the start succeeded (an end-of-file before it is an init that died: killed, out of
memory).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NoReturn

import prctl

from minictr import libc
from minictr.errors import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_RUNTIME_ERROR, StepError
from minictr.explain import note, step

# Which namespaces, with the unshare(1) option for each (namespaces(7)). The network
# namespace has only `lo`, down: a container is offline unless networking is asked for.
NAMESPACES = (
    (libc.CLONE_NEWNS, "--mount"),  # its own mount table: the overlay is invisible to the host
    (libc.CLONE_NEWUTS, "--uts"),  # its own hostname
    (libc.CLONE_NEWIPC, "--ipc"),  # its own System V IPC and POSIX message queues
    (libc.CLONE_NEWPID, "--pid"),  # its own process ids: the command is PID 1
    (libc.CLONE_NEWNET, "--net"),  # its own network stack
    (libc.CLONE_NEWCGROUP, "--cgroup"),  # its own cgroup looks like / inside
)


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def wait_until_ready(sock: socket.socket) -> None:
    """The init waits here, before its first step, for the runtime's {"ready": true}: sent once
    the shim is out of the container's cgroup and, with --network bridge, eth0 is configured.
    So the command never starts beside minictr's shim, or without its network, and the
    runtime's steps and the init's never interleave (--step reads Enter from one stdin)."""
    message = sock.recv(64)
    if not json.loads(message or b"{}").get("ready"):
        raise StepError("wait for the runtime", "the runtime gave up before the container "
                        "could start")


def exit_code_of(wait_status: int) -> int:
    """As a shell reports it: the exit status, or 128+N for death by signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def die_with_parent(parent_pid: int, *, explained: bool = True) -> None:
    """Ask for SIGKILL when our parent dies, so a container never outlives its runtime.

    If the parent died before the request took effect we are already orphaned: leave now.
    ``explained=False`` for the init, which asks at once after its fork, while the runtime
    explains its own steps: two processes must never print (or wait for Enter) at once.
    Shell: setpriv --pdeathsig KILL          See: PR_SET_PDEATHSIG in prctl(2)
    """
    if not explained:
        prctl.set_pdeathsig(signal.SIGKILL)
    else:
        with step("ask for SIGKILL when its parent dies (the parent-death signal)",
                  "setpriv --pdeathsig KILL",
                  why="a runtime killed with SIGKILL undoes nothing; the kernel then kills "
                  "the shim, whose death kills the init, and the container is gone"):
            prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(EXIT_RUNTIME_ERROR)


class Child:
    """The runtime's handle on a starting container: its shim, its init, the socket."""

    def __init__(self, shim_pid: int, sock: socket.socket) -> None:
        self.shim_pid = shim_pid
        self.sock = sock
        self.init_pid: int | None = None
        self.shim_moved_out = False  # whether the shim left the cgroup by itself (v1)
        self._init_pidfd: int | None = None
        self._reaped_status: int | None = None

    def go(self) -> None:
        """Let the shim unshare and start init (the runtime may prepare things before)."""
        send(self.sock, {"go": True})

    def receive(self) -> tuple[dict[str, Any], list[int]] | None:
        """The next message from the shim or init, with any fds; None at end-of-file."""
        data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 4)
        if not data:
            return None
        message = json.loads(data)
        if "pid" in message:
            self.init_pid = int(message["pid"])
            self.shim_moved_out = bool(message.get("shim_moved_out"))
            # A pidfd names this very process, never a later one that reuses its pid.
            self._init_pidfd = os.pidfd_open(self.init_pid)
        return message, list(fds)

    def say_ready(self) -> None:
        """Tell the init it may take its first step: everything the runtime does for it from
        the host (the shim out of the cgroup, eth0) is done. An init that has failed already
        has closed its end: its error is the next message read."""
        with step("tell the init it may start: what the host does for it is done",
                  '# on the start-up socket: {"ready": true}',
                  why="the init waits for it, so that the command never starts beside the "
                  "shim in the cgroup, or without its eth0"), \
                suppress(BrokenPipeError, ConnectionResetError):
            send(self.sock, {"ready": True})

    def handles(self, signum: int) -> bool | None:
        """Whether the container's PID 1 has a handler for ``signum`` (None: not known yet,
        or it is gone). The SigCgt line of /proc/PID/status is the mask of caught signals,
        bit N-1 for signal N. Shell: grep SigCgt /proc/PID/status   See: proc_pid_status(5)"""
        if self.init_pid is None:
            return None
        try:
            with open(f"/proc/{self.init_pid}/status") as status:
                caught = next(line for line in status if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return None
        return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)

    def signal(self, signum: int) -> None:
        """Pass a signal to the container's PID 1 (before it exists: kill the shim)."""
        if self._init_pidfd is not None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                signal.pidfd_send_signal(self._init_pidfd, signum)
        elif self._reaped_status is None:
            os.kill(self.shim_pid, signal.SIGKILL)

    def wait(self) -> int:
        """Wait for the shim, which exits with init's exit code; return that code."""
        if self._reaped_status is None:
            _, status = os.waitpid(self.shim_pid, 0)
            self._reaped_status = status
        return exit_code_of(self._reaped_status)

    def kill_and_reap(self) -> None:
        """Undo for spawn(): SIGKILL init (the kernel then kills its whole PID namespace) and
        the shim, then reap the shim. Safe to call after a normal exit."""
        if self._reaped_status is None:
            self.signal(signal.SIGKILL)
            os.kill(self.shim_pid, signal.SIGKILL)
            self.wait()
        if self._init_pidfd is not None:
            os.close(self._init_pidfd)
            self._init_pidfd = None
        self.sock.close()


def spawn(shim: Callable[[socket.socket, int], NoReturn]) -> Child:
    """Fork the shim: ``shim(sock, runtime_pid)`` (container.shim) runs in the child, which
    never returns; the runtime gets the handle. The socket pair is made first: each side
    keeps one end. See: fork(2), socketpair(2)"""
    runtime_sock, container_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    runtime_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            runtime_sock.close()
            shim(container_sock, runtime_pid)
        finally:
            os._exit(EXIT_RUNTIME_ERROR)
    container_sock.close()
    return Child(pid, runtime_sock)


# --- in the shim, in the order container.shim calls them -----------------------------------


def wait_for_go(sock: socket.socket) -> None:
    """Block until the runtime says "go"; leave quietly if it gave up instead (end-of-file)."""
    if not sock.recv(64):
        os._exit(EXIT_RUNTIME_ERROR)


def unshare_namespaces(host_network: bool) -> None:
    """New mount, UTS, IPC, PID, network and cgroup namespaces for the shim; the PID one is
    for its children only (pid_namespaces(7)), so fork_init comes next. --network host keeps
    the host's network namespace: no network isolation at all. See: unshare(2)"""
    chosen = [ns for ns in NAMESPACES if not (host_network and ns[0] == libc.CLONE_NEWNET)]
    flags = 0
    for flag, _ in chosen:
        flags |= flag
    which = ("mount, UTS, IPC, PID, cgroup (not network: --network host)" if host_network
             else "mount, UTS, IPC, PID, network, cgroup")
    with step(f"unshare namespaces: {which}",
              "unshare " + " ".join(opt for _, opt in chosen) + " --fork",
              why="in the shim, already in the cgroup: the cgroup namespace's root is the "
              "cgroup it is in now; the new PID namespace is for the child it forks next"):
        libc.unshare(flags)


def fork_init(init: Callable[[socket.socket], NoReturn], sock: socket.socket) -> int:
    """Fork the container's init, PID 1 of the new PID namespace; its pid on the host."""
    pid = os.fork()
    if pid == 0:
        try:
            # In its own PID namespace, PID 1's parent shows as 0. As the shim's first act
            # is the same request, shown: the init's is silent (see die_with_parent)
            die_with_parent(0, explained=False)
            init(sock)
        finally:
            os._exit(EXIT_RUNTIME_ERROR)
    return pid


def report_init(sock: socket.socket, init_pid: int, shim_moved_out: bool) -> None:
    """Tell the runtime init's host pid (and whether the shim left the cgroup by itself); the
    rest of the start-up is between the runtime and init: the shim closes its end."""
    send(sock, {"pid": init_pid, "shim_moved_out": shim_moved_out})
    sock.close()


def exit_as(init_pid: int) -> NoReturn:
    """Wait for init, and exit with its exit code: the runtime waits for the shim."""
    while True:
        try:
            _, status = os.waitpid(init_pid, 0)
            os._exit(exit_code_of(status))
        except ChildProcessError:
            os._exit(EXIT_RUNTIME_ERROR)


# --- in the container's init (and in exec's child), last -----------------------------------


def become(command: tuple[str, ...], env: list[str], sock: socket.socket, *,
           stdin_from_null: bool) -> NoReturn:
    """Replace this process by the command, searching the container's PATH: the last act of
    `run`'s init (container.exec_command) and of `exec`'s child (lifecycle.exec), inside the
    caller's step.

    Without -i or a terminal the command reads /dev/null, as under `docker run`: a shell then
    exits at once instead of waiting for input that never comes. Exit codes as Docker's: 127
    when the command is not found, 126 when it cannot be run.
    Shell: exec env -i KEY=VALUE... COMMAND [</dev/null]      See: execve(2)
    """
    environ = dict(item.split("=", 1) for item in env)
    sys.stdout.flush()
    sys.stderr.flush()
    # Python ignores SIGPIPE and SIGXFSZ (and whoever started minictr may have ignored
    # more), and exec keeps ignored signals: give the command the defaults, as Docker's
    # containers have them (`head | ...` then dies quietly). See execve(2), signal(7).
    for signum in signal.valid_signals():
        if signal.getsignal(signum) == signal.SIG_IGN:
            with contextlib.suppress(OSError, ValueError):  # glibc keeps 32 and 33
                signal.signal(signum, signal.SIG_DFL)
    if stdin_from_null:  # after --step's pause, which reads the runtime's stdin
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    # Every fd but 0, 1 and 2 closes at the exec: minictr's own (the start-up socket,
    # locks) and any its caller left open. An inherited fd on the host's / would be a
    # way out of the container (runc's CVE-2024-21626). See close_range(2).
    libc.close_range_cloexec(3)
    note("every fd above 2 closes at the exec (close_range(2), CLOSE_RANGE_CLOEXEC): the "
         "command starts with stdin, stdout and stderr only")
    # Last word before exec: an end-of-file without it is an init that died (killed,
    # OOM) before the command could start, not a command that started.
    send(sock, {"exec": True})
    try:
        os.execvpe(command[0], command, environ)
    except (FileNotFoundError, NotADirectoryError):
        raise StepError("exec the command",
                        f"{command[0]!r}: executable file not found in $PATH",
                        hint=f"PATH is {environ.get('PATH', '')}",
                        exit_code=EXIT_NOT_FOUND) from None
    except OSError as e:
        raise StepError("exec the command", f"{command[0]!r}: {e.strerror}",
                        errno=e.errno, exit_code=EXIT_NOT_EXECUTABLE) from None
