"""minictr.fs.remove: a removal never reaches past the tree it removes (issue 17).

Real mounts, real trees, as root: a mount inside the tree is unmounted first, or, if it is
still there when the walk meets it, refused; a symlink is unlinked, never followed; a tree
deeper than the fds a process may open is removed all the same. And the mounts --userns
gives a container: private (never a peer of a shared `/`), the layers read-only.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from minictr import libc
from minictr.errors import StepError
from minictr.fs import remove
from tests.helpers import scaled, tree_digest

pytestmark = pytest.mark.root


def make_keep(base: Path) -> Path:
    keep = base / "keep"
    (keep / "sub").mkdir(parents=True)
    (keep / "sub" / "file").write_text("must stay\n")
    return keep


@pytest.fixture
def base(minictr_root: Path) -> Path:
    return minictr_root  # on the real disk, removed after the test


def test_a_mount_inside_is_unmounted_first_and_what_it_showed_stays(base: Path) -> None:
    keep = make_keep(base)
    before = tree_digest(keep)
    point = base / "tree" / "a b" / "lowers" / "1"  # a space: mountinfo writes it \040
    point.mkdir(parents=True)
    libc.mount(str(keep), str(point), None, libc.MS_BIND)
    remove.remove_tree(base / "tree")
    assert not (base / "tree").exists()
    assert tree_digest(keep) == before
    assert remove.mounts_under(base) == []


def test_a_mount_met_during_the_walk_is_refused_not_crossed(base: Path) -> None:
    """remove_at does not unmount (remove_tree does, first): a mount that is there when the
    walk meets it, as one that came back meanwhile would be, stops the walk with an error."""
    keep = make_keep(base)
    before = tree_digest(keep)
    point = base / "tree" / "merged"
    point.mkdir(parents=True)
    libc.mount(str(keep), str(point), None, libc.MS_BIND)
    try:
        parent = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(StepError, match="refused to cross it"):
                remove.remove_at(parent, "tree", base / "tree")
        finally:
            os.close(parent)
        assert tree_digest(keep) == before
        assert (point / "sub" / "file").exists()
    finally:
        libc.umount2(str(point), libc.MNT_DETACH)


def test_a_symlink_in_the_tree_is_unlinked_not_followed(base: Path) -> None:
    keep = make_keep(base)
    before = tree_digest(keep)
    tree = base / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "to-keep").symlink_to(keep)
    (tree / "to-sub").symlink_to(keep / "sub")
    os.mkfifo(tree / "d" / "fifo")  # opened as a directory, it must not block
    remove.remove_tree(tree)
    assert not tree.exists()
    assert tree_digest(keep) == before


def test_a_tree_deeper_than_the_fd_limit_is_removed(base: Path) -> None:
    """3000 levels, with at most 200 fds open: the walk keeps MAX_OPEN_FDS and reopens."""
    script = f"""
import os, resource, sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from pathlib import Path
from minictr.fs import remove
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
fd = os.open({str(base)!r}, os.O_RDONLY)
os.mkdir("deep", dir_fd=fd)
for _ in range(3000):
    new = os.open("deep" if _ == 0 else "d", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = new
    os.mkdir("d", dir_fd=fd)
    os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
os.close(fd)
remove.remove_tree(Path({str(base / "deep")!r}))
print(os.path.exists({str(base / "deep")!r}))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=scaled(120))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    assert resource.getrlimit(resource.RLIMIT_NOFILE)  # this process's own limit unchanged


USERNS_MOUNTS = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from minictr import libc
from minictr.run import userns
from minictr.spec import ContainerDirs, IdMap, Image, ImageConfig
base = Path(sys.argv[2])
dirs = ContainerDirs("c" * 64, "c", base / "container")
dirs.path.mkdir()
layer = base / "layer"
layer.mkdir()
image = Image("i", ("sha256:" + "0" * 64,), (layer,), ImageConfig(), 0, 0.0, "test")
fd = userns.create(IdMap(100000, 65536))
home, layer_fd = userns.idmapped_mounts(fd, dirs, image)
libc.mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE)  # as the init does, then attach
libc.move_mount(home, str(base / "container"))
libc.move_mount(layer_fd, str(base / "container" / "lowers" / "1"))
try:
    open(base / "container" / "lowers" / "1" / "new", "w")
    write = "written"
except OSError as e:
    write = e.strerror
info = [line.split(" - ")[0].split()[4:] for line in open("/proc/self/mountinfo")]
print(json.dumps({"write": write, "mounts": [i for i in info if i[0].startswith(str(base))]}))
"""


@pytest.mark.parametrize("propagation", ["shared", "private"])
def test_userns_mounts_are_private_and_the_layers_read_only(base: Path, propagation: str) -> None:
    """On a shared `/` a clone made by open_tree is a peer of its source, and stays one when
    the init makes its mounts private (a detached mount is not among them): whatever the
    init then mounts on it would show on the host. minictr makes each clone private; and a layer is
    read-only through its mount (a bug elsewhere then meets EROFS, not the image)."""
    r = subprocess.run(["unshare", "--mount", "--propagation", propagation, sys.executable,
                        "-c", USERNS_MOUNTS, str(Path(__file__).parent.parent), str(base)],
                       capture_output=True, text=True, timeout=scaled(60))
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen["write"] == os.strerror(30), seen  # EROFS
    assert len(seen["mounts"]) == 2, seen
    for _point, _options, *optional in seen["mounts"]:
        assert not any(o.startswith(("shared:", "master:")) for o in optional), seen
    layer_options = next(o for p, o, *_ in seen["mounts"] if p.endswith("/lowers/1"))
    assert "ro" in layer_options.split(","), seen
    assert not (base / "layer" / "new").exists()
