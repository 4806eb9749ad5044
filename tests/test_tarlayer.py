"""minictr.images.tarlayer: layer tars in and out of overlay's form, checked with real files, real
tars (Python's tarfile, GNU tar, umoci) and a real overlay mount; and a corpus of hostile
archives that must be refused without writing anything outside the destination.

Whiteouts (mknod), trusted.* xattrs, chown and mount need root: those tests are ``root``.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import socket
import stat
import struct
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.images import tarlayer
from minictr.images.tarlayer import LayerStats, diff_id_of, extract_layer, write_layer
from minictr.run.overlay import mount_options
from minictr.show.diff import OPAQUE_XATTR, ftype_of, is_opaque

MTIME = 1_700_000_000  # 2023-11-14, a whole second: tar headers keep whole seconds
# A VFS_CAP_REVISION_2 security.capability value, as `setcap cap_setuid,cap_net_raw+ep`
# writes it: bits 7 and 13, so a byte 0x80 that is not UTF-8 (PAX records are UTF-8 text).
# See capabilities(7), linux/capability.h struct vfs_cap_data.
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13 | 1 << 7, 0, 0, 0)

# --- building tars in memory ---------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes | None]


def header(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **fields: object
           ) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def file(name: str, data: bytes = b"", mode: int = 0o644, **fields: object) -> Member:
    return header(name, mode=mode, size=len(data), **fields), data


def directory(name: str, mode: int = 0o755, **fields: object) -> Member:
    return header(name, tarfile.DIRTYPE, mode, **fields), None


def symlink(name: str, target: str) -> Member:
    return header(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def hardlink(name: str, target: str) -> Member:
    return header(name, tarfile.LNKTYPE, linkname=target), None


def device(name: str, kind: bytes, major: int, minor: int) -> Member:
    return header(name, kind, 0o600, devmajor=major, devminor=minor), None


def tar_of(*members: Member) -> bytes:
    """Shell: tar -cf - ...    (POSIX/PAX format, as Docker and umoci write layers)"""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def extract(data: bytes, dest: Path) -> LayerStats:
    dest.mkdir()
    return extract_layer(io.BytesIO(data), dest)


def whiteout(path: Path) -> None:
    """Shell: mknod PATH c 0 0"""
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def is_whiteout_at(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# --- comparing trees -----------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below root: type, mode, owner, mtime, and what it holds (content and
    capability, link target, hard link group, opaque). Whiteouts: only that they are one."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):  # never follows a symlink
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel, st = str(path.relative_to(root)), path.lstat()
            found[rel] = describe(path, st)
            if stat.S_ISREG(st.st_mode):
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    for names in inodes.values():
        for rel in names:
            found[rel] += (tuple(sorted(names)),)  # the names that share the inode
    return found


def describe(path: Path, st: os.stat_result) -> tuple[object, ...]:
    kind = ftype_of(st.st_mode)
    if stat.S_ISCHR(st.st_mode):
        return ("whiteout" if st.st_rdev == 0 else kind, st.st_rdev)
    common = (kind, st.st_uid, st.st_gid, int(st.st_mtime))
    if stat.S_ISLNK(st.st_mode):
        return (*common, os.readlink(path))
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return (*common, oct(mode), is_opaque(path))
    if stat.S_ISREG(st.st_mode):
        return (*common, oct(mode), hashlib.sha256(path.read_bytes()).hexdigest(), caps(path))
    return (*common, oct(mode))


def caps(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return None


def layer_digest(src: Path) -> tuple[str, bytes]:
    out = io.BytesIO()
    digest = write_layer(src, out)
    return digest, out.getvalue()


# --- round trip: overlay form -> tar -> overlay form ---------------------------------------


def make_overlay_form_tree(root: Path) -> None:
    """Everything a layer or an upperdir can hold, in overlay's form."""
    for d in ("bin", "etc", "home/user", "opt", "ro", "run", "shared", "tmp", "deep/" * 12):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/shadow").write_text("root:*::0:::::\n")
    os.chown(root / "etc/shadow", 0, 42)
    (root / "etc/shadow").chmod(0o640)
    (root / "bin/busybox").write_bytes(os.urandom(300_000))
    (root / "bin/busybox").chmod(0o755)
    os.link(root / "bin/busybox", root / "bin/ls")  # a hard link within the layer
    (root / "bin/su").write_bytes(b"\x7fELF su")
    (root / "bin/su").chmod(0o4755)  # setuid: kept
    (root / "bin/ping").write_bytes(b"\x7fELF ping")
    (root / "bin/ping").chmod(0o755)
    os.setxattr(root / "bin/ping", "security.capability", CAP_NET_RAW)  # setcap cap_net_raw+ep
    os.setxattr(root / "etc/passwd", "user.note", b"dropped")  # not kept: not a capability
    (root / "bin/sh").symlink_to("/bin/busybox")  # absolute: resolved in the container
    (root / "lib").symlink_to("usr/lib")  # dangling, relative
    (root / "etc/alt").symlink_to("../bin")
    os.chown(root / "etc/alt", 7, 7, follow_symlinks=False)
    (root / "home/user/.profile").write_text("PS1='$ '\n")
    os.chown(root / "home/user/.profile", 1000, 1000)
    os.chown(root / "home/user", 1000, 1000)
    (root / "home/user").chmod(0o700)
    (root / "tmp").chmod(0o1777)  # sticky
    (root / "shared").chmod(0o2775)  # setgid directory
    (root / "ro/file").write_text("in a read-only directory\n")
    (root / "ro").chmod(0o555)  # its mode must be set after its entries
    os.mkfifo(root / "run/fifo", 0o620)
    with socket.socket(socket.AF_UNIX) as sock:  # not in a tar: skipped
        sock.bind(str(root / "run/sock"))
    (root / "empty").touch()
    (root / "naïve café.txt").write_text("utf-8 name\n")
    (root / ("deep/" * 12) / ("long-name-" * 20)).write_text("a 300-byte path: PAX\n")
    whiteout(root / "removed")  # deleted in this layer
    whiteout(root / "etc/gone1")
    os.link(root / "etc/gone1", root / "etc/gone2")  # overlay shares one whiteout inode
    (root / "opt/new").write_text("only this is in /opt now\n")
    os.setxattr(root / "opt", OPAQUE_XATTR, b"y")
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):  # mtimes, dirs last
        for name in filenames + dirnames:
            os.utime(Path(dirpath, name), (MTIME, MTIME - 3600), follow_symlinks=False)


