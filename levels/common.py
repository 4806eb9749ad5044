"""What every level shares and none is about. Read it once, after level 01.

- `say`: each step, on stderr, with the shell command that does the same.
- `parser` and `find_image`: `[--escape] IMAGE [COMMAND...]`; the image's layers, command and
  environment, from minictr's store (as minictr/images/catalog.py `load` reads it).
- `escape`: level 01's way out of a chroot. Every level has it, as --escape, to show where it
  stops working (level 04).
- `execute`, `forked`, `wait_for`: become the command; fork a child that never returns into
  its parent's code; wait for it, and give its exit code as a shell does.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

PROG = Path(sys.argv[0]).stem  # "03_overlay": the start of every message
ROOT = Path(os.environ.get("MINICTR_ROOT", "/var/lib/minictr"))  # minictr's store


def say(what: str, shell: str = "") -> None:
    """Each step, and how a shell would do it (on stderr: stdout is the command's)."""
    print(f"=> {what:<38} $ {shell}" if shell else f"=> {what}", file=sys.stderr, flush=True)


def fail(message: str, code: int = 125) -> NoReturn:
    """One line, then exit: os._exit, so a forked child never runs on in its parent's code."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    os._exit(code)


def parser(doc: str) -> argparse.ArgumentParser:
    """`[--escape] IMAGE [COMMAND...]`, and --help from the level's docstring."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--escape", action="store_true", help="try to walk out of the root first")
    p.add_argument("image", help="an image in minictr's store, e.g. busybox")
    p.add_argument("command", nargs=argparse.REMAINDER, help="default: the image's")
    return p


def find_image(name: str, command: list[str]) -> tuple[list[Path], list[str], dict[str, str]]:
    """The image's layer directories (bottom first), the command (its entrypoint, then
    COMMAND or else its cmd, as Docker has it) and the environment. Exits 125 without root.

    images/NAME.json names the layers by digest, bottom first; each is layers/<hex>/.
    Shell: cat $MINICTR_ROOT/images/NAME.json
    """
    record = ROOT / "images" / f"{name}.json"
    if "/" in name or not record.is_file():
        fail(f"no such image: {name} (in {ROOT}/images); build it with: "
             "sudo minictr image build busybox (or: sudo minictr run busybox true)")
    if os.geteuid() != 0:
        fail(f"this needs root: sudo python3 {sys.argv[0]} ...")
    image = json.loads(record.read_text())
    layers = [ROOT / "layers" / d.removeprefix("sha256:") for d in image["layers"]]
    config = image["config"]
    env = dict(item.split("=", 1) for item in config.get("env", []))
    env.update(HOME="/root", TERM=os.environ.get("TERM", "dumb"))
    return layers, config.get("entrypoint", []) + (command or config["cmd"]), env


def escape() -> None:
    """The classic way out of a chroot, which the chroot(2) man page warns of.

    chroot into a directory below the root, without going into it: the current directory is
    now outside the root, and the kernel stops ".." only at the root itself, so ".." climbs,
    unchecked, to the directory that is its own parent: the "/" of the mount namespace.
    Shell: none (chroot(8) always changes into the new root); any small program can.
    """
    before = os.stat("/")
    below = next(e.name for e in os.scandir("/") if e.is_dir(follow_symlinks=False))
    say("escape: chroot below, climb, chroot", f"chroot {below} (no cd); cd .. (...); chroot .")
    os.chroot(below)
    while not os.path.samefile(".", ".."):
        os.chdir("..")
    os.chroot(".")
    out = not os.path.samestat(before, os.stat("/"))
    say("escaped: / is the host's /" if out else "no way out: .. of / is / itself")


def execute(command: list[str], env: dict[str, str]) -> NoReturn:
    """Become the command, found on env's PATH in the new root.   Shell: exec COMMAND"""
    say("run the command", shlex.join(command))
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:  # as a shell says it: 127 not found, 126 found but not runnable
        fail(f"{command[0]}: {e.strerror}", 127 if e.errno == errno.ENOENT else 126)


def forked(run: Callable[..., NoReturn], *args: object) -> int:
    """fork(2): the child runs run(*args), which execs or exits; the parent gets its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            run(*args)
        except BaseException as e:  # never back into the parent's code: it would run twice
            fail(str(e) or repr(e))
        finally:
            os._exit(125)
    return pid


def wait_for(pid: int) -> int:
    """Wait for the child; return its exit code as a shell does (128 + N: killed by signal N).
    Meanwhile ^C (SIGINT) is for the command only: this process waits, then cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = os.waitpid(pid, 0)[1]
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run_main(main: Callable[[], int]) -> NoReturn:
    """sys.exit(main()); an OSError is one line and exit code 125, as every error here."""
    try:
        sys.exit(main())
    except OSError as e:
        fail(str(e))
