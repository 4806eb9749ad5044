"""minictr.show.layers: the merged view drawn from hand-made layers, from a real container, and
checked against the kernel's own merged view through a real overlay mount.

Whiteouts (mknod), trusted.* xattrs and mount need root: those tests are marked ``root``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.run.overlay import OPTIONS
from minictr.show import layers
from minictr.show.diff import ftype_of
from minictr.show.layers import VISIBLE
from tests.helpers import read_line, scaled, start

# --- building layers by hand ----------------------------------------------------------------


def write(path: Path, data: str = "", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    path.chmod(mode)
    return path


def symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def copy_up(lower: Path, upper: Path, name: str, append: str = "") -> None:
    """What overlay's copy-up does before a write: same bytes, mode, owner and mtime."""
    (upper / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(lower / name, upper / name, follow_symlinks=False)
    if append:
        with open(upper / name, "a") as f:
            f.write(append)


def copy_up_dir(lower: Path, upper: Path, name: str) -> None:
    (upper / name).mkdir(parents=True)
    shutil.copystat(lower / name, upper / name)


def whiteout(path: Path) -> None:
    """Shell: mknod PATH c 0 0"""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def make_opaque(path: Path) -> None:
    """Shell: mkdir PATH; setfattr -n trusted.overlay.opaque -v y PATH"""
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


@pytest.fixture
def one_lower(tmp_path: Path) -> tuple[Path, Path]:
    return make_one_lower(tmp_path)


@pytest.fixture
def two_lowers(tmp_path: Path) -> tuple[Path, list[Path]]:
    return make_two_lowers(tmp_path)


def make_one_lower(tmp_path: Path) -> tuple[Path, Path]:
    """An image and the upper of a container that changed each kind of thing in it."""
    upper, image = tmp_path / "upper", tmp_path / "image"
    upper.mkdir()
    for i in range(20):  # a /bin big enough to be collapsed
        symlink(image / "bin" / f"a{i:02}", "/bin/busybox")
    write(image / "bin" / "busybox", "\x7fELF", 0o755)
    write(image / "etc" / "group", "root:x:0:\n")
    write(image / "etc" / "hosts", "127.0.0.1 localhost\n")
    write(image / "etc" / "passwd", "root:x:0:0:root:/root:/bin/sh\n")
    write(image / "home" / "alice" / ".profile", "PS1='$ '\n")
    write(image / "home" / "bob", "")
    (image / "tmp").mkdir()
    symlink(image / "linuxrc", "bin/busybox")

    copy_up_dir(image, upper, "bin")
    whiteout(upper / "bin" / "a07")  # rm /bin/a07
    copy_up_dir(image, upper, "etc")
    copy_up(image, upper, "etc/passwd", append="alice:x:1000:1000::/home/alice:/bin/sh\n")
    whiteout(upper / "etc" / "hosts")  # rm /etc/hosts
    write(upper / "etc" / "motd", "hello\n")  # echo hello > /etc/motd
    make_opaque(upper / "home")  # rm -rf /home; mkdir /home; touch /home/carol
    write(upper / "home" / "carol")
    copy_up_dir(image, upper, "tmp")
    symlink(upper / "tmp" / "pw", "/etc/passwd")  # ln -s /etc/passwd /tmp/pw
    return upper, image


LEGEND = """\
Layers, top first: upper = this container's (read-write) · image = shared (read-only)
upper+image = a directory merged from both · ✗ = not in the merged view (deleted or hidden)
"""


def show(upper: Path, lowers: list[Path], path: str = "/") -> str:
    return layers.render(upper, lowers, path, color=False)


# --- the picture, from hand-made layers --------------------------------------------------------


@pytest.mark.root
def test_whole_tree(one_lower: tuple[Path, Path]) -> None:
    upper, image = one_lower
    assert show(upper, [image]) == LEGEND + """\
/                            upper+image
├── bin/                     upper+image  copied up from the image: holds changes below
│   ├── … 7 entries          image        a00 … a06: unchanged (all of them: --path /bin)
│   ├── a07 -> /bin/busybox  ✗ image      deleted: a whiteout in upper hides the image's symlink
│   └── … 13 entries         image        a08 … busybox: unchanged
├── etc/                     upper+image  copied up from the image: holds changes below
│   ├── group                image
│   ├── hosts                ✗ image      deleted: a whiteout in upper hides the image's file
│   ├── motd                 upper        new file
│   └── passwd               upper        copied up from the image: content changed (30 → 69 bytes)
├── home/                    upper        opaque: removed and made again; hides the image's 2 entries
│   ├── alice/               ✗ image      hidden by the opaque dir above (in upper): no whiteout needed
│   ├── bob                  ✗ image      hidden by the opaque dir above (in upper): no whiteout needed
│   └── carol                upper        new file
├── linuxrc -> bin/busybox   image
└── tmp/                     upper+image  copied up from the image: holds changes below
    └── pw -> /etc/passwd    upper        new symlink to /etc/passwd
30 visible: 5 from upper, 22 from image, 3 merged dirs · 2 deleted by whiteouts · 2 hidden by opaque dirs
"""  # noqa: E501


@pytest.mark.root
def test_a_path_shows_its_subtree_in_full(one_lower: tuple[Path, Path]) -> None:
    upper, image = one_lower
    assert show(upper, [image], "/etc") == LEGEND + """\
/etc/       upper+image  copied up from the image: holds changes below
├── group   image
├── hosts   ✗ image      deleted: a whiteout in upper hides the image's file
├── motd    upper        new file
└── passwd  upper        copied up from the image: content changed (30 → 69 bytes)
3 visible: 2 from upper, 1 from image, 0 merged dirs · 1 deleted by whiteouts · 0 hidden by opaque dirs
"""  # noqa: E501
    full = show(upper, [image], "/bin").splitlines()
    assert len(full) == 2 + 1 + 21 + 1  # legend, /bin/, every entry, the counts
    assert full[3] == "├── a00 -> /bin/busybox  image"
    assert full[10] == "├── a07 -> /bin/busybox  ✗ image      deleted: a whiteout in upper " \
        "hides the image's symlink"
    assert full[-2] == "└── busybox              image"


@pytest.mark.root
def test_path_is_normalised_and_may_name_a_file(one_lower: tuple[Path, Path]) -> None:
    upper, image = one_lower
    assert show(upper, [image], "/etc/") == show(upper, [image], "//etc/./")
    assert show(upper, [image], "/etc/passwd") == LEGEND + (
        "/etc/passwd  upper  copied up from the image: content changed (30 → 69 bytes)\n"
    )


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("etc", ["--path 'etc' is not absolute", "--path /etc"]),
        ("", ["is not absolute"]),
        ("/etc/../root", ["contains '..'"]),
        ("/..", ["contains '..'"]),
    ],
)
def test_bad_paths_are_refused_before_reading_anything(path: str, words: list[str]) -> None:
    with pytest.raises(StepError) as e:
        layers.render(Path("/nonexistent/upper"), [Path("/nonexistent/image")], path,
                      color=False)
    line = str(e.value)
    assert line.startswith("minictr: show layers: ") and "\n" not in line
    for word in words:
        assert word in line


