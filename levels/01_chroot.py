"""Level 01: chroot into the image, and why that is no jail.

The idea: chroot(2) changes one thing, the directory that this process and its children
resolve "/" against. Nothing else: the command still shares the host's mount table (a
`mount` inside is a mount on the host) and its processes, and root walks out: --escape runs
common.py `escape`, the classic way, which the chroot(2) man page warns of. Levels 02 to 04
close those doors. Tutorial: chapter 05, sections 1 and 2 ("A jail", "The way out").
In minictr: nothing grows out of this; minictr never calls chroot, and
minictr/run/rootfs.py `pivot_into` is what replaces it (level 04).

The jail is a copy of the image's bottom layer in a temporary directory, removed at the end
(`cp -a`, as chapter 05 does): the command runs as root and may write anywhere in its "/",
and a stored layer is shared by every image and container that uses it, so it must never
be the jail itself. Stacking the layers, and saving the copy, is level 03's overlay.

    sudo python3 levels/01_chroot.py busybox sh
    sudo python3 levels/01_chroot.py --escape busybox cat /etc/hostname    (the host's file)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

from common import escape, execute, fail, find_image, forked, parser, run_main, say, wait_for


def child(jail: Path, command: list[str], env: dict[str, str], do_escape: bool) -> NoReturn:
    """The forked child: into the jail, then become the command."""
    say("change the root directory", f"chroot {jail}")
    os.chroot(jail)
    os.chdir("/")  # else the current directory stays outside the root: see escape()
    if do_escape:
        escape()
    execute(command, env)


def mounts_under(directory: Path) -> list[str]:
    """Mount points below directory: field 5 of /proc/self/mountinfo, see proc(5)."""
    with open("/proc/self/mountinfo") as f:
        return [p for line in f if (p := line.split()[4]).startswith(f"{directory}/")]


def main() -> int:
    args = parser(__doc__).parse_args()
    layers, command, env = find_image(args.image, args.command)
    tmp = Path(tempfile.mkdtemp(prefix="minictr-level01-"))
    try:
        say("copy the image's bottom layer", f"cp -a {layers[0]} {tmp}/rootfs")
        shutil.copytree(layers[0], tmp / "rootfs", symlinks=True)
        pid = forked(child, tmp / "rootfs", command, env, args.escape)
        return wait_for(pid)
    finally:
        # One mount table: a `mount` in the jail is a mount on the host (chapter 05, section
        # 2), and rmtree would delete through it. Level 02's mount namespace ends that.
        if mounted := mounts_under(tmp):
            fail(f"{tmp} not removed: the jail mounted {' '.join(mounted)} on the host; "
                 f"sudo umount {' '.join(mounted)} && sudo rm -r {tmp}")
        shutil.rmtree(tmp)


if __name__ == "__main__":
    run_main(main)
