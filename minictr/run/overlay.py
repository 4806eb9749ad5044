"""The overlay mount: one shared read-only image below, one private writable layer above.

    mount -t overlay -o lowerdir=IMAGE,upperdir=UPPER,workdir=WORK overlay MERGED

Reads find a file in upper if it is there, else in the lowers. The first write to a lower
file copies it up whole into upper ("copy-up"); a deleted lower file leaves a whiteout in
upper; a lower directory removed and made again is marked opaque. minictr.show.diff reads that.
See Documentation/filesystems/overlayfs.rst in the kernel source.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from minictr import libc
from minictr.errors import StepError
from minictr.explain import step
from minictr.run.mounts import Mount, shell

# Options are passed explicitly, so what the container does to upper, and so the change
# report, do not depend on how a distribution built its kernel (CONFIG_OVERLAY_FS_*):
OPTIONS = (
    # A lower directory renamed inside the container: "off" makes rename(2) fail with EXDEV,
    # so `mv` copies it and deletes the old one (plain A and D entries in upper) instead of
    # writing a trusted.overlay.redirect xattr that only overlay itself understands.
    "redirect_dir=off",
    # chmod/chown of a lower file: "off" copies the whole file up, so upper holds a real,
    # complete file; "on" would copy only its metadata and leave the data in lower.
    "metacopy=off",
    # The inode index (for hard links and NFS export) is not needed, and keeping it off lets
    # a container's upper be used with another lower, e.g. by `commit` later.
    "index=off",
)

# Filesystems that overlay refuses as upperdir (no whiteouts, no trusted xattrs, or overlay
# itself). The Vagrant box's synced folder is one (vboxsf, nfs or 9p).
UNUSABLE_UPPER_FS = {"overlay", "nfs", "nfs4", "vboxsf", "cifs", "smb3", "9p", "fuse", "aufs"}


# In a user namespace (--userns), overlay may not write trusted.* xattrs, which need root on
# the host: `userxattr` makes it use user.overlay.* instead, and with it overlay requires that
# redirects are neither made nor followed: "nofollow" (with "off", newer kernels still follow).
USERNS_OPTIONS = ("userxattr", "redirect_dir=nofollow", "metacopy=off", "index=off")


def mount_options(lowers: Sequence[Path], upper: Path, work: Path, *,
                  userxattr: bool = False) -> str:
    """The -o string. lowerdir lists the top-most layer first, as overlay expects."""
    lowerdir = ":".join(str(p) for p in lowers)
    return ",".join((f"lowerdir={lowerdir}", f"upperdir={upper}", f"workdir={work}",
                     *(USERNS_OPTIONS if userxattr else OPTIONS)))


def check_upper_filesystem(upper: Path) -> None:
    """Refuse early, with a fix, when upper is on a filesystem overlay cannot write to."""
    fstype = filesystem_type(upper)
    if fstype.split(".")[0] in UNUSABLE_UPPER_FS:
        raise StepError("check upper filesystem",
                        f"{upper} is on {fstype}, which overlay cannot use as upperdir",
                        hint="set MINICTR_ROOT to a directory on the machine's own disk "
                        "(ext4, xfs, btrfs or tmpfs), e.g. /var/lib/minictr")


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` is on, from /proc/self/mountinfo (proc(5)).

    The last mount with the same device number as the path is the one that shows there.
    Shell: findmnt -n -o FSTYPE --target PATH
    """
    dev = os.stat(path).st_dev
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    fstype = "unknown"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[2] == wanted:
                fstype = fields[fields.index("-") + 1]
    return fstype


def mount_overlay(layers_dir: Path, lowers: Sequence[str], upper: Path, work: Path,
                  merged: Path, *, userxattr: bool = False) -> None:
    """Mount the container's root filesystem on ``merged``; runs in the container's mount ns.

    ``lowers`` are layer names in ``layers_dir``, top-most first. They are given relative to
    it (the mount is made from there), so that many layers fit in the one page of options
    mount(2) accepts: lowerdir=HEX3:HEX2:HEX1 instead of three long absolute paths.
    ``nodev``: a device node in the container's files cannot be opened. Root in a container
    keeps CAP_MKNOD (Docker's default), so it can make a node for the host's disk; Docker
    stops the open with its device cgroup, minictr with nodev here and on /dev and /dev/shm.
    """
    options = mount_options([Path(name) for name in lowers], upper, work, userxattr=userxattr)
    hints = {
        errno.ENODEV: "the kernel has no overlay filesystem: sudo modprobe overlay",
        # (no filesystem lookup here: this runs on every start, the hint only on failure;
        # check_upper_filesystem has already refused the filesystems overlay cannot use)
        errno.EINVAL: f"overlay refused the options; is {upper} on a filesystem overlay "
        f"can use (findmnt -T {upper})? see dmesg",
        errno.EPERM: "mounting needs root (CAP_SYS_ADMIN): try sudo",
    }
    m = Mount("overlay", str(merged), "overlay", libc.MS_NODEV, options)
    with step("mount the overlay: the image's layers below, a private upper above",
              f"cd {layers_dir} && {shell(m)}", hints,
              why="the container's root: first of the init's mounts, as /proc, /dev and /sys "
              "are mounted inside it"):
        os.chdir(layers_dir)
        libc.mount(*m)