@pytest.mark.root
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/nope", "/nope is not in the merged view (no layer has nope in /): "
         "see what is there: --path /"),
        ("/etc/hosts", "/etc/hosts is not in the merged view (deleted: a whiteout in upper "
         "hides the image's file): see what is there: --path /etc"),
        ("/home/bob", "/home/bob is not in the merged view (/home is opaque and hides the "
         "image's one): see what is there: --path /home"),
        ("/etc/passwd/x", "/etc/passwd is a file, not a directory: see it with --path /etc/passwd"),
        ("/linuxrc/", "" ),
    ],
)
def test_paths_not_in_the_merged_view(
    one_lower: tuple[Path, Path], path: str, message: str
) -> None:
    upper, image = one_lower
    if not message:  # a symlink is shown, not followed
        assert show(upper, [image], path).splitlines()[2] == "/linuxrc -> bin/busybox  image"
        return
    with pytest.raises(StepError) as e:
        show(upper, [image], path)
    assert str(e.value) == f"minictr: show layers: {message}"


@pytest.mark.root
def test_long_runs_of_whiteouts_are_collapsed_too(tmp_path: Path) -> None:
    """rm /usr/bin/a*: one line with no --path; every whiteout with --path /usr/bin."""
    upper, image = tmp_path / "upper", tmp_path / "image"
    for i in range(20):
        write(image / "usr" / "bin" / f"{'ab'[i // 10]}{i % 10}")
    for i in range(10):
        whiteout(upper / "usr" / "bin" / f"a{i}")
    rows = show(upper, [image]).splitlines()[2:-1]
    assert rows[3:] == [
        "        ├── … 10 entries  ✗ image      a0 … a9: deleted by whiteouts in upper "
        "(all of them: --path /usr/bin)",
        "        └── … 10 entries  image        b0 … b9: unchanged",
    ]
    assert len(show(upper, [image], "/usr/bin").splitlines()) == 2 + 1 + 20 + 1


