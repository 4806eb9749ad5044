"""The state directory: ``$MINICTR_ROOT`` (default ``/var/lib/minictr``).

    layers/<hex>/                  one image layer, stored once by digest (an overlay lowerdir)
    images/<name>.json             an image: its layers, default command, environment
    containers/<id>/upper/         overlay upperdir: what the container wrote
    containers/<id>/work/          overlay workdir
    containers/<id>/merged/        the mount point of the overlay (mounted only inside)
    containers/<id>/state.json     what `ps` and `inspect` show
    containers/<id>/lock           flock-ed by the runtime while the container runs
    containers/.new-<id>/          a container being made: renamed to its id once locked
    starting.lock                  held by a start from its mkdir to its flock (see prune)
    names/<name> -> ../containers/<id>   claims a name; symlink(2) is atomic, so two runs
                                         can never get the same name
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minictr.errors import StepError
from minictr.fs.remove import remove_tree
from minictr.spec import ContainerDirs

DEFAULT_ROOT = "/var/lib/minictr"

# Names become directory names, hostnames and parts of overlay's mount options, where "," and
# ":" are separators: allowing only these characters keeps paths and options unambiguous.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_name(name: str, what: str = "name") -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise StepError(
            "check input",
            f"invalid {what} {name!r}",
            hint="use letters, digits, '_', '.' or '-', starting with a letter or digit, "
            "at most 63 characters",
        )
    return name


def default_name(image: str) -> str:
    """The start of a container's default name: the image's name, or for a pulled image
    (localhost:5000/team/app:1) the repository's last word and its tag, app-1: a valid
    container name and hostname either way."""
    if NAME_PATTERN.fullmatch(image):
        return image
    last = image.rsplit("/", 1)[-1].split("@")[0].replace(":", "-")
    return re.sub(r"[^A-Za-z0-9.-]", "-", last)[:50].strip(".-") or "image"


def require_root() -> None:
    if os.geteuid() != 0:
        args = " ".join(sys.argv[1:])
        raise StepError("check privileges", "minictr must run as root",
                        hint=f"try sudo minictr {args}".rstrip())


class Store:
    """The directories under MINICTR_ROOT, and the rules for names and state files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.layers = root / "layers"
        self.containers = root / "containers"
        self.names = root / "names"

    @classmethod
    def open(cls) -> Store:
        """The store named by $MINICTR_ROOT, created (mode 0700) if it is not there yet."""
        require_root()
        root = Path(os.environ.get("MINICTR_ROOT") or DEFAULT_ROOT)
        if not root.is_absolute() or any(c in str(root) for c in ",:\\"):
            raise StepError("open state directory", f"MINICTR_ROOT={root} is unusable",
                            hint="use an absolute path without ',', ':' or '\\' (overlay's "
                            "separators and its escape)")
        store = cls(root)
        try:
            for d in (store.images, store.layers, store.containers, store.names):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StepError.from_os_error("open state directory", e) from e
        return store

    # --- containers ---------------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return os.urandom(32).hex()  # 64 hex digits, shown as 12, as Docker does

    def new_container(self, cid: str, name: str | None, image: str) -> tuple[ContainerDirs, int]:
        """Make containers/<id>/{upper,work,merged}, lock it, and claim the name.

        Returns the directories and the fd that holds the run lock. The directory is made
        as containers/.new-<id>, locked, and only then renamed to its id: no `prune` ever
        sees containers/<id> without its live owner. Between the mkdir and the flock the
        start holds starting.lock shared; a prune that finds a .new-* unlocked takes it
        exclusively before it calls the start dead (see Store.abandoned). The lock is taken
        before the name is, for `ps` and `rm` too.
        Shell: flock -s starting.lock sh -c 'mkdir containers/.new-ID
                                             flock -n containers/.new-ID/lock ...'
               mkdir containers/.new-ID/{upper,work,merged}; mv containers/.new-ID containers/ID
        """
        name = name or f"{default_name(image)}-{cid[:6]}"
        if (self.names / name).is_symlink():
            raise StepError("create container", f"the name {name!r} is already in use",
                            hint=f"remove it (minictr rm {name}) or choose another --name")
        dirs = ContainerDirs(cid, name, self.containers / cid)
        new = self.containers / f".new-{cid}"
        with self._starting(fcntl.LOCK_SH):
            new.mkdir(mode=0o700)
            try:
                lock = hold_lock(new / dirs.lock_file.name)
            except OSError:
                remove_tree(new)
                raise
        try:
            for d in (dirs.upper, dirs.work, dirs.merged):
                (new / d.name).mkdir(mode=0o755)
            os.rename(new, dirs.path)
        except OSError:  # a full disk: no containers/<id>/ is left
            remove_tree(new, last=dirs.lock_file.name)
            os.close(lock)
            raise
        try:
            os.symlink(f"../containers/{cid}", self.names / name)
        except FileExistsError:  # another run took the name a moment ago
            remove_tree(dirs.path, last=dirs.lock_file.name)
            os.close(lock)
            raise StepError("create container", f"the name {name!r} is already in use",
                            hint="choose another --name") from None
        return dirs, lock

    def abandoned(self, path: Path) -> bool:
        """For prune: is this unlocked containers/.new-<id> what a killed start left? A live
        start holds starting.lock (shared) from its mkdir to its flock: once prune holds it
        exclusively, no start is in that gap, and an unlocked .new-* is a dead one's.
        Shell: flock starting.lock sh -c '[ -d PATH ] && ! flock -n PATH/lock true'"""
        with self._starting(fcntl.LOCK_EX):
            return path.is_dir() and not is_locked(path / "lock")

    @contextlib.contextmanager
    def _starting(self, how: int) -> Iterator[None]:
        fd = os.open(self.root / "starting.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, how)  # held for a mkdir and an flock: microseconds
            yield
        finally:
            os.close(fd)

    def remove_container(self, dirs: ContainerDirs) -> None:
        """Free the name, then delete the directory (work/work is mode 000: root may): first
        unmounting what is mounted in it, never crossing into a mount (minictr.fs.remove).
        Its lock file goes last: while it is there, a runtime that removes its own container
        (--rm) is still seen holding it, and a concurrent prune leaves it alone.
        Shell: rm names/NAME; then minictr.fs.remove.shell_line(containers/ID)
        """
        link = self.names / dirs.name
        if link.is_symlink() and os.readlink(link).endswith(dirs.id):
            link.unlink()
        remove_tree(dirs.path, last=dirs.lock_file.name)

    def find(self, name_or_id: str) -> ContainerDirs:
        """A container by name, by full id, or by a unique id prefix (as Docker allows)."""
        # A full id is 64 hex digits, one more than a name may have: it is not a name.
        is_id = re.fullmatch(r"[0-9a-f]{1,64}", name_or_id) is not None
        if NAME_PATTERN.fullmatch(name_or_id) or is_id:
            link = self.names / name_or_id
            if NAME_PATTERN.fullmatch(name_or_id) and link.is_symlink():
                target = self.containers / os.readlink(link).rsplit("/", 1)[-1]
                return self.dirs_at(target, name_or_id)
            if is_id:
                matches = [p for p in self.containers.iterdir() if p.name.startswith(name_or_id)]
                if len(matches) == 1:
                    return self.dirs_at(matches[0])
        raise StepError("find container", f"no such container: {name_or_id}",
                        hint="list them with: minictr ps -a")

    def all_containers(self) -> Iterator[ContainerDirs]:
        for path in sorted(self.containers.iterdir()):
            if (path / "state.json").exists():
                yield self.dirs_at(path)

    def dirs_at(self, path: Path, name: str = "") -> ContainerDirs:
        """A container's directories and name. The name is the state's, or, when the state
        is unreadable (damaged, a disk that filled), the one names/ links to it: so `rm`
        still frees it."""
        state = read_state(ContainerDirs(path.name, "", path))
        name = name or str(state.get("name", "")) or self._name_linking_to(path.name)
        return ContainerDirs(path.name, name, path)

    def _name_linking_to(self, cid: str) -> str:
        for link in self.names.iterdir():
            if link.is_symlink() and os.readlink(link).rsplit("/", 1)[-1] == cid:
                return link.name
        return ""


# --- state files and the run lock ----------------------------------------------------------


def read_state(dirs: ContainerDirs) -> dict[str, Any]:
    try:
        return json.loads(dirs.state_file.read_text())
    except (OSError, ValueError):
        return {}


# What this process last wrote to each state file. Only the runtime that holds a container's
# lock writes its state while it runs, so a `run` need not read back what it wrote itself.
_written: dict[Path, dict[str, Any]] = {}


def write_state(dirs: ContainerDirs, **changes: Any) -> dict[str, Any]:
    """Update state.json atomically: write a new file, then rename(2) it over the old one.
    A failure (a full disk) is one line, and the old state stays whole."""
    state = (_written.get(dirs.state_file) or read_state(dirs)) | changes
    tmp = dirs.state_file.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, dirs.state_file)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StepError.from_os_error("write the container's state", e,
                                      hint="is the disk of MINICTR_ROOT full? (df -h)") from e
    _written[dirs.state_file] = state
    return state


def hold_lock(lock_file: Path) -> int:
    """flock(2) ``lock_file`` for as long as this process (and its forks) live.

    The kernel drops the lock when its holders exit, however they exit (even SIGKILL), so
    "is the lock held?" is the truth about "is it running?": no pid that could be reused.
    The fd is close-on-exec, so the container's command never holds it.
    Shell: flock -n LOCKFILE COMMAND            See: flock(2)
    """
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def is_locked(lock_file: Path) -> bool:
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)


def status(dirs: ContainerDirs, state: dict[str, Any]) -> str:
    """created / running / exited, or dead: state says running but no runtime holds the lock
    (the runtime was killed; `minictr prune` removes it)."""
    if is_locked(dirs.lock_file):
        return "running"
    recorded = str(state.get("status", "created"))
    return "dead" if recorded in ("running", "created") else recorded
