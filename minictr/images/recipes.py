"""Building images from their recipes in the repository's ``images/`` directory.

    images/busybox/   the host's static busybox, a symlink per applet, a few files in /etc
    images/debian/    a minimal Debian made by debootstrap --variant=minbase

Each recipe makes one layer: the files are laid out in a new directory of the layer store,
which then takes its digest as its name (minictr.images.catalog.add_layer).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections import deque
from pathlib import Path

from minictr.errors import StepError
from minictr.explain import step
from minictr.fs.remove import remove_tree
from minictr.images import catalog
from minictr.spec import Image, ImageConfig
from minictr.store import Store

BUILDERS = ("busybox", "debian")
# The recipes live in the repository's images/ directory; `make setup` installs minictr in
# editable mode, so they are found next to the package.
RECIPES = Path(__file__).resolve().parents[2] / "images"


def build_missing(store: Store, name: str) -> Image:
    """`run` of an image the store does not have: built from its recipe (busybox, on first
    use), or, with no recipe of that name, "no such image"."""
    if name not in BUILDERS:
        hint = "list images with: minictr images; build one with: minictr image build busybox"
        if not any(c in name for c in ":/@"):  # (minictr.images.reference)
            hint += (f"; a name without ':' or '/' is a local image: a registry's is named "
                     f"with its tag ({name}:latest)")
        raise StepError("find image", f"no such image: {name}", hint=hint)
    return build(store, name)


def build(store: Store, name: str) -> Image:
    """Build the image from images/NAME/ (once: an image that exists is left as it is)."""
    if name not in BUILDERS:
        raise StepError("build image", f"no recipe for {name!r}",
                        hint=f"minictr knows: {', '.join(BUILDERS)}")
    recipe = RECIPES / name
    config = json.loads((recipe / "image.json").read_text())
    fill = {"busybox": build_busybox, "debian": build_debian}[name]
    with catalog.changing(store):
        if (store.images / f"{name}.json").exists():
            return catalog.load(store, name)  # built already; containers may be using it
        digest, new = catalog.add_layer(store, lambda rootfs: fill(recipe, rootfs),
                                       f"recipe images/{name}")
        try:
            return catalog.register(store, name, [digest], ImageConfig(
                cmd=tuple(config["cmd"]), env=tuple(config["env"])), f"recipe images/{name}")
        except BaseException:
            if new:
                catalog.forget_new_layers(store, [digest])
            raise


def build_busybox(recipe: Path, rootfs: Path) -> None:
    """Lay out a busybox root filesystem in the (empty) directory ``rootfs``.

    Shell: cp $(which busybox) rootfs/bin/busybox;
           for a in $(busybox --list-full); do ln -s /bin/busybox rootfs/$a; done
    """
    config = json.loads((recipe / "image.json").read_text())
    host_busybox = find_static_busybox()
    with step("build the busybox image", f"cp {host_busybox} {rootfs}/bin/busybox; "
              "busybox --list-full | xargs -I{} ln -s /bin/busybox rootfs/{}",
              why="on first use: one static binary and its links are a whole userland, "
              "with nothing to download"):
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


def build_debian(recipe: Path, rootfs: Path) -> None:
    """A minimal Debian, as the Debian installer lays down its base system.

    Shell: debootstrap --variant=minbase bookworm ROOTFS http://deb.debian.org/debian
    """
    config = json.loads((recipe / "image.json").read_text())
    if shutil.which("debootstrap") is None:
        raise StepError("build image", "debootstrap is not installed",
                        hint="sudo apt install debootstrap debian-archive-keyring")
    argv = ["debootstrap", f"--variant={config['variant']}", config["suite"], str(rootfs),
            config["mirror"]]
    with step("debootstrap a minimal Debian (downloads ~40 MB)", " ".join(argv),
              why="on first use: a real distribution's tree, for the chapters that need "
              "apt and a libc"):
        run_with_progress(argv, "debootstrap")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):  # not needed to run
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        # debootstrap makes device nodes in /dev (console, null, ...). A layer holds none:
        # minictr mounts a fresh /dev with only the safe devices in every container.
        for entry in (rootfs / "dev").iterdir():
            if entry.is_dir() and not entry.is_symlink():
                remove_tree(entry)
            else:
                entry.unlink()


def run_with_progress(argv: list[str], what: str) -> None:
    """Run a long command; on a terminal show its latest line, else stay quiet. On failure,
    the error carries its last lines."""
    last: deque[str] = deque(maxlen=8)
    show = sys.stderr.isatty()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            last.append(line.rstrip())
            if show:
                print(f"\r\x1b[K{what}: {line.rstrip()[:100]}", end="", file=sys.stderr,
                      flush=True)
    if show:
        print("\r\x1b[K", end="", file=sys.stderr)
    if proc.returncode != 0:
        raise StepError("build image", f"{what} failed (exit {proc.returncode}): "
                        + " | ".join(last), hint="is the Debian mirror reachable?")