def test_layer_names() -> None:
    assert layers.layer_names(1) == ["upper", "image"]
    assert layers.layer_names(3) == ["upper", "L3", "L2", "L1"]  # top first; L1 is the base


def test_colour_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "upper").mkdir()
    write(tmp_path / "image" / "f")
    plain = layers.render(tmp_path / "upper", [tmp_path / "image"], "/", color=False)
    painted = layers.render(tmp_path / "upper", [tmp_path / "image"], "/", color=True)
    assert "\x1b[" not in plain
    assert re.sub(r"\x1b\[[0-9;]*m", "", painted) == plain


# --- several lower layers ----------------------------------------------------------------------


def make_two_lowers(tmp_path: Path) -> tuple[Path, list[Path]]:
    """An image of two layers, L2 (dir l1, top) on L1 (dir l2, the base), and an upper."""
    upper, l1, l2 = tmp_path / "upper", tmp_path / "l1", tmp_path / "l2"
    upper.mkdir()
    write(l2 / "etc" / "passwd", "root:x:0:0::/root:/bin/sh\n")
    write(l2 / "etc" / "motd", "from layer 2\n")
    write(l2 / "etc" / "issue", "layer 2\n")
    write(l2 / "opt" / "app" / "old.conf", "v1\n")
    write(l2 / "opt" / "readme", "v1\n")
    write(l2 / "srv", "a file where layer 1 has a directory\n")
    write(l2 / "var" / "data", "")

    write(l1 / "etc" / "passwd", "root:x:0:0::/root:/bin/ash\n")  # replaces layer 2's
    whiteout(l1 / "etc" / "motd")  # deleted in layer 1
    make_opaque(l1 / "opt")  # rm -rf /opt && mkdir /opt, in layer 1
    write(l1 / "opt" / "app.conf", "v2\n")
    write(l1 / "srv" / "index.html", "<p>hi</p>\n")  # a directory where layer 2 has a file
    (l1 / "var").mkdir()

    copy_up_dir(l1, upper, "etc")
    copy_up(l1, upper, "etc/passwd", append="bob:x:1000:1000::/:/bin/sh\n")
    write(upper / "var" / "new", "")
    return upper, [l1, l2]


@pytest.mark.root
def test_two_lower_layers(two_lowers: tuple[Path, list[Path]]) -> None:
    upper, lowers = two_lowers
    assert show(upper, lowers) == """\
Layers, top first: upper = this container's (read-write) · L2 (top), L1 = the image's layers (shared, read-only)
upper+L2 = a directory merged from those layers · ✗ = not in the merged view (deleted or hidden)
/                   upper+L2+L1
├── etc/            upper+L2+L1  copied up from the image: holds changes below
│   ├── issue       L1
│   ├── motd        ✗ L1         deleted: a whiteout in layer 2 hides layer 1's file
│   └── passwd      upper        copied up from the image: content changed (27 → 54 bytes)
├── opt/            L2           opaque: hides what the layers below have here
│   ├── app/        ✗ L1         hidden by the opaque dir above (in layer 2): no whiteout needed
│   ├── app.conf    L2
│   └── readme      ✗ L1         hidden by the opaque dir above (in layer 2): no whiteout needed
├── srv/            L2           hides layer 1's file
│   └── index.html  L2
└── var/            upper+L2+L1  copied up from the image: holds changes below
    ├── data        L1
    └── new         upper        new file
10 visible: 2 from upper, 4 from L2, 2 from L1, 2 merged dirs · 1 deleted by whiteouts · 2 hidden by opaque dirs
"""  # noqa: E501


