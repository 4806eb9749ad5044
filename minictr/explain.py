"""Steps: every privileged action of minictr happens inside ``with step(...)``.

A step does two things. With ``--explain`` it prints, before the action, what is about to
happen, which process does it (the runtime, the shim or the container's init: see
``acting_as``) and the function that does it, why it is there, and the shell command that
would do the same, so a student can read the run like the tutorial:

    minictr: => mount the overlay  [init: minictr.run.overlay.mount_overlay]
    minictr:      why: the container's root: first of the init's mounts, as /proc, ...
    minictr:      $ cd $LAYERS && mount -t overlay -o nodev,lowerdir=...,upperdir=... merged

And it turns an ``OSError`` from the kernel into the one error type, ``StepError``, naming
the step, the errno and, where we know one, a hint that says what to do.

With ``--step`` each step also waits for Enter, and its pause is numbered, ``[7]``, one count
for the whole run across its three processes (see ``_Counter``). There is no ``[7/28]``, as
the demo has: the demo's steps are one fixed list, but how many steps a run takes is known
only as it goes: on the host (is the image built yet, is there a bridge already, which of the
paths to mask does this kernel have, cgroup v1 or v2), on the flags (--userns, --network,
-t, --rm), and on what fails (a failed step is followed by the undoing ones). A total computed
from a plan would be a second copy of all those decisions, and wrong when one of them drifts.

For the tests, a step can be made to fail on purpose, as if the kernel had refused it: with
``MINICTR_FAIL_AT=minictr.run.rootfs.pivot_into`` (the name --explain shows in brackets, after
the process) that step raises EIO as it begins; with ``...:kill`` the runtime is SIGKILLed
there instead; with ``...:stop`` the process stops itself there (SIGSTOP) until a race test
continues it. So the suite can fail every step of a start in turn and check that nothing is
left behind.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import sys
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TextIO

from minictr.errors import StepError

_explain_to: TextIO | None = None
_pause = False  # --step: wait for Enter before each step
_acting_as = "runtime"  # which of minictr's processes this is: runtime, shim or init
_enter_fd = 0  # where --step reads Enter from: the user's stdin
_short_names: dict[str, str] = {}  # long path -> "$NAME", so the shell lines stay readable
_fail_at, _, _fail_how = os.environ.get("MINICTR_FAIL_AT", "").partition(":")
# ":kill" kills the runtime, from whichever of its processes reaches the step: this pidfd,
# opened in the runtime, is inherited by the shim and the init (they fork from it), and a
# pidfd reaches the runtime across PID namespaces. See pidfd_open(2), pidfd_send_signal(2).
_runtime_pidfd = os.pidfd_open(os.getpid()) if _fail_how == "kill" else -1


class _Counter:
    """The number of the last pause, shared by the runtime, the shim and the init.

    They are forks of one another, and each pauses at its own steps, so a count in a plain
    global would start again from the runtime's in the shim, and the runtime's steps after
    the exit would not know how many the init took. So the count lives in eight bytes of
    memory mapped shared and anonymous, made here before the first fork: each fork maps the
    same page, and what one writes the others read (mmap(2) MAP_SHARED|MAP_ANONYMOUS; gone at
    the command's exec, which keeps nothing of the init's memory).
    No lock: the three never take steps at once. The shim takes its steps while the runtime
    waits for its message with the init's pid (the runtime takes none from the fork to that
    message); the init takes its first step after "ready", the runtime's last step before the
    exit (Child.say_ready), and the shim has none left by then.
    """

    def __init__(self) -> None:
        self.page = mmap.mmap(-1, 8)  # MAP_SHARED is the default; zero-filled

    def next(self) -> int:
        (number,) = struct.unpack_from("Q", self.page)
        struct.pack_into("Q", self.page, 0, number + 1)
        return number + 1


_pauses: _Counter | None = None


def explain_to(stream: TextIO | None, *, pause: bool = False) -> None:
    """Print every step to ``stream`` from now on (``None``: stay quiet); with ``pause``
    (--step), wait for Enter on stdin before each one, and number the pauses.

    The setting is a module global on purpose: the container's init is a fork of the
    runtime, so it inherits it and explains (and pauses at) its own steps the same way.
    Call it before the first fork: the count of the pauses is made here, to be shared.
    """
    global _explain_to, _pause, _pauses
    _explain_to = stream
    _pause = pause and stream is not None
    _pauses = _Counter() if _pause else None


def acting_as(process: str) -> None:
    """From now on, this process is ``process`` ("shim", "init"; a process that never says is
    the runtime), and each step says so: ``=> ...  [init: minictr.run.rootfs.pivot_into]``.
    A module global, as the others here: set in each fork as it starts, it holds for every
    step that fork takes. Call it first in the shim and in the init."""
    global _acting_as
    _acting_as = process


def keep_the_users_terminal() -> None:
    """Go on explaining to, and reading Enter from, the user's stderr and stdin after the
    container's init replaces its own (with a new pty): duplicates of them, close-on-exec."""
    global _explain_to, _enter_fd
    if _explain_to is not None:
        _explain_to = os.fdopen(os.dup(_explain_to.fileno()), "w", buffering=1)
        _enter_fd = os.dup(0)


