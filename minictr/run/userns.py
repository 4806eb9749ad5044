"""--userns: root in the container is an unprivileged range of host ids.

    in the container   uid 0      1          ...  65535
                         │        │                 │      uid_map and gid_map: "0 100000 65536"
    on the host        100000   100001       ...  165535

Without it, uid 0 in a container *is* the host's uid 0, held in only by the capabilities,
masks and namespaces of minictr.run.security. With it, root in the container is root only over
what its user namespace owns (its mount, UTS, IPC, PID, network and cgroup namespaces, all
made after it); to the rest of the host it is uid 100000, which owns nothing.

Two problems, and what solves them:
- The image's layers, and the container's upper, are owned by host uid 0, which the user
  namespace does not map: inside they would show as nobody (65534), and overlay refuses to
  copy up a file whose owner is not mapped (EOVERFLOW). So both are *idmapped mounts*
  (Linux 5.12; overlay on them: 5.19): through them, a file owned by uid N on disk shows as
  owned by 100000+N, which is N inside. On disk nothing changes: what the container writes
  is stored with the same owners as without --userns, so diff, the report and commit read it
  as usual.
- overlay keeps its opaque-directory marks in trusted.* xattrs, which only the host's root
  may write. Mounted in a user namespace, it is told `userxattr` and writes
  user.overlay.opaque instead (diff reads both). It then refuses to follow redirects:
  `redirect_dir=nofollow`.

The run in this mode (each is a step, shown by --explain):

    runtime  check_host        user namespaces allowed, Linux >= 5.19
             create            a user namespace, held by a short-lived helper; the runtime
                               writes its uid_map and gid_map (as newuidmap(1) would)
             idmapped_mounts   open_tree(2) + mount_setattr(2): $C and each layer, idmapped
                               with it, private, the layers read-only, detached (not yet
                               mounted anywhere)
    shim     enter             setns(2) into it, become its root; then unshare the others,
                               which so belong to it
    init     attach            move_mount(2) the idmapped $C onto $C, each layer on $C/lowers/N
             (then as without --userns, through the idmapped $C: overlay with userxattr, ...)
             forget            close every fd of the host's mounts before exec

Making the user namespace first, with a helper, is what util-linux's mount does for
X-mount.idmap: the layers must be idmapped by a process that is still root on the host,
with a user namespace that already has its maps. The shim then joins it (setns) instead of
making its own (unshare): the same namespace, one handshake fewer.

Not done (say so):
- minictr without sudo. That needs newuidmap(1) for the maps, a store the user owns, and
  fuse-overlayfs or copied layers, as rootless podman has: idmapping a mount needs root on
  the host (CAP_SYS_ADMIN over the layers' filesystem).
- Images whose upper layers make a directory opaque: their mark is trusted.overlay.opaque,
  which overlay ignores with userxattr. check_layers refuses them rather than show them wrong.
See: user_namespaces(7), mount_setattr(2), Documentation/filesystems/overlayfs.rst.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from minictr import explain, libc
from minictr.errors import StepError
from minictr.explain import note, step
from minictr.spec import ContainerDirs, IdMap, Image

MAX_ID = 2**32 - 2  # (uid_t)-1 is "no id"
MIN_KERNEL = (5, 19)  # overlay on idmapped layers
ENABLE_USERNS = "sudo sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/ to keep it)"
APPARMOR_FIX = ("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor "
                "profile for minictr with the rule `userns,`)")


def parse(value: str) -> IdMap:
    """--userns HOSTID[:COUNT]: 100000:65536 as a line of /etc/subuid has it, or one id."""
    m = re.fullmatch(r"(\d+)(?::(\d+))?", value.strip())
    host, size = (int(m[1]), int(m[2] or 1)) if m else (0, 0)
    if not m or host == 0 or size < 1 or host + size - 1 > MAX_ID:
        raise StepError("check input", f"invalid --userns {value!r}",
                        hint="give the host ids that root and the others inside become: "
                        "HOSTID:COUNT as in /etc/subuid (100000:65536), or one HOSTID "
                        "(only root exists inside); host id 0 is root itself")
    return IdMap(host, size)


def check_free(idmap: IdMap, accounts: dict[int, str] | None = None) -> None:
    """Refuse a range that holds the ids of this host's own users or groups: root in the
    container would be, say, daemon (1), and uid 999 inside the host's first user (1000),
    owning what they own on the host. /etc/subuid ranges (100000:65536) hold none.
    ``accounts``: id -> name, by default from the host's passwd and group databases.
    Shell: getent passwd; getent group"""
    if accounts is None:
        import grp
        import pwd

        accounts = {g.gr_gid: f"group {g.gr_name}" for g in grp.getgrall()}
        accounts |= {p.pw_uid: f"user {p.pw_name}" for p in pwd.getpwall()}
    last = idmap.host + idmap.size - 1
    taken = sorted(i for i in accounts if idmap.host <= i <= last)
    if taken:
        shown = ", ".join(f"{accounts[i]} ({i})" for i in taken[:3])
        raise StepError("check input", f"--userns {idmap.host}:{idmap.size} holds ids of this "
                        f"host's accounts: {shown}" + (", ..." if len(taken) > 3 else ""),
                        hint="give a range no account uses, as /etc/subuid has them: "
                        "100000:65536")


# --- on the host --------------------------------------------------------------------------


def why_forbidden(sysctl: Callable[[str], str | None], euid: int) -> tuple[str, str] | None:
    """(what, fix) when this host forbids the user namespaces minictr needs, else None.

    ``sysctl("user/max_user_namespaces")`` reads /proc/sys/...; None when it is not there.
    Root is never stopped by the two restrictions on *unprivileged* user namespaces (Debian's
    old kernel.unprivileged_userns_clone; AppArmor's on Ubuntu >= 23.10 and 24.04, which
    applies to processes without CAP_SYS_ADMIN): they matter only to minictr without sudo.
    """
    if sysctl("user/max_user_namespaces") == "0":
        return "user namespaces are disabled on this host (user.max_user_namespaces = 0)", \
            ENABLE_USERNS
    if euid != 0 and sysctl("kernel/unprivileged_userns_clone") == "0":
        return ("unprivileged user namespaces are disabled "
                "(kernel.unprivileged_userns_clone = 0)",
                "sudo sysctl -w kernel.unprivileged_userns_clone=1, or run minictr with sudo")
    if euid != 0 and sysctl("kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns = 1)",
                f"run minictr with sudo, or {APPARMOR_FIX}")
    return None


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def check_host() -> None:
    """Refuse, before anything is made, on a host where --userns cannot work.
    Shell: sysctl user.max_user_namespaces kernel.apparmor_restrict_unprivileged_userns; uname -r
    """
    if forbidden := why_forbidden(_sysctl, os.geteuid()):
        what, fix = forbidden
        raise StepError("check the host for --userns", what, hint=fix)
    release = os.uname().release
    version = tuple(int(n) for n in re.findall(r"\d+", release)[:2])
    if version < MIN_KERNEL:
        raise StepError("check the host for --userns",
                        f"Linux {release} cannot mount overlay on idmapped layers",
                        hint="--userns needs Linux 5.19 or later (Debian 12 has 6.1, "
                        "Ubuntu 24.04 6.8); run without --userns")


def create(idmap: IdMap) -> int:
    """A new user namespace with its maps written; return an fd that holds it.

    A helper process unshares it and waits; the runtime, root on the host, writes the maps
    (only a process with CAP_SETUID in the parent namespace may map other ids than its own)
    and opens /proc/HELPER/ns/user. The fd keeps the namespace alive after the helper exits.
    Shell: unshare --user sleep infinity &
           echo '0 100000 65536' > /proc/$!/uid_map; echo '0 100000 65536' > /proc/$!/gid_map
    See: user_namespaces(7) "User and group ID mappings"
    """
    hints = {errno.ENOSPC: f"the host's limit of user namespaces is reached or 0: {ENABLE_USERNS}",
             errno.EPERM: f"the host forbids user namespaces here (in a container? "
             f"seccomp?); on Ubuntu: {APPARMOR_FIX}",
             errno.EACCES: f"AppArmor forbids it? {APPARMOR_FIX}",
             errno.EINVAL: "the kernel refused the map: is the range inside 1..4294967294?"}
    with step("create a user namespace and write its uid and gid maps",
              f"unshare --user sleep infinity &\necho '{idmap.line}' > /proc/$!/uid_map\n"
              f"echo '{idmap.line}' > /proc/$!/gid_map", hints,
              why="first, by the runtime: only a process still root on the host may map "
              "other ids than its own, and the idmapped mounts need the maps"):
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the helper: unshare, say so (or the errno), wait for end-of-file
            try:
                os.close(ready_r)
                os.close(done_w)
                try:
                    libc.unshare(libc.CLONE_NEWUSER)
                    os.write(ready_w, b"ok")
                except OSError as e:
                    os.write(ready_w, str(e.errno).encode())
                os.read(done_r, 1)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(done_r)
        try:
            reply = os.read(ready_r, 16)
            if reply != b"ok":
                code = int(reply or errno.EPERM)
                raise OSError(code, os.strerror(code))
            for name in ("uid_map", "gid_map"):
                Path(f"/proc/{pid}/{name}").write_text(idmap.line + "\n")
            return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(ready_r)
            os.close(done_w)  # the helper reads end-of-file and exits
            os.waitpid(pid, 0)


class Prepared(NamedTuple):
    """What the runtime made for one container: fds, inherited by the shim and the init."""

    idmap: IdMap
    home: Path  # $C: the shim's cwd, where the idmapped $C is attached
    userns_fd: int
    container_fd: int  # $C, idmapped, detached
    layer_fds: tuple[int, ...]  # each layer, idmapped, detached: bottom first, as $L1 $L2...

    def fds(self) -> list[int]:
        return [self.userns_fd, self.container_fd, *self.layer_fds]


def check_layers(image: Image) -> None:
    """Refuse an image that --userns would show wrong.

    minictr's layers mark opaque directories with trusted.overlay.opaque, and overlay mounted
    with `userxattr` reads only user.overlay.opaque: a directory that an upper layer made
    opaque would not hide what the layers below have there. (Whiteouts, which are device
    nodes, work in both modes.) The bottom layer's marks hide nothing: only the others are read.
    Shell: find $LAYERS/$L2 -type d -exec getfattr -n trusted.overlay.opaque {} +
    """
    for number, layer in enumerate(image.layers[1:], 2):
        for directory, _, _ in os.walk(layer):
            try:
                opaque = os.getxattr(directory, "trusted.overlay.opaque") == b"y"
            except OSError:
                continue
            if opaque:
                inside = "/" + os.path.relpath(directory, layer).removeprefix(".")
                raise StepError("check the image for --userns",
                                f"layer {number} of {image.name} makes {inside} opaque with "
                                "trusted.overlay.opaque, which overlay does not read in a "
                                "user namespace (userxattr)",
                                hint="run it without --userns; only a one-layer image, or one "
                                "whose upper layers replace no directory, runs with --userns")


@contextmanager
def prepared(idmap: IdMap, dirs: ContainerDirs, image: Image) -> Iterator[Prepared]:
    """Create the user namespace and the idmapped mounts; close the fds when the run is over
    (the mounts were only ever attached in the container's mount namespace: nothing to undo
    on the host)."""
    check_layers(image)
    fds: list[int] = []
    try:
        fds.append(create(idmap))
        fds += idmapped_mounts(fds[0], dirs, image)
        yield Prepared(idmap, dirs.path, fds[0], fds[1], tuple(fds[2:]))
    finally:
        for fd in fds:
            os.close(fd)


def idmapped_mounts(userns_fd: int, dirs: ContainerDirs, image: Image) -> list[int]:
    """Detached idmapped copies of $C and of each layer: [$C, $L1, $L2...].

    $C holds upper, work and merged: through its idmapped copy, upper is owned by the
    container's root, and what it writes is stored as owned by 0. $C/lowers/N are the
    (empty) places where the init will attach the layers.
    Shell: mount --bind -o X-mount.idmap=/proc/$!/ns/user $C $C   (util-linux >= 2.39;
           minictr keeps the copies detached until the init attaches them, in its own
           mount namespace: see attach)
    """
    lowers = dirs.path / "lowers"
    # (path, where the init attaches it, its attributes), shown and done from this one list.
    # The layers read-only: nothing in the container can write through to them.
    plan = [(dirs.path, dirs.path, libc.MOUNT_ATTR_IDMAP)]
    plan += [(layer, lowers / str(n), libc.MOUNT_ATTR_IDMAP | libc.MOUNT_ATTR_RDONLY)
             for n, layer in enumerate(image.layers, 1)]
    lines = ["mkdir -p " + " ".join(str(where) for _, where, _ in plan[1:])]
    lines += [f"mount --bind -o X-mount.idmap=/proc/$!/ns/user"
              f"{',ro' if attr & libc.MOUNT_ATTR_RDONLY else ''} --make-private {path} {where}"
              for path, where, attr in plan]
    hints = {errno.EINVAL: "this filesystem cannot be idmapped (ext4, xfs and btrfs can; "
             "tmpfs from Linux 6.3): put MINICTR_ROOT on one that can",
             errno.ENOSYS: "this kernel has no mount_setattr(2): --userns needs Linux 5.19"}
    fds: list[int] = []
    with step("idmap the container's directory and the image's layers",
              "\n".join(lines), hints,
              why="by the runtime, root on the host: idmapping a mount needs CAP_SYS_ADMIN "
              "over its filesystem, which the container's root never has"):
        try:
            for _, where, _ in plan[1:]:
                where.mkdir(parents=True, mode=0o755)
            for path, _, attr in plan:
                fds.append(libc.open_tree(str(path)))
                # A clone is a peer of its source: on a host whose / is shared (systemd's),
                # what the init later mounts on it would come back to the host's mount
                # namespace, and pivot_root refuses a shared parent. Private, as runc makes it.
                libc.mount_setattr(fds[-1], attr, userns_fd, propagation=libc.MS_PRIVATE)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
    return fds


# --- in the shim --------------------------------------------------------------------------


def enter(ns: Prepared) -> None:
    """Join the user namespace and become its root (host uid ns.idmap.host).

    The cwd is set to $C first, while this process can still reach it: unshare(CLONE_NEWNS)
    carries the cwd over into the new mount table, where attach() mounts onto it. The
    supplementary groups are cleared: root's own (host gid 0) would otherwise stay.
    Shell: cd $C && nsenter --user=/proc/$!/ns/user --setuid=0 --setgid=0 (setgroups: none)
    See: setns(2), setresuid(2), setgroups(2), user_namespaces(7)
    """
    with step("enter the user namespace and become its root",
              f"cd {ns.home} && nsenter --user=/proc/$!/ns/user --setuid=0 --setgid=0",
              why="before the shim unshares: the namespaces it makes then belong to this "
              "one, and its root is root over them only"):
        os.chdir(ns.home)
        libc.setns(ns.userns_fd, libc.CLONE_NEWUSER)
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    note(f"uid 0 here is uid {ns.idmap.host} on the host: cat /proc/self/uid_map shows "
         f"'{ns.idmap.line}'")


# --- in the container's init --------------------------------------------------------------


def attach(ns: Prepared) -> Path:
    """Attach the idmapped $C onto $C (the cwd) and each layer on $C/lowers/N, in this mount
    namespace only; return the path that reaches the idmapped $C: /proc/self/fd/N.

    Why through the fd: the container's root cannot walk $MINICTR_ROOT/containers (mode
    0700, owned by the host's root, which it is not); the fd leads straight to the idmapped
    $C, owned by the container's root.
    Shell: (move_mount(2) of each detached mount)  mount --move ... $C; ... $C/lowers/N
    """
    base = Path(f"/proc/self/fd/{ns.container_fd}")
    explain.define("CM", base)  # "$CM/merged": the container's directory, idmapped
    lines = [f"move_mount idmapped $C onto {ns.home}"]
    lines += [f"move_mount idmapped $L{n} onto $CM/lowers/{n}"
              for n in range(1, len(ns.layer_fds) + 1)]
    with step("attach the idmapped mounts: the container's directory and each layer",
              "\n".join(lines), why="in the init's own mount namespace, before the overlay, "
              "which is mounted from these idmapped copies"):
        libc.move_mount(ns.container_fd, "")
        for n, fd in enumerate(ns.layer_fds, 1):
            libc.move_mount(fd, str(base / "lowers" / str(n)))
    return base


def forget(ns: Prepared) -> None:
    """Close the fds of the host's mounts and namespace, once pivot_root has made the overlay
    the root: an fd left open into the old tree would be a way out of the container (runc's
    CVE-2024-21626 was one). They are close-on-exec too; this is for the reader."""
    for fd in ns.fds():
        os.close(fd)