# --- the kernel's merged view agrees -----------------------------------------------------------


Mount = Callable[[Path, list[Path]], Path]


@pytest.fixture
def mount_overlay(tmp_path: Path) -> Iterator[Mount]:
    """``mount(upper, lowers) -> merged``: the overlay as minictr mounts it, never left mounted.

    The work directory must be on upper's filesystem: a fresh one is made next to upper.
    Shell: mount -t overlay overlay -o lowerdir=L1:L2,upperdir=U,workdir=W,redirect_dir=off,... M
    """
    mounted: list[Path] = []

    def mount(upper: Path, lowers: list[Path]) -> Path:
        work = upper.with_name(upper.name + "-check-work")
        merged = tmp_path / f"merged{len(mounted)}"
        work.mkdir()
        merged.mkdir()
        options = ",".join([f"lowerdir={':'.join(map(str, lowers))}", f"upperdir={upper}",
                            f"workdir={work}", *OPTIONS])
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, merged], check=True)
        mounted.append(merged)
        return merged

    try:
        yield mount
    finally:
        for merged in mounted:
            subprocess.run(["umount", merged], check=True)
    for merged in mounted:
        assert f" {merged} " not in Path("/proc/self/mountinfo").read_text()


def kernel_view(merged: Path) -> dict[str, str]:
    """Every path the kernel shows under ``merged``, with its type.  Shell: find MERGED"""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(merged):  # never follows a symlink
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            seen["/" + str(path.relative_to(merged))] = ftype_of(path.lstat().st_mode)
    return seen


ROW = re.compile(r"(?P<indent>(?:│   |    )*)(?P<branch>├── |└── )?(?P<rest>.*)")


def parse(text: str) -> dict[str, tuple[str, str]]:
    """The rows of a render, by path: (layer column, note). Collapsed rows are left out."""
    rows = text.splitlines()[2:]  # no legend
    if rows and re.match(r"\d+ visible: ", rows[-1]):
        del rows[-1]  # nor the counts
    found: dict[str, tuple[str, str]] = {}
    parents: list[str] = []
    for row in rows:
        m = ROW.fullmatch(row)
        assert m, row
        name, layer, note = [*re.split(r"  +", m["rest"], maxsplit=2), "", ""][:3]
        name = name.split(" -> ")[0].rstrip("/")
        if not m["branch"]:  # the top row: the whole path
            path, depth = name or "/", 0
        else:
            depth = len(m["indent"]) // 4 + 1
            path = f"{parents[depth - 1].rstrip('/')}/{name}"
        del parents[depth:]
        parents.append(path)
        if not name.startswith("… "):
            found[path] = (layer, note)
    return found


def drawn(upper: Path, lowers: list[Path]) -> dict[str, tuple[str, str]]:
    """Every row the renders show: the whole tree, and each top-level directory in full."""
    rows = parse(show(upper, lowers))
    for top in layers.merged_view(upper, lowers).children:
        if top.state == VISIBLE and top.ftype == "dir":
            rows.update(parse(show(upper, lowers, top.path)))
    return rows


def assert_agrees_with_the_kernel(upper: Path, lowers: list[Path], merged: Path) -> None:
    """What the picture says is visible is what the kernel shows, and from where it says."""
    kernel = kernel_view(merged)
    model = {e.path: e.ftype for e in layers.merged_view(upper, lowers).walk()}
    visible = {e.path for e in layers.merged_view(upper, lowers).walk() if e.state == VISIBLE}
    assert visible - {"/"} == set(kernel)
    assert {p: model[p] for p in kernel} == kernel

    rows = drawn(upper, lowers)
    assert {p for p, (layer, _) in rows.items() if not layer.startswith("✗")} - {"/"} == set(kernel)
    layer_dirs = dict(zip(layers.layer_names(len(lowers)), [upper, *lowers], strict=True))
    for path, (layer, _) in rows.items():
        if layer.startswith("✗"):  # not in the view, but in the layer the picture names
            assert path not in kernel
            for name in layer[2:].split("+") if layer != "✗" else []:
                assert os.path.lexists(layer_dirs[name] / path[1:]), path
            continue
        seen, real = merged / path[1:], [layer_dirs[name] / path[1:] for name in layer.split("+")]
        if seen.is_dir() and not seen.is_symlink():
            assert all(r.is_dir() and not r.is_symlink() for r in real), path
        else:  # one layer provides it: the kernel shows that layer's entry
            (source,) = real
            assert ftype_of(source.lstat().st_mode) == ftype_of(seen.lstat().st_mode), path
            if seen.is_symlink():
                assert os.readlink(source) == os.readlink(seen), path
            elif seen.is_file():
                assert source.read_bytes() == seen.read_bytes(), path


