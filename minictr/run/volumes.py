"""Volumes: host paths bound into the container (-v), tmpfs mounts (--tmpfs), a read-only root.

A bind mount makes a directory (or file) of the host appear at a second place: here, under the
container's merged/. The container then writes to the host's own files, on the host's own
filesystem. Those writes never pass through the overlay, so they are not in the upper, and
the change report does not list them: it says which paths were volumes instead.

    -v /srv/data:/data       mount --bind /srv/data $C/merged/data
    -v /srv/data:/data:ro    ... && mount -o remount,bind,ro $C/merged/data   (mount(2): a bind
                             mount takes its source's flags; MS_RDONLY needs a second call)
    --tmpfs /tmp             mount -t tmpfs -o nosuid,nodev,noexec,mode=1777 tmpfs $C/merged/tmp
    --read-only              mount -o remount,bind,ro,nodev $C/merged  (the overlay's own
                             mount only: /dev, /proc, the volumes and the tmpfs mounts are
                             mounts of their own, and keep their flags)

All of them are made by the container's init, in its own mount namespace, before pivot_root
(container.init_container says where): the host path can be reached only then. Every mount is
private, as everything is after make_mounts_private, so nothing mounted in the container
appears on the host, nor the other way (mount_namespaces(7), "Shared subtrees").

The container path is the image's to decide, and an image is hostile input: /data may be a
symlink to /etc, or to ../../.., and mount(2) would follow it on the host's side of
pivot_root. So CPATH is opened one component at a time from merged/, each with O_NOFOLLOW, and
a symlink at any component is refused (runc's securejoin would follow it inside the root;
refusing is simpler to read and no image needs it). A missing component is made, as Docker
makes it: that mkdir lands in the upper, as an empty directory the report shows. The mount
is then made on /proc/self/fd/N, the very directory that was checked: a path is never looked
up a second time. Nothing of the container runs yet, so nothing can swap it meanwhile.

See: mount(2) "Creating a bind mount", "Remounting an existing mount"; mount_namespaces(7);
     openat(2) O_NOFOLLOW, O_PATH; tmpfs(5)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from minictr import libc
from minictr.errors import StepError
from minictr.explain import note, step
from minictr.run.mounts import Mount, quoted, shell
from minictr.spec import Volume

# Where minictr mounts kernel filesystems of its own: a volume there would hide them, or undo
# a mask or a read-only path (a volume over /proc/sys). Refused, as runc refuses most of /proc.
RESERVED = ("/proc", "/sys", "/dev")
# Docker's --tmpfs defaults: nosuid, nodev, noexec, mode 1777, no size (the kernel's: half of
# RAM, counted against the container's memory limit as it is written). See tmpfs(5).
TMPFS_FLAGS = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
TMPFS_DATA = "mode=1777"
# Flags a remount must keep: clearing one on a mount made in a more privileged namespace
# fails with EPERM (mount_namespaces(7), "locked" mounts). statvfs(3) ST_* have these values.
_KEPT = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


# --- on the host: the words of -v and --tmpfs ---------------------------------------------


def parse_volume(text: str) -> Volume:
    """-v HOSTPATH:CPATH[:ro|:rw], checked before anything is made. Both paths absolute, with
    no `..`, `:` or `,` (a `,` would end mount(8)'s options; a `:` the field), nor a control
    character (each is printed in the report and --explain); the host path must exist."""
    fields = text.split(":")
    if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] not in ("ro", "rw")):
        raise StepError("check input", f"invalid volume {_shown(text)}",
                        hint="use -v HOSTPATH:CPATH or -v HOSTPATH:CPATH:ro (a ':' in a path "
                        "is not supported)")
    host = check_path(fields[0], "volume's host path")
    container = check_container_path(fields[1], "volume")
    try:
        os.stat(host)
    except OSError as e:
        raise StepError("check input", f"volume's host path {_shown(host)}: {e.strerror}",
                        errno=e.errno, hint="make it first: minictr binds what exists, and "
                        "never makes a host path") from None
    return Volume(host, container, read_only=fields[2:] == ["ro"])


def parse_tmpfs(text: str) -> str:
    """--tmpfs CPATH (Docker's CPATH:OPTIONS is not supported: a ':' is refused)."""
    if ":" in text:
        raise StepError("check input", f"--tmpfs {_shown(text)}: options are not supported",
                        hint="use --tmpfs CPATH: nosuid,nodev,noexec,mode=1777, as Docker's")
    return check_container_path(text, "--tmpfs")


def check_path(path: str, what: str) -> str:
    """An absolute path without `..`, `,` or `:`, nor control characters; normalised."""
    if not path.startswith("/"):
        raise StepError("check input", f"{what} {_shown(path)} is relative",
                        hint="give an absolute path, such as $PWD/data")
    if ".." in path.split("/"):
        raise StepError("check input", f"{what} {_shown(path)} has a '..' component",
                        hint="give the path without '..' (realpath PATH)")
    if "," in path or ":" in path:
        raise StepError("check input", f"{what} {_shown(path)} holds a ',' or ':'",
                        hint="mount(8) and -v use them as separators: rename, or bind a "
                        "parent directory")
    if not path.isprintable():
        raise StepError("check input", f"{what} {_shown(path)} holds a control character",
                        hint="rename it: it would be printed to the terminal as it is")
    return os.path.normpath(path).replace("//", "/")  # normpath keeps a leading //


def check_container_path(path: str, what: str) -> str:
    """check_path, and not / nor under /proc, /sys or /dev (minictr's own mounts)."""
    path = check_path(path, f"{what} path")
    if path == "/":
        raise StepError("check input", f"{what} path '/': the container's root is the overlay",
                        hint="bind onto a directory below it; --read-only makes / read-only")
    if any(path == r or path.startswith(r + "/") for r in RESERVED):
        raise StepError("check input", f"{what} path {path!r} is under /proc, /sys or /dev",
                        hint="minictr mounts the kernel's filesystems there (and masks parts "
                        "of them): choose another path")
    return path


def check_distinct(volumes: Sequence[Volume], tmpfs: Sequence[str]) -> None:
    """Two mounts on one container path: the second would hide the first (Docker refuses)."""
    paths = [v.container for v in volumes] + list(tmpfs)
    for path in paths:
        if paths.count(path) > 1:
            raise StepError("check input", f"two volumes or tmpfs mounts on {path!r}",
                            hint="give each container path once")


def _shown(text: str) -> str:
    return repr(text[:200])


# --- in the container's init, before pivot_root -----------------------------------------------


def open_beneath(merged: Path, path: str, *, kind: str) -> tuple[int, int, str]:
    """Open ``path`` (absolute, as the container sees it) under ``merged``, one component at
    a time, never following a symlink; make what is missing (a directory, or for the last
    component with ``kind="file"`` an empty file), as Docker makes a volume's target.
    Returns (its parent's fd, the fd of the entry itself, O_PATH, and its name): the caller
    mounts on /proc/self/fd/N and closes both.
    Shell: mkdir -p merged/PATH, but refusing a symlink anywhere   See: openat(2) O_NOFOLLOW
    """
    names = path.strip("/").split("/")
    parent = os.open(merged, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            fd = _open_or_make(parent, name, kind if last else "dir",
                               "/" + "/".join(names[: i + 1]))
            if last:
                return parent, fd, name
            os.close(parent)
            parent = fd
    except BaseException:
        os.close(parent)
        raise
    raise AssertionError("unreachable: a path has a last component")


def _open_or_make(parent: int, name: str, kind: str, shown: str) -> int:
    """The entry ``name`` of the directory ``parent``, as an O_PATH fd of the entry itself
    (O_NOFOLLOW: a symlink is opened as the symlink, not what it points to); made if missing."""
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except FileNotFoundError:
        if kind == "dir":
            os.mkdir(name, 0o755, dir_fd=parent)
        else:  # O_EXCL: never through a symlink, never an existing file
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=parent))
        fd = os.open(name, flags, dir_fd=parent)
    mode = os.fstat(fd).st_mode
    problem = None
    if stat.S_ISLNK(mode):
        from minictr.show.report import escaped  # only here: the image's link, shown safely

        problem = (f"is a symlink in the image (to {escaped(os.readlink(name, dir_fd=parent))}): "
                   "refused, as mount(2) would follow it on the host's side of pivot_root")
    elif kind == "dir" and not stat.S_ISDIR(mode):
        problem = "is not a directory in the image"
    elif kind == "file" and stat.S_ISDIR(mode):
        problem = "is a directory in the image, and the host path a file"
    if problem:
        os.close(fd)
        raise StepError("mount a volume", f"{shown} {problem}",
                        hint="remove or rename it in the image, or choose another container path")
    return fd


def _fd_path(fd: int) -> str:
    """The magic link that names the open file ``fd``: mount(2) follows it to that very
    directory, whatever its path now is (the host's /proc, before pivot_root). See proc(5)."""
    return f"/proc/self/fd/{fd}"


def bind_volumes(merged: Path, volumes: Iterable[Volume]) -> None:
    """Bind each host path onto its container path (made if missing, in upper); :ro with a
    remount of that bind, keeping the nosuid, nodev, noexec it has from its source mount.
    Not recursive (--bind, not --rbind): mounts below the host path are not carried in, so
    that :ro is read-only for all of it, and no host /proc or /dev rides in with a -v /:/host.
    Shell: mkdir -p merged/CPATH && mount --bind HOSTPATH merged/CPATH
           [&& mount -o remount,bind,ro HOSTPATH merged/CPATH]
    """
    for v in volumes:
        target = f"{merged}{v.container}"
        try:  # as the init: with --userns, an unprivileged uid of the host
            kind = "dir" if stat.S_ISDIR(os.stat(v.host).st_mode) else "file"
            kept = os.statvfs(v.host).f_flag & _KEPT
        except OSError as e:
            raise StepError("mount a volume", f"{v.host}: {e.strerror}", errno=e.errno,
                            hint="with --userns, root in the container is an unprivileged "
                            "uid of the host: it must be able to reach the host path") from None
        bind = Mount(v.host, target, None, libc.MS_BIND)
        ro = Mount(target, target, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | kept)
        make = f"mkdir -p {quoted(target)}" if kind == "dir" else f"touch {quoted(target)}"
        with step(f"bind the volume {v}", " && ".join(
                [make, shell(bind)] + ([shell(ro)] if v.read_only else [])),
                why="before pivot_root, while the host path can be reached; after the "
                "overlay, /proc and /etc's files, so that it is on top; its writes go to the "
                "host, never to the upper"):
            _mount_beneath(merged, v.container, kind, bind, ro if v.read_only else None)
    # (the report's volumes line says where their writes went: show.report.volumes_line)


def mount_tmpfs(merged: Path, paths: Iterable[str]) -> None:
    """A fresh tmpfs on each path (made if missing, in upper): memory, gone at the exit.
    Shell: mkdir -p merged/CPATH && mount -t tmpfs -o nosuid,nodev,noexec,mode=1777 tmpfs ...
    """
    for path in paths:
        target = f"{merged}{path}"
        m = Mount("tmpfs", target, "tmpfs", TMPFS_FLAGS, TMPFS_DATA)
        with step(f"mount a tmpfs on {path}", f"mkdir -p {quoted(target)} && {shell(m)}",
                  why="Docker's --tmpfs: writable even with --read-only, in memory, never in "
                  "the upper; before pivot_root, as every mount of the container"):
            _mount_beneath(merged, path, "dir", m, None)


def _mount_beneath(merged: Path, path: str, kind: str, m: Mount, remount: Mount | None) -> None:
    """``m`` onto the entry ``path`` opened by open_beneath; then ``remount`` on the new mount,
    opened again by name from its parent (the old fd is the directory under the mount)."""
    parent, fd, name = open_beneath(merged, path, kind=kind)
    try:
        libc.mount(*m._replace(target=_fd_path(fd)))  # m's target is the checked entry
        if remount is not None:
            top = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                libc.mount(*remount._replace(source=_fd_path(top), target=_fd_path(top)))
            finally:
                os.close(top)
    finally:
        os.close(fd)
        os.close(parent)


def make_root_read_only(merged: Path) -> None:
    """--read-only: the overlay's mount, remounted read-only. Only that mount: /dev, /dev/shm,
    /proc, the volumes and the tmpfs mounts are mounts of their own and keep their flags. The
    upper still exists; nothing can be written to it through this mount.
    Shell: mount -o remount,bind,ro,nodev merged      See: mount(2) MS_REMOUNT|MS_BIND
    """
    kept = os.statvfs(merged).f_flag & _KEPT  # nodev, as the overlay was mounted
    m = Mount(str(merged), str(merged), None,
              libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | kept)
    with step("make the root read-only (--read-only)", shell(m),
              why="after every mount point under it was made (each mkdir writes to the "
              "upper), before pivot_root; the mounts on top of it stay writable"):
        libc.mount(*m)
    note("writes to / now fail with EROFS; --tmpfs paths, volumes and /dev/shm still work")