def _say(text: str, end: str = "\n") -> bool:
    """Write to the explain stream. If it is gone (a closed pipe: `... 2>&1 | head`), stop
    explaining instead of failing: a step, and above all an undo, must never die of its own
    commentary. Returns whether it was written."""
    global _explain_to, _pause
    if _explain_to is None:
        return False
    try:
        _explain_to.write(text + end)
        _explain_to.flush()
        return True
    except (OSError, ValueError):  # EPIPE, EBADF; ValueError: the file object was closed
        _explain_to, _pause = None, False
        return False


def wait_for_enter(number: int) -> None:
    """Say that pause ``number`` waits, and read one line from fd 0, a byte at a time: the
    runtime, the shim and init all share stdin, and a buffered read would swallow lines meant
    for a later step or the command. At end-of-file, go on without waiting (so
    `--step </dev/null` runs straight through)."""
    if not _say(f"minictr:    [{number}] press Enter to run it ", end=""):
        return
    while (byte := os.read(_enter_fd, 1)) not in (b"\n", b""):
        pass
    if not byte:
        _say("(end of input)")
    elif not os.isatty(_enter_fd):
        _say("")  # a terminal echoed the Enter; a pipe did not


def define(name: str, value: object) -> None:
    """Print ``NAME=value`` once; later shell lines say ``$NAME`` instead of the long path."""
    _short_names[str(value)] = f"${name}"
    _say(f"minictr:      $ {name}={value}")


def _shorten(text: str) -> str:
    for long, short in sorted(_short_names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(long, short)
    return text


def note(text: str) -> None:
    """One more line of explanation under the current step (only with --explain)."""
    _say(f"minictr:      {text}")


class step:  # lower case: it reads like a function, `with step(...):`
    """``with step("mount the overlay", "mount -t overlay ...", {errno.ENODEV: "..."},
    why="the container's root: ..."):``

    ``why``: one line, why this step is there, or why in this place of the order.
    """

    def __init__(self, name: str, shell: str = "", hints: Mapping[int, str] | None = None,
                 *, why: str = "") -> None:
        self.name = name
        self.shell = shell
        self.hints = hints or {}
        self.why = why
        caller = sys._getframe(1)  # the function whose step this is, for "[module.function]"
        code = caller.f_code  # co_qualname (3.11+) names methods as Class.method
        function = getattr(code, "co_qualname", code.co_name)
        self.where = f"{caller.f_globals.get('__name__', '?')}.{function}"

    def __enter__(self) -> step:
        if _fail_at == self.where:
            fail_on_purpose(self.name)
        if _explain_to is not None:
            # One write for the whole step: the runtime's notes, printed while the container's
            # init explains its steps, then fall between two steps, never inside one.
            lines = [f"minictr: => {self.name}  [{_acting_as}: {self.where}]"]
            if self.why:
                lines.append(f"minictr:      why: {self.why}")
            lines += [f"minictr:      $ {line}" for line in _shorten(self.shell).splitlines()]
            if _say("\n".join(lines)) and _pause and _pauses is not None:
                wait_for_enter(_pauses.next())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(err, OSError):
            raise StepError.from_os_error(self.name, err, self.hints.get(err.errno or 0)) from err


def fail_on_purpose(name: str) -> None:
    """MINICTR_FAIL_AT: this step fails here (EIO), or the runtime is SIGKILLed (":kill"),
    or this process stops until it gets SIGCONT (":stop", in the runtime's steps).
    The container's init cannot signal the runtime (a pidfd signals only into the caller's
    own PID namespace and below: EINVAL; in --userns, EPERM too): it dies itself, as in a
    crash."""
    import signal

    if _fail_how == "stop":  # a race test resumes it: kill -CONT PID. Once only.
        global _fail_at
        _fail_at = ""
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    if _fail_how == "kill":
        import contextlib

        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(_runtime_pidfd, signal.SIGKILL)
        os._exit(128 + signal.SIGKILL)  # PID 1 of a namespace ignores its own SIGKILL
    raise StepError(name, "failed on purpose (MINICTR_FAIL_AT)", errno=errno.EIO)


class progress:  # lower case: it is used like a function, `with progress(...) as update:`
    """A one-line progress report on stderr for long work, only when stderr is a terminal
    (a pipe or a log gets nothing): ``update(done)`` with bytes done so far, out of ``total``.
    """

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = max(total, 1)
        self.shown = sys.stderr.isatty()

    def __enter__(self) -> Callable[[int], None]:
        return self.update

    def update(self, done: int) -> None:
        if self.shown:
            mib = 1024 * 1024
            print(f"\r\x1b[K{self.what}: {done / mib:.1f} of {self.total / mib:.1f} MiB "
                  f"({100 * done // self.total}%)", end="", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.shown:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)