@pytest.mark.root
def test_one_lower_agrees_with_the_kernel(
    one_lower: tuple[Path, Path], mount_overlay: Mount
) -> None:
    upper, image = one_lower
    assert_agrees_with_the_kernel(upper, [image], mount_overlay(upper, [image]))


@pytest.mark.root
def test_two_lowers_agree_with_the_kernel(
    two_lowers: tuple[Path, list[Path]], mount_overlay: Mount
) -> None:
    upper, lowers = two_lowers
    assert_agrees_with_the_kernel(upper, lowers, mount_overlay(upper, lowers))


@pytest.mark.root
def test_odd_hand_made_layers_agree_with_the_kernel(tmp_path: Path, mount_overlay: Mount) -> None:
    """What overlay itself never makes, but a layer from elsewhere may hold."""
    upper, l1, l2 = tmp_path / "upper", tmp_path / "l1", tmp_path / "l2"
    write(l2 / "a" / "deep" / "f")  # layer 1's file hides layer 2's directory
    write(l1 / "a")
    write(l2 / "b")  # and a directory in upper hides layer 1's file, not opaque
    (l2 / "b").unlink()
    write(l1 / "b")
    write(upper / "b" / "inside")
    write(l1 / "c" / "x")  # a file in upper over a lower directory
    write(upper / "c")
    whiteout(upper / "ghost")  # whiteouts over nothing
    whiteout(l1 / "ghost2")
    write(l2 / "ghost2")  # ...that hides something after all
    whiteout(l1 / "ghost3")
    write(l1 / "d" / "keep")  # an opaque dir in layer 1 under a merged dir in upper
    write(l2 / "d" / "gone")
    os.setxattr(l1 / "d", "trusted.overlay.opaque", b"y")
    write(upper / "d" / "mine")
    symlink(upper / "e", "a")  # a symlink in upper over a directory of the image
    write(l1 / "e" / "x")
    write(l1 / "f" / "x")  # an opaque dir in upper over one of layer 1 and one of layer 2
    write(l2 / "f" / "y")
    make_opaque(upper / "f")
    rows = parse(show(upper, [l1, l2]))
    assert rows["/b"] == ("upper", "type changed: the image's file is now a directory")
    assert rows["/ghost"] == ("✗", "a whiteout in upper, over nothing")
    # l1 is the top layer (L2), l2 the base (L1)
    assert rows["/ghost2"] == ("✗ L1", "deleted: a whiteout in layer 2 hides layer 1's file")
    assert rows["/d/gone"][0] == "✗ L1"
    assert rows["/f/x"][0] == "✗ L2" and rows["/f/y"][0] == "✗ L1"
    assert_agrees_with_the_kernel(upper, [l1, l2], mount_overlay(upper, [l1, l2]))


# --- a real container ------------------------------------------------------------------------

SCRIPT = "; ".join([
    "echo bob:x:1000:1000::/home/bob:/bin/sh >> /etc/passwd",  # a copy-up
    "rm /etc/hosts /bin/vi",  # whiteouts
    "echo hello > /etc/motd",  # a new file
    "rm -rf /usr/sbin && mkdir /usr/sbin && touch /usr/sbin/mine",  # an opaque dir
])


@pytest.fixture
def container(minictr) -> tuple[Path, list[Path]]:
    """A busybox container called x that ran SCRIPT and exited: its upper and lowers."""
    minictr("run", "--name", "x", "busybox", "sh", "-c", SCRIPT, check=True)
    (state,) = json.loads(minictr("inspect", "x", check=True).stdout)
    return Path(state["upper"]), [Path(p) for p in state["lower"]]


