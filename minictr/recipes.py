"""Building images from their recipes in the repository's ``images/`` directory.

Today there is one recipe, ``images/busybox/``: the host's static busybox, a symlink for each
of its applets, a few files under /etc, and the directories a container expects.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from minictr import diff
from minictr.errors import StepError
from minictr.explain import step
from minictr.images import RECIPES, load
from minictr.spec import Image
from minictr.store import Store, hold_lock


def build(store: Store, name: str) -> Image:
    """Build the image from its recipe into a temporary directory, then rename it into place.

    rename(2) is atomic: a half-built image is never seen, and when two first runs build at
    once, the second rename fails (the directory is not empty) and that copy is dropped.
    """
    if name != "busybox":
        raise StepError("build image", f"no recipe for {name!r}", hint="minictr knows: busybox")
    if (store.images / name / "image.json").exists():
        return load(store.images / name)  # built already; containers may be using it
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=store.images))
    lock = hold_lock(tmp / "lock")  # so that `prune` leaves a build in progress alone
    try:
        size = build_busybox(RECIPES / name, tmp / "rootfs")
        recipe = json.loads((RECIPES / name / "image.json").read_text())
        config = {"cmd": recipe["cmd"], "env": recipe["env"], "size": size,
                  "created": time.time(), "recipe": f"images/{name}"}
        (tmp / "image.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "lock").unlink()
        tmp.chmod(0o755)
        with contextlib.suppress(OSError):  # someone else finished first: theirs is as good
            os.rename(tmp, store.images / name)
    finally:
        os.close(lock)
        shutil.rmtree(tmp, ignore_errors=True)
    return load(store.images / name)


def build_busybox(recipe: Path, rootfs: Path) -> int:
    """Lay out a busybox root filesystem; return its size in bytes.

    Shell: mkdir rootfs; cp $(which busybox) rootfs/bin/busybox;
           for a in $(busybox --list-full); do ln -s /bin/busybox rootfs/$a; done
    """
    config = json.loads((recipe / "image.json").read_text())
    host_busybox = find_static_busybox()
    with step("build the busybox image", f"cp {host_busybox} {rootfs}/bin/busybox; "
              "busybox --list-full | xargs -I{} ln -s /bin/busybox rootfs/{}"):
        rootfs.mkdir(mode=0o755)
        for d, mode in config["dirs"].items():
            (rootfs / d).mkdir(parents=True, exist_ok=True)
            (rootfs / d).chmod(int(mode, 8))  # chmod after mkdir: the umask must not decide
        shutil.copy(host_busybox, rootfs / "bin/busybox")
        (rootfs / "bin/busybox").chmod(0o755)
        applets = subprocess.run([host_busybox, "--list-full"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for applet in applets:
            link = rootfs / applet
            if applet != "bin/busybox" and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")
        shutil.copytree(recipe / "rootfs", rootfs, dirs_exist_ok=True)
    return diff.tree_bytes(rootfs)


def find_static_busybox() -> str:
    path = shutil.which("busybox") or ("/bin/busybox" if os.path.exists("/bin/busybox") else None)
    if path is None:
        raise StepError("build image", "busybox is not installed on the host",
                        hint="sudo apt install busybox-static")
    if not is_static_elf(path):
        raise StepError("build image", f"{path} is dynamically linked: the image has no libc",
                        hint="sudo apt install busybox-static")
    return path


def is_static_elf(path: str) -> bool:
    """True when the ELF file has no PT_INTERP program header (no dynamic loader needed).

    Shell: file BINARY  (says "statically linked"). See elf(5).
    """
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # only 64-bit ELF is supported
            return False
        endian = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(endian + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    PT_INTERP = 3
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != PT_INTERP
               for i in range(phnum))