@pytest.mark.root
def test_round_trip_keeps_every_entry_and_the_digest(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    make_overlay_form_tree(src)

    digest, data = layer_digest(src)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert layer_digest(src) == (digest, data)  # deterministic
    stats = extract(data, dest)

    expected = tree(src)
    del expected["run/sock"]
    assert tree(dest) == expected
    assert caps(dest / "bin/ping") == CAP_NET_RAW
    assert os.listxattr(dest / "etc/passwd") == []
    assert stats.diff_id == digest
    assert stats.whiteouts == 3 and stats.opaque_dirs == 1
    files = {(st.st_ino, st.st_size) for st in map(os.lstat, src.rglob("*"))
             if stat.S_ISREG(st.st_mode)}  # bin/ls is bin/busybox: counted once
    assert stats.bytes == sum(size for _, size in files)
    assert layer_digest(dest) == (digest, data)  # the extracted layer writes the same tar


@pytest.mark.root
def test_written_tar_is_an_oci_layer(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_overlay_form_tree(src)
    _, data = layer_digest(src)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    by_name = {m.name: m for m in members}

    assert names.index("opt/.wh..wh..opq") == names.index("opt") + 1  # right after its dir
    assert names.index("etc/.wh.gone1") < names.index("etc/alt")  # whiteouts before siblings
    assert {n for n in names if ".wh." in n} == {
        ".wh.removed", "etc/.wh.gone1", "etc/.wh.gone2", "opt/.wh..wh..opq"}
    assert all(by_name[n].isreg() and by_name[n].size == 0 for n in names if ".wh." in n)
    assert by_name["bin/ls"].islnk() and by_name["bin/ls"].linkname == "bin/busybox"
    assert by_name["bin/su"].mode == 0o4755
    assert "run/sock" not in names
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert by_name["bin/ping"].pax_headers["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == CAP_NET_RAW
    assert not any("trusted." in k or "user." in k for m in members for k in m.pax_headers)
    # another implementation reads it too
    listing = subprocess.run(["tar", "-tvf", "-"], input=data, capture_output=True, check=True)
    assert b"bin/ls link to bin/busybox" in listing.stdout


@pytest.mark.root
def test_reads_what_gnu_tar_writes(tmp_path: Path) -> None:
    """GNU tar, the other implementation: PAX records (atime, ctime, fractional mtime) and
    its xattr records; only security.capability comes through."""
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin/ping").write_bytes(b"\x7fELF ping")
    os.setxattr(src / "bin/ping", "security.capability", CAP_NET_RAW)
    os.setxattr(src / "bin/ping", "user.dropped", b"1")
    os.link(src / "bin/ping", src / "bin/ping6")
    (src / "bin/sh").symlink_to("/bin/busybox")
    os.mkfifo(src / "fifo")
    (src / "su").write_text("su")
    os.chown(src / "su", 0, 4)
    (src / "su").chmod(0o4750)
    data = subprocess.run(["tar", "-cf", "-", "--format=posix", "--xattrs",
                           "--xattrs-include=*", "--numeric-owner", "-C", src, "."],
                          capture_output=True, check=True).stdout
    extract(data, tmp_path / "dest")
    assert tree(tmp_path / "dest") == tree(src)
    assert os.listxattr(tmp_path / "dest/bin/ping") == ["security.capability"]


def test_write_layer_refuses_a_name_that_reads_as_a_whiteout(tmp_path: Path) -> None:
    (tmp_path / ".wh.file").touch()
    with pytest.raises(StepError, match=r"'\.wh\.file'.*whiteout") as e:
        write_layer(tmp_path, io.BytesIO())
    assert e.value.step == "export layer"



def test_a_file_that_shrinks_while_it_is_read_is_padded_with_zeros(tmp_path: Path) -> None:
    """commit --pause=false reads a running container's files: one may shrink between the
    lstat that wrote its header and the read of its data. tar pads it, as GNU tar does;
    tarfile alone fails the whole layer ("unexpected end of data")."""
    (tmp_path / "n").write_bytes(b"12345\n")
    st = os.lstat(tmp_path / "n")
    os.truncate(tmp_path / "n", 2)  # as the container's `echo $i > /n` does, then writes
    buf = io.BytesIO()
    top = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with tarfile.open(fileobj=buf, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("n")
            tarlayer._write_file(tar, (top, "n"), info, st, {})
    finally:
        os.close(top)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        member = tar.extractfile("n")
        assert member is not None and member.read() == b"12\0\0\0\0"

# --- applying layers: what extract_layer makes of each member ------------------------------


@pytest.mark.parametrize("compression", ["tar", "gzip", "bzip2", "xz"])
def test_compressed_layers_progress_and_diff_id(tmp_path: Path, compression: str) -> None:
    plain = tar_of(directory("./"), directory("./etc"), file("./etc/hosts", b"127.0.0.1 lo\n"),
                   file("usr/bin/tool", b"x" * 100_000, 0o755))
    compress = {"tar": bytes, "gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}
    data = compress[compression](plain)
    seen: list[int] = []
    (tmp_path / "dest").mkdir()

    stats = extract_layer(io.BytesIO(data), tmp_path / "dest", progress=seen.append)

    assert stats == LayerStats(files=3, bytes=100_013, diff_id="sha256:"
                               + hashlib.sha256(plain).hexdigest())
    assert seen == sorted(seen) and seen[-1] == len(data)
    assert (tmp_path / "dest/etc/hosts").read_text() == "127.0.0.1 lo\n"
    assert stat.S_IMODE((tmp_path / "dest/usr").stat().st_mode) == 0o755  # made for usr/bin
    (tmp_path / "layer").write_bytes(data)
    assert diff_id_of(tmp_path / "layer") == stats.diff_id


def test_duplicates_the_later_entry_wins(tmp_path: Path) -> None:
    data = tar_of(
        file("a", b"first"), file("a", b"second"),  # file over file
        directory("d"), file("d/x"), file("d", b"now a file"),  # file over a directory
        file("f"), directory("f"),  # directory over a file
        directory("m", 0o700), file("m/kept"), directory("m", 0o750),  # directories merge
        symlink("s", "/etc"), file("s", b"not through the symlink"),  # replaces the link
    )
    extract(data, tmp_path / "dest")
    dest = tmp_path / "dest"
    assert (dest / "a").read_bytes() == b"second"
    assert (dest / "d").read_bytes() == b"now a file"
    assert (dest / "f").is_dir()
    assert (dest / "m/kept").exists() and stat.S_IMODE((dest / "m").stat().st_mode) == 0o750
    assert not (dest / "s").is_symlink() and (dest / "s").read_bytes().startswith(b"not")


def test_directory_attributes_are_set_after_their_entries(tmp_path: Path) -> None:
    data = tar_of(directory("ro", 0o555), directory("ro/sub", 0o700), file("ro/sub/f"),
                  directory("sticky", 0o1777), file("setuid", b"#!", 0o4755))
    extract(data, tmp_path / "dest")
    for name, mode in [("ro", 0o555), ("ro/sub", 0o700), ("sticky", 0o1777), ("setuid", 0o4755)]:
        st = (tmp_path / "dest" / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (mode, MTIME), name


def test_symlinks_are_kept_as_they_are_and_never_followed(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    data = tar_of(symlink("abs", str(tmp_path / "outside")), symlink("rel", "../outside"),
                  symlink("dangling", "/nonexistent/x"), file("f"), hardlink("h", "./f"))
    extract(data, tmp_path / "dest")
    assert os.readlink(tmp_path / "dest/abs") == str(tmp_path / "outside")
    assert os.readlink(tmp_path / "dest/rel") == "../outside"
    assert os.lstat(tmp_path / "dest/h").st_ino == os.lstat(tmp_path / "dest/f").st_ino
    assert list((tmp_path / "outside").iterdir()) == []


def test_destination_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "old").touch()
    with pytest.raises(StepError, match="not empty"):
        extract_layer(io.BytesIO(tar_of(file("x"))), tmp_path)


@pytest.mark.root
def test_whiteouts_and_opaque_markers_become_overlay_form(tmp_path: Path) -> None:
    data = tar_of(
        file(".wh.gone", mode=0), file("etc/.wh.hosts"),  # .wh.NAME -> char 0:0 NAME
        directory("opt"), file("opt/new"), file("opt/.wh..wh..opq"),  # marker after entries
        file("var/.wh..wh..opq"),  # marker before (without) its directory's entry
        file(".wh.both"), directory("both"), file("both/x"),  # same layer: dir + whiteout
        file("bin/tool", b"kept"), file("bin/.wh.tool"),  # same layer: the file hides lower
        device("already", tarfile.CHRTYPE, 0, 0),  # some exporters tar an upperdir as is
        (header("tarred-upper", tarfile.DIRTYPE, 0o755,
                pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y",
                             "SCHILY.xattr.trusted.overlay.redirect": "/etc",
                             "SCHILY.xattr.user.x": "1"}), None),
    )
    dest = tmp_path / "dest"
    stats = extract(data, dest)

    for name in ("gone", "etc/hosts", "already"):
        assert is_whiteout_at(dest / name), name
    for name in ("opt", "var", "both", "tarred-upper"):
        assert is_opaque(dest / name), name
    assert not is_opaque(dest / "etc") and not is_opaque(dest / "bin")
    assert (dest / "bin/tool").read_bytes() == b"kept" and (dest / "both/x").is_file()
    assert os.listxattr(dest / "tarred-upper") == [OPAQUE_XATTR]  # nothing else copied
    assert sorted(p.name for p in dest.rglob(".wh.*")) == []
    assert (stats.whiteouts, stats.opaque_dirs) == (3, 4)


@pytest.mark.root
def test_opaque_marker_at_the_root_is_kept_as_the_xattr(tmp_path: Path) -> None:
    """Overlay ignores it at a layer's root (checked by hand): the image must drop the
    layers below such a layer. The xattr on the layer directory says so."""
    extract(tar_of(file(".wh..wh..opq"), file("only")), tmp_path / "dest")
    assert is_opaque(tmp_path / "dest")


# --- a real overlay: the kernel agrees with the conversion ---------------------------------


@contextmanager
def overlay(lowers: list[Path], base: Path) -> Iterator[Path]:
    """The layers mounted as minictr mounts them, unmounted after.

    Shell: mount -t overlay overlay -o lowerdir=L2:L1,upperdir=U,workdir=W,redirect_dir=off,... M
    """
    upper, work, merged = base / "upper", base / "work", base / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    options = mount_options(lowers, upper, work)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, merged], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", merged], check=True)


def merged_files(merged: Path) -> dict[str, bytes | None]:
    """Shell: find MERGED    (with each file's content)"""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(merged):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(merged))] = path.read_bytes() if path.is_file() else None
    return found


@pytest.mark.root
def test_the_kernel_hides_what_the_markers_delete(tmp_path: Path) -> None:
    l1 = tar_of(file("file", b"1"), file("keep", b"1"), directory("dir"), file("dir/a", b"1"),
                directory("dir/sub"), file("dir/sub/b", b"1"), file("replaced/old", b"1"),
                file("bin/tool", b"1"))
    l2 = tar_of(file(".wh.file"), directory("dir"), file("dir/new", b"2"),
                file("dir/.wh..wh..opq"),  # after the entry it must not hide (layer.md)
                file(".wh.replaced"), file("replaced/fresh", b"2"),
                file("bin/.wh.tool"), file("bin/tool", b"2"))
    extract(l1, tmp_path / "l1")
    extract(l2, tmp_path / "l2")

    with overlay([tmp_path / "l2", tmp_path / "l1"], tmp_path) as merged:
        view = merged_files(merged)

    assert view == {"keep": b"1", "dir": None, "dir/new": b"2", "replaced": None,
                    "replaced/fresh": b"2", "bin": None, "bin/tool": b"2"}


@pytest.mark.root
def test_umoci_layers_extract_to_the_right_view(tmp_path: Path) -> None:
    """umoci writes the layers; for a directory removed and made again it writes a
    whiteout per old entry (explicit whiteouts, as layer.md recommends), not .wh..wh..opq."""
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed")
    layout, bundle = tmp_path / "L", tmp_path / "B"

    def umoci(*args: str | Path) -> None:
        subprocess.run(["umoci", *map(str, args)], check=True, capture_output=True)

    umoci("init", "--layout", layout)
    umoci("new", "--image", f"{layout}:t")
    umoci("unpack", "--image", f"{layout}:t", bundle)
    rootfs = bundle / "rootfs"
    (rootfs / "d/sub").mkdir(parents=True)
    for name in ("d/a", "d/sub/b", "f", "keep"):
        (rootfs / name).write_text(f"{name} 1\n")
    # --refresh-bundle: the next repack diffs against this layer, not the empty image
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:t", bundle)
    (rootfs / "f").unlink()
    shutil.rmtree(rootfs / "d")
    (rootfs / "d").mkdir()
    (rootfs / "d/new").write_text("d/new 2\n")
    umoci("repack", "--image", f"{layout}:t", bundle)

    layers, diff_ids = oci_layers(layout)
    assert [m for m, _ in layers] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    dirs = []
    for i, (_, blob) in enumerate(layers):
        dirs.append(tmp_path / f"layer{i}")
        with open(blob, "rb") as f:
            assert extract(f.read(), dirs[-1]).diff_id == diff_ids[i]

    top = dirs[1]
    assert is_whiteout_at(top / "f")
    assert is_whiteout_at(top / "d/a") and is_whiteout_at(top / "d/sub")
    assert not is_opaque(top / "d")
    with overlay(dirs[::-1], tmp_path) as merged:
        assert merged_files(merged) == {"keep": b"keep 1\n", "d": None, "d/new": b"d/new 2\n"}


def oci_layers(layout: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(media type, blob path) of each layer, bottom first, and the config's diff_ids:
    index.json -> manifest blob -> layers[] and config. See image-spec image-layout.md."""
    def blob(digest: str) -> Path:
        return layout / "blobs" / digest.replace(":", "/")

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    layers = [(layer["mediaType"], blob(layer["digest"])) for layer in manifest["layers"]]
    return layers, config["rootfs"]["diff_ids"]


# --- hostile archives: refused, and nothing written outside the destination ----------------

OUTSIDE = "@OUTSIDE@"  # replaced by the test's own directory outside the destination


def _hostile() -> dict[str, tuple[list[Member], str]]:
    """case -> (members, the member the message must name)."""
    return {
        "dotdot": ([file("../evil")], "'../evil'"),
        "absolute": ([file("/abs")], "'/abs'"),
        "dotdot-inside": ([file("a/../../x")], "'a/../../x'"),
        "through-symlink": ([symlink("link", OUTSIDE), file("link/pwned")], "'link/pwned'"),
        "through-relative-symlink": ([symlink("link", "../outside"), file("link/pwned")],
                                     "'link/pwned'"),
        "through-deep-symlink": ([directory("d"), symlink("d/link", OUTSIDE),
                                  file("d/link/sub/pwned")], "'d/link/sub/pwned'"),
        "dir-through-symlink": ([symlink("link", OUTSIDE), directory("link/new")],
                                "'link/new'"),
        "dir-replaced-by-symlink": ([directory("d"), file("d/f"), symlink("d", OUTSIDE),
                                     file("d/pwned")], "'d/pwned'"),
        "whiteout-through-symlink": ([symlink("link", OUTSIDE), file("link/.wh.secret")],
                                     "'link/.wh.secret'"),
        "opaque-through-symlink": ([symlink("link", OUTSIDE), file("link/.wh..wh..opq")],
                                   "'link/.wh..wh..opq'"),
        "hardlink-absolute": ([hardlink("h", "/etc/shadow")], "'h'"),
        "hardlink-dotdot": ([hardlink("h", "../outside/secret")], "'h'"),
        "hardlink-through-symlink": ([symlink("link", OUTSIDE), hardlink("h", "link/secret")],
                                     "'h'"),
        "hardlink-missing": ([hardlink("h", "nothing")], "'h'"),
        "hardlink-to-dir": ([directory("d"), hardlink("h", "d")], "'h'"),
        "hardlink-to-symlink": ([symlink("s", "/etc/shadow"), hardlink("h", "s")], "'h'"),
        "hardlink-to-itself": ([file("h"), hardlink("h", "./h")], "'h'"),
        "block-device": ([device("dev/sda", tarfile.BLKTYPE, 8, 0)], "'dev/sda'"),
        "char-device-1-3": ([device("dev/null", tarfile.CHRTYPE, 1, 3)], "'dev/null'"),
        "unknown-type": ([(header("vol", b"V"), None)], "'vol'"),
        "file-as-parent": ([file("f"), file("f/x")], "'f/x'"),
        "whiteout-is-a-dir": ([directory(".wh.x")], "'.wh.x'"),
        "whiteout-of-dot": ([file("a/.wh..")], "'a/.wh..'"),
        "whiteout-of-nothing": ([file(".wh.")], "'.wh.'"),
        "below-a-whiteout": ([file(".wh.x/y")], "'.wh.x/y'"),
        "aufs-metadata": ([file(".wh..wh.aufs")], "'.wh..wh.aufs'"),
    }


HOSTILE = _hostile()


def outside_state(tmp_path: Path) -> dict[str, tuple[object, ...]]:
    """Everything but the destination, with what a write would change; /etc/shadow too."""
    state = {}
    for path in [*tmp_path.rglob("*"), Path("/etc/shadow")]:
        if tmp_path / "dest" not in (path, *path.parents):
            st = path.lstat()
            state[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink,
                                sorted(os.listxattr(path, follow_symlinks=False)))
    return state


@contextmanager
def nothing_written_outside(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret").write_text("secret\n")
    before = outside_state(tmp_path)
    yield
    assert outside_state(tmp_path) == before
    assert not (tmp_path / "outside/pwned").exists()


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_member_is_refused(tmp_path: Path, case: str) -> None:
    members, named = HOSTILE[case]
    outside = str(tmp_path / "outside")
    members = [(_replace_outside(info, outside), data) for info, data in members]
    with nothing_written_outside(tmp_path), pytest.raises(StepError) as e:
        extract(tar_of(*members), tmp_path / "dest")
    assert e.value.step == "import layer"
    assert named in e.value.message and "refused" in e.value.message, e.value.message
    assert e.value.hint


def _replace_outside(info: tarfile.TarInfo, outside: str) -> tarfile.TarInfo:
    info.linkname = info.linkname.replace(OUTSIDE, outside)
    return info


def _cut(data: bytes, at: int) -> bytes:
    return data[:at]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _corrupt() -> dict[str, tuple[bytes, str]]:
    """case -> (archive bytes, words the message must have)."""
    big = tar_of(file("big", os.urandom(20_000)), file("next", b"n"))
    two = tar_of(file("first", b"1" * 512), file("second", b"2"))
    with tarfile.open(fileobj=io.BytesIO(two)) as tar:
        second = tar.getmember("second").offset  # where its header starts
    gz = gzip.compress(big, mtime=0)
    return {
        "cut-in-data": (_cut(big, 512 * 3 + 5000), "'big'"),
        "cut-at-a-header": (_cut(two, second), "end-of-archive"),
        "cut-in-a-header": (_cut(two, second + 100), "end-of-archive"),
        "gzip-cut": (_cut(gz, len(gz) // 2), "gzip"),
        "gzip-corrupt": (_flip(gz, len(gz) // 2), "gzip"),
        "gzip-bad-crc": (_flip(gz, len(gz) - 6), "gzip"),  # tarfile's "r|*" would not see it
        "bzip2-cut": (_cut(bz2.compress(big), 2000), "bzip2"),
        "xz-cut": (_cut(lzma.compress(big), 2000), "xz"),
        "random-bytes": (bytes(range(7, 256)) * 20, "not a tar archive"),
        "empty": (b"", "not a tar archive"),
        "zstd": (b"\x28\xb5\x2f\xfd" + b"\0" * 100, "zstd"),
    }


CORRUPT = _corrupt()


@pytest.mark.parametrize("case", CORRUPT)
def test_truncated_corrupt_or_unknown_archive_is_refused(tmp_path: Path, case: str) -> None:
    data, words = CORRUPT[case]
    with nothing_written_outside(tmp_path), pytest.raises(StepError) as e:
        extract(data, tmp_path / "dest")
    assert e.value.step == "import layer"
    assert words in e.value.message, e.value.message
    if case not in ("random-bytes", "empty", "zstd"):
        assert "truncated or corrupt archive" in e.value.message


def test_an_empty_layer_is_fine(tmp_path: Path) -> None:
    assert extract(tar_of(), tmp_path / "dest").files == 0