@pytest.mark.root
def test_a_real_container_as_a_student_sees_it(minictr, container) -> None:
    r = minictr("layers", "x", "--path", "/etc/", check=True)
    assert r.stderr == ""
    rows = parse(r.stdout)
    assert rows["/etc"] == ("upper+image", "copied up from the image: holds changes below")
    assert rows["/etc/group"] == ("image", "")
    assert rows["/etc/hosts"] == ("✗ image", "deleted: a whiteout in upper hides the image's file")
    assert rows["/etc/motd"] == ("upper", "new file")
    layer, note = rows["/etc/passwd"]
    assert layer == "upper" and note.startswith("copied up from the image: content changed")
    assert r.stdout.splitlines()[-1].endswith("1 deleted by whiteouts · 0 hidden by opaque dirs")

    whole = minictr("layers", "x", check=True).stdout
    lines = whole.splitlines()
    assert len(lines) < 45, whole  # busybox's ~300 entries, readable on one screen
    assert any(re.fullmatch(r"│   ├── … \d+ entries +image +\S+ … \S+: unchanged "
                            r"\(all of them: --path /bin\)", line) for line in lines), whole
    assert any(re.fullmatch(r"│   └── sbin/ +upper +opaque: removed and made again; "
                            r"hides the image's \d+ entries", line) for line in lines), whole
    assert any(re.search(r"… \d+ entries +✗ image +\S+ … \S+: hidden by the opaque dir", line)
               for line in lines), whole
    full = parse(minictr("layers", "x", "--path", "/usr/sbin", check=True).stdout)
    assert full["/usr/sbin/mine"] == ("upper", "new file")
    assert sum(1 for layer, _ in full.values() if layer == "✗ image") > 5


@pytest.mark.root
def test_a_running_container(minictr, minictr_root) -> None:
    """The layers are read on the host, so a running container is shown as it is now."""
    proc = start("run", "-i", "--name", "live", "busybox", "sh", "-c",
                 "echo changed >> /etc/group; echo ready; read line; rm /etc/group",
                 env={"MINICTR_ROOT": str(minictr_root)})
    try:
        assert read_line(proc) == "ready"
        r = minictr("layers", "live", "--path", "/etc/group", check=True)
        assert parse(r.stdout)["/etc/group"][0] == "upper"
    finally:
        proc.communicate("go\n", timeout=scaled(30))
    assert proc.returncode == 0
    r = minictr("layers", "live", "--path", "/etc/group")
    assert r.returncode == 125 and "whiteout" in r.stderr


@pytest.mark.root
def test_a_real_container_agrees_with_diff(minictr, container) -> None:
    """Every line of `minictr diff` is in the picture: A and C from upper, D not visible."""
    diff = minictr("diff", "x", check=True).stdout.splitlines()
    assert "D /etc/hosts" in diff and "A /etc/motd" in diff and "C /etc/passwd" in diff
    pictures: dict[str, dict[str, tuple[str, str]]] = {}
    for line in diff:
        kind, path = line.split(" ", 1)
        parent = path.rsplit("/", 1)[0] or "/"
        if parent not in pictures:
            pictures[parent] = parse(minictr("layers", "x", "--path", parent, check=True).stdout)
        layer, note = pictures[parent][path]
        if kind == "A":
            assert layer == "upper" and note.startswith("new"), (line, layer, note)
        elif kind == "C":
            assert layer.startswith("upper"), (line, layer, note)
        else:
            assert layer == "✗ image", (line, layer, note)


@pytest.mark.root
def test_a_real_container_agrees_with_the_kernel(container, mount_overlay: Mount) -> None:
    upper, lowers = container
    assert_agrees_with_the_kernel(upper, lowers, mount_overlay(upper, lowers))


@pytest.mark.root
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nosuch"], ["no such container: nosuch"]),
        (["x", "--path", "etc"], ["not absolute"]),
        (["x", "--path", "/etc/../root"], ["contains '..'"]),
        (["x", "--path", "/nope"], ["/nope is not in the merged view"]),
        (["x", "--path", "/etc/hosts"], ["not in the merged view", "whiteout"]),
    ],
)
def test_bad_input_is_one_line_and_125(minictr, container, args: list[str], words: list[str]):
    r = minictr("layers", *args)
    assert r.returncode == 125, r
    assert r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("minictr: ")
    for word in words:
        assert word in line
