"""Images in and out, end to end through the CLI, with real tools on the other side.

umoci builds multi-layer OCI images (a layer that deletes a file, one that replaces a
directory) and unpacks what `minictr image export` writes; skopeo turns them into the
docker-archive and oci-archive forms; Python's tarfile makes a corpus of hostile archives.
Each is checked as a person could check it: the merged view inside a container, `image
inspect`, `layers`, `df`, and the store on disk. (The modules alone: test_oci, test_tarlayer;
commit, rmi and df: test_images.)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import refused, scaled, tree_digest

pytestmark = pytest.mark.root

# Every entry of a root filesystem, one line each: path, type, mode, owner, link count and the
# start of its content's sha256 (mtimes differ by design: a copy-up or an unpack sets them).
# The same busybox runs it inside a container and, chrooted, in what umoci unpacked. /proc,
# /dev and /sys are mount points inside a container: not the image's files.
LISTING = r"""
cd / && find . -xdev | sort | while IFS= read -r p; do
  case $p in .|./proc|./proc/*|./dev|./dev/*|./sys|./sys/*) continue;; esac
  if [ -L "$p" ]; then echo "$p -> $(readlink "$p")"
  elif [ -d "$p" ]; then echo "$p/ $(stat -c '%a %u:%g' "$p")"
  elif [ -f "$p" ]; then echo "$p $(stat -c '%a %u:%g %h' "$p") $(sha256sum < "$p" | cut -c1-16)"
  else echo "$p $(stat -c '%F %a' "$p")"; fi
done
"""


def run_tool(*args: str | os.PathLike[str]) -> str:
    """umoci, skopeo, tar, chroot: their output; failing fails the test, showing why."""
    r = subprocess.run([os.fspath(a) for a in args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=scaled(60))
    assert r.returncode == 0, f"{args} exited {r.returncode}: {r.stderr}"
    return r.stdout


def inspect_image(minictr, name: str) -> dict:
    return json.loads(minictr("image", "inspect", name, check=True).stdout)[0]


def digests(minictr, name: str) -> list[str]:
    return [layer["digest"] for layer in inspect_image(minictr, name)["layers"]]


def stored_layers(root: Path) -> set[str]:
    """The layer directories in the store, by their digest."""
    return {f"sha256:{p.name}" for p in (root / "layers").iterdir()
            if p.is_dir() and not p.name.startswith(".")}


def busybox_layer(minictr) -> Path:
    minictr("image", "build", "busybox", check=True)
    return Path(inspect_image(minictr, "busybox")["layers"][0]["path"])


# --- archives made here ------------------------------------------------------------------


def member(name: str, data: bytes = b"", *, mode: int = 0o644, type: bytes = tarfile.REGTYPE,
           link: str = "", dev: tuple[int, int] = (0, 0)) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = type, mode, link, 1_700_000_000
    info.devmajor, info.devminor = dev
    info.size = len(data) if type == tarfile.REGTYPE else 0
    return info, data


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ETC = member("etc/", type=tarfile.DIRTYPE, mode=0o755)  # makes a tar a root filesystem
GOOD_LAYER = tar_bytes(ETC, member("etc/fine", b"a new layer that is fine\n"))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_layout(dest: Path, layers: list[bytes], *, gzipped: bool = False,
               diff_ids: list[str] | None = None) -> list[Path]:
    """An OCI image layout of these layer tars (bottom first), image "img", every digest
    right (but diff_ids, if given); returns the layer blobs' paths."""
    blobs = dest / "blobs/sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict:
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
        return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}

    kind = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzipped else "")
    descs = [put(gzip.compress(t, mtime=0) if gzipped else t, kind) for t in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers",
                         "diff_ids": diff_ids or [sha256(t) for t in layers]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": put(json.dumps(config).encode(),
                              "application/vnd.oci.image.config.v1+json"),
                "layers": descs}
    desc = put(json.dumps(manifest).encode(), manifest["mediaType"])
    desc["annotations"] = {"org.opencontainers.image.ref.name": "img"}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return [blobs / d["digest"][len("sha256:"):] for d in descs]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# --- an image made by umoci ------------------------------------------------------------------


def umoci_image(work: Path, base: Path) -> Path:
    """An OCI layout at work/layout, image "img", made by umoci as a person would:

        L1  the busybox image's files (copied from its layer directory with tar: cp -a would
            keep their nanoseconds, which umoci rounds to the nearest second where minictr's
            layer tars and GNU tar cut them: the same files, but not the same layer)
        L2  rm /etc/hosts; add /etc/added and /home/bob/old
        L3  rm -rf /home; mkdir /home/alice with a note   (the directory replaced)
            rmdir /mnt; a file /mnt                       (a directory replaced by a file)
        config: workdir /home/alice, cmd `cat note`

    `repack --refresh-bundle` after each layer: without it, the bundle's record of what is in
    the image stays the empty one it was unpacked from, and each repack diffs against that.
    """
    layout, bundle = work / "layout", work / "bundle"
    run_tool("umoci", "init", "--layout", layout)
    run_tool("umoci", "new", "--image", f"{layout}:img")
    run_tool("umoci", "unpack", "--image", f"{layout}:img", bundle)
    rootfs = bundle / "rootfs"
    run_tool("sh", "-c", f"tar -C {base} -cf - . | tar -C {rootfs} -xpf -")
    run_tool("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:img", bundle)
    (rootfs / "etc/hosts").unlink()
    (rootfs / "etc/added").write_text("added in L2\n")
    (rootfs / "home/bob").mkdir()
    (rootfs / "home/bob/old").write_text("bob's\n")
    fixed_times(rootfs, "etc", "etc/added", "home", "home/bob", "home/bob/old")
    run_tool("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:img", bundle)
    run_tool("rm", "-rf", rootfs / "home")
    (rootfs / "home/alice").mkdir(parents=True)
    (rootfs / "home/alice/note").write_text("alice's note\n")
    (rootfs / "mnt").rmdir()
    (rootfs / "mnt").write_text("a file now\n")
    fixed_times(rootfs, ".", "home", "home/alice", "home/alice/note", "mnt")
    run_tool("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:img", bundle)
    run_tool("umoci", "config", "--image", f"{layout}:img", "--config.workingdir",
             "/home/alice", "--config.cmd", "cat", "--config.cmd", "note")
    run_tool("rm", "-rf", bundle)
    return layout


def fixed_times(root: Path, *paths: str) -> None:
    """What a layer adds gets a fixed mtime, long past, as in a reproducible build
    (SOURCE_DATE_EPOCH): then no time in the archive is later than the moment it is made."""
    for path in paths:
        os.utime(root / path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)


# What a container of the umoci image sees: L2's deletion, L3's replacements, L1's files.
VIEW_SCRIPT = ("test -e /etc/hosts || echo no-hosts; cat /etc/added; ls /etc; ls /home; "
               "cat /home/alice/note; cat /mnt; /bin/busybox true && echo busybox")
VIEW = ["no-hosts", "added in L2", "added", "group", "hostname", "passwd", "resolv.conf",
        "alice", "alice's note", "a file now", "busybox"]


# --- umoci: three layers in, run, shared -----------------------------------------------------


def test_umoci_image_layers_run_and_are_stored_once(minictr, minictr_root, tmp_path):
    base = busybox_layer(minictr)
    layout = umoci_image(tmp_path, base)
    run_tool("tar", "-C", layout, "-cf", tmp_path / "layout.tar", ".")
    before_import = time.time()

    r = minictr("image", "import", layout, "fromdir", check=True)
    assert r.stdout.startswith("fromdir: 3 layers")
    minictr("image", "import", tmp_path / "layout.tar", "fromtar", check=True)

    layers = digests(minictr, "fromdir")
    assert len(layers) == 3
    assert digests(minictr, "fromtar") == layers
    # umoci's L1 holds exactly the busybox image's files: it IS that layer, stored once.
    assert layers[0] == digests(minictr, "busybox")[0]
    assert stored_layers(minictr_root) == set(layers)
    # A stored layer holds the archive's times, never the import's: so the same archive,
    # imported at any later moment, names the same layer. (umoci leaves /home out of L3,
    # which has only home/alice/ and home/.wh.bob: minictr makes /home itself.)
    for digest in layers[1:]:
        for dirpath, dirnames, filenames in os.walk(base.parent / digest[len("sha256:"):]):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                assert path.lstat().st_mtime <= before_import, path

    config = inspect_image(minictr, "fromtar")["config"]
    assert (config["cmd"], config["workdir"]) == (["cat", "note"], "/home/alice")
    assert minictr("run", "--rm", "fromtar").stdout == "alice's note\n"
    for image in ("fromdir", "fromtar"):
        out = minictr("run", "--rm", image, "sh", "-c", VIEW_SCRIPT, check=True).stdout
        assert out.split("\n")[:-1] == VIEW

    minictr("run", "--name", "c1", "fromdir", "true", check=True)
    out = minictr("layers", "c1", check=True).stdout
    assert "L3 (top), L2, L1 = the image's layers" in out
    assert re.search(r"hosts +✗ L1 +deleted: a whiteout in layer 2", out), out
    assert re.search(r"added +L2\n", out), out
    assert re.search(r"alice/ +L3\n", out), out
    assert re.search(r"bob/ +✗ L2 +deleted: a whiteout in layer 3", out), out
    assert re.search(r"mnt +L3 +hides layer 1's directory", out), out
    assert re.search(r"passwd +L1\n", out), out

    df = minictr("df", check=True).stdout
    rows = [line for line in df.splitlines() if re.match(r"[0-9a-f]{12} ", line)]
    assert len(rows) == 3  # 3 layers on disk for 3 images and a container: 7 layers in use
    base_row = next(r for r in rows if r.startswith(layers[0][7:19]))
    assert "image busybox, image fromdir, image fromtar, container c1" in base_row


# --- skopeo: docker-archive and oci-archive ---------------------------------------------------


def test_skopeo_archives_import_run_and_share_layers(minictr, minictr_root, tmp_path):
    layout = umoci_image(tmp_path, busybox_layer(minictr))
    minictr("image", "import", layout, "umoci", check=True)
    docker, oci = tmp_path / "docker.tar", tmp_path / "oci.tar"
    run_tool("skopeo", "copy", "-q", f"oci:{layout}:img", f"docker-archive:{docker}:u/img:1")
    run_tool("skopeo", "copy", "-q", f"oci:{layout}:img", f"oci-archive:{oci}:img")
    assert "manifest.json" in run_tool("tar", "-tf", docker).split()  # docker save's form

    r = minictr("image", "import", docker, "fromdocker", check=True)
    assert r.stdout.startswith("fromdocker: 3 layers")
    minictr("image", "import", oci, "fromoci", check=True)

    layers = digests(minictr, "umoci")
    assert digests(minictr, "fromdocker") == digests(minictr, "fromoci") == layers
    assert stored_layers(minictr_root) == set(layers)  # one copy of each, as before
    for image in ("fromdocker", "fromoci"):
        assert minictr("run", "--rm", image).stdout == "alice's note\n"  # the config came too
        out = minictr("run", "--rm", image, "sh", "-c", VIEW_SCRIPT, check=True).stdout
        assert out.split("\n")[:-1] == VIEW
    assert "docker-archive" in inspect_image(minictr, "fromdocker")["source"]
    assert "oci-layout-tar" in inspect_image(minictr, "fromoci")["source"]


def test_skopeo_zstd_layers_are_the_same_layers(minictr, minictr_root, tmp_path):
    layout = umoci_image(tmp_path, busybox_layer(minictr))
    zstd = tmp_path / "zstd"
    run_tool("skopeo", "copy", "-q", "--dest-compress-format", "zstd", "--dest-compress",
             f"oci:{layout}:img", f"oci:{zstd}:img")
    minictr("image", "import", layout, "gz", check=True)
    minictr("image", "import", zstd, "z", check=True)
    assert digests(minictr, "z") == digests(minictr, "gz")  # one tar, two compressions


# --- export: commit, export, umoci unpack, compare ---------------------------------------------


def test_export_of_a_commit_unpacks_to_the_containers_final_view(minictr, minictr_root,
                                                                 tmp_path):
    minictr("image", "build", "busybox", check=True)
    changes = ("rm /etc/hosts; rm -rf /usr/sbin && mkdir /usr/sbin && echo only > "
               "/usr/sbin/only; echo hi > /root/new; ln /root/new /root/hard; "
               "ln -s ../root/new /etc/link; chmod 600 /etc/passwd; mkdir -p /var/a/b; "
               "chown 1:2 /var/a/b; mkfifo /tmp/fifo")
    r = minictr("run", "--name", "c1", "busybox", "sh", "-c", f"{changes}\n{LISTING}",
                check=True)
    final_view = r.stdout
    assert "./usr/sbin/only " in final_view and "./etc/hosts " not in final_view
    upper = Path(json.loads(minictr("inspect", "c1", check=True).stdout)[0]["upper"])
    assert os.getxattr(upper / "usr/sbin", "trusted.overlay.opaque") == b"y"  # opaque dir
    assert os.stat(upper / "etc/hosts", follow_symlinks=False).st_rdev == 0  # a whiteout
    minictr("commit", "c1", "snap", check=True)

    out = tmp_path / "out.tar"
    r = minictr("image", "export", "snap", out, check=True)
    assert f"oci-archive:{out}:snap" in r.stdout
    layout, bundle = tmp_path / "L", tmp_path / "bundle"
    layout.mkdir()
    run_tool("tar", "-xf", out, "-C", layout)
    run_tool("umoci", "unpack", "--image", f"{layout}:snap", bundle)
    unpacked = run_tool("chroot", bundle / "rootfs", "/bin/sh", "-c", LISTING)
    assert unpacked.splitlines() == final_view.splitlines()
    assert "./tmp/fifo fifo 644" in unpacked
    process = json.loads((bundle / "config.json").read_text())["process"]
    assert process["args"][:2] == ["sh", "-c"]  # the container's command, as docker commit

    info = json.loads(run_tool("skopeo", "inspect", f"oci-archive:{out}:snap"))
    assert len(info["Layers"]) == 2 and info["Os"] == "linux"
    # and back: the same layers, already stored
    layers_before = stored_layers(minictr_root)
    minictr("image", "import", out, "back", check=True)
    assert digests(minictr, "back") == digests(minictr, "snap")
    assert stored_layers(minictr_root) == layers_before
    again = minictr("run", "--rm", "back", "sh", "-c", LISTING, check=True).stdout
    assert again == final_view


def test_export_refusals_change_nothing(minictr, minictr_root, tmp_path):
    minictr("image", "build", "busybox", check=True)
    out = tmp_path / "out.tar"
    out.write_bytes(b"mine")
    refused(minictr("image", "export", "busybox", out), "exists")
    assert out.read_bytes() == b"mine"
    refused(minictr("image", "export", "nosuch", tmp_path / "new.tar"), "no such image")
    refused(minictr("image", "export", "busybox", tmp_path / "no/dir/x.tar"),
            "not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar"]


# --- rootfs tarballs ---------------------------------------------------------------------------


@pytest.mark.parametrize("flags", ["-cf", "-czf"])
def test_rootfs_tarball(minictr, minictr_root, tmp_path, flags):
    base = busybox_layer(minictr)
    tarball = tmp_path / ("rootfs.tar" if flags == "-cf" else "rootfs.tar.gz")
    run_tool("tar", "-C", base, flags, tarball, ".")
    r = minictr("image", "import", tarball, "rootfs", check=True)
    assert r.stdout.startswith("rootfs: 1 layer,")
    assert digests(minictr, "rootfs") == digests(minictr, "busybox")  # the same files
    assert inspect_image(minictr, "rootfs")["config"]["cmd"] == ["/bin/sh"]
    assert minictr("run", "--rm", "rootfs", "/bin/sh", "-c", "echo ok").stdout == "ok\n"


def test_setuid_files_are_kept(minictr, minictr_root, tmp_path):
    """setuid, setgid and sticky bits survive an import and an export, as with Docker and
    umoci: images need them (su, passwd, /tmp). A decision documented in minictr.images.tarlayer."""
    base = busybox_layer(minictr)
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(base, arcname=".")
        for info, data in (member("usr/bin/su-like", b"#!/bin/sh\n", mode=0o4755),
                           member("usr/bin/sg-like", b"#!/bin/sh\n", mode=0o2711),
                           member("shared", mode=0o1777, type=tarfile.DIRTYPE)):
            tar.addfile(info, io.BytesIO(data))
    minictr("image", "import", tarball, "suid", check=True)
    r = minictr("run", "--rm", "suid", "stat", "-c", "%a", "/usr/bin/su-like",
                "/usr/bin/sg-like", "/shared", check=True)
    assert r.stdout.split() == ["4755", "2711", "1777"]

    minictr("image", "export", "suid", tmp_path / "out.tar", check=True)
    (tmp_path / "L").mkdir()
    run_tool("tar", "-xf", tmp_path / "out.tar", "-C", tmp_path / "L")
    run_tool("umoci", "unpack", "--image", f"{tmp_path / 'L'}:suid", tmp_path / "bundle")
    rootfs = tmp_path / "bundle/rootfs"
    modes = [oct(os.stat(rootfs / p).st_mode & 0o7777)
             for p in ("usr/bin/su-like", "usr/bin/sg-like", "shared")]
    assert modes == ["0o4755", "0o2711", "0o1777"]


# --- hostile and broken archives ---------------------------------------------------------------


Case = Callable[[Path, Path], tuple[Path, tuple[str, ...]]]  # (work, outside) -> archive, words


def rootfs_case(*members, words: tuple[str, ...]) -> Case:
    """A root filesystem tarball: etc/, then these members."""
    def make(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
        path = work / "rootfs.tar"
        path.write_bytes(tar_bytes(ETC, *(m(outside) if callable(m) else m for m in members)))
        return path, words
    return make


def layered_case(*members, words: tuple[str, ...]) -> Case:
    """The same members as the second layer of an OCI layout, above a good first layer: what
    the first layer added must go again."""
    def make(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
        bad = tar_bytes(*(m(outside) if callable(m) else m for m in members))
        oci_layout(work / "layout", [GOOD_LAYER, bad])
        return work / "layout", words
    return make


def up_to(outside: Path) -> str:
    """A relative path from any depth in the store up to /, then down to outside."""
    return "../" * 40 + str(outside).lstrip("/")


def dotdot(outside):
    return member(f"etc/{up_to(outside)}/dotdot", b"escaped\n")


def absolute(outside):
    return member(f"{outside}/absolute", b"escaped\n")


def symlink_out(outside):
    return member("etc/out", type=tarfile.SYMTYPE, link=str(outside))


def through_symlink(outside):
    return member("etc/out/through", b"escaped\n")


def hardlink_abs(outside):
    return member("etc/hard", type=tarfile.LNKTYPE, link=f"{outside}/victim")


def hardlink_rel(outside):
    return member("etc/hard", type=tarfile.LNKTYPE, link=f"{up_to(outside)}/victim")


def hardlink_via_symlink(outside):
    return member("etc/hard", type=tarfile.LNKTYPE, link="etc/out/victim")


BLOCK = member("etc/sda", type=tarfile.BLKTYPE, dev=(8, 0))
NULL = member("etc/null", type=tarfile.CHRTYPE, dev=(1, 3))
BIG = member("etc/big", random.Random(1).randbytes(20_000))


def truncated(work: Path, outside: Path, cut: int, gzipped: bool = False) -> Path:
    data = tar_bytes(ETC, BIG, member("etc/after", b"x"))
    data = gzip.compress(data, mtime=0) if gzipped else data
    path = work / "cut.tar"
    path.write_bytes(data[:cut])
    return path


def corrupt_gzip(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    path = work / "rootfs.tar.gz"
    path.write_bytes(gzip.compress(tar_bytes(ETC, BIG), mtime=0))
    flip_byte(path, 5_000)
    return path, ("corrupt",)


def random_bytes(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    path = work / "random.bin"
    path.write_bytes(random.Random(2).randbytes(8192))
    return path, ("not an image minictr can read",)


def empty_file(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    path = work / "empty.tar"
    path.write_bytes(b"")
    return path, ("not an image minictr can read",)


def no_root_filesystem(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    path = work / "docs.tar"
    path.write_bytes(tar_bytes(member("docs/readme.txt", b"not an image\n")))
    return path, ("not an image minictr can read",)


def missing_blob(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    blobs = oci_layout(work / "layout", [GOOD_LAYER, tar_bytes(member("bin/x", b"x"))])
    blobs[1].unlink()
    return work / "layout", ("not in the archive",)


def layer_blob_cut(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    blobs = oci_layout(work / "layout", [GOOD_LAYER, tar_bytes(member("bin/x", b"x" * 5000))])
    blobs[1].write_bytes(blobs[1].read_bytes()[:3000])
    return work / "layout", ("size mismatch",)


def oci_archive_cut(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    """An oci-archive (the layout in one tar) cut short: a copy that did not finish."""
    oci_layout(work / "layout", [GOOD_LAYER, tar_bytes(member("bin/x", b"x" * 50_000))])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(work / "layout", arcname=".")
    run_tool("rm", "-rf", work / "layout")
    path = work / "oci.tar"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path, ("truncated",)


def flipped_layer_byte(work: Path, outside: Path, gzipped: bool = False):
    content = random.Random(3).randbytes(4000)
    blobs = oci_layout(work / "layout", [GOOD_LAYER, tar_bytes(member("bin/x", content))],
                       gzipped=gzipped)
    flip_byte(blobs[1], 1500)  # in the file's content: the tar itself still reads
    return work / "layout", ("digest mismatch",)


def wrong_diff_id(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    """Every blob as its descriptor says, but the config's diff_id for layer 2 is another's."""
    second = tar_bytes(member("bin/x", b"x"))
    oci_layout(work / "layout", [GOOD_LAYER, second],
               diff_ids=[sha256(GOOD_LAYER), sha256(second + b"\0")])
    return work / "layout", ("digest mismatch", "diff_id")


def docker_archive_escape(work: Path, outside: Path) -> tuple[Path, tuple[str, ...]]:
    """A docker save manifest that names a layer outside the archive, by ../ and by /."""
    layer = f"{up_to(outside)}/victim"
    config = {"rootfs": {"type": "layers", "diff_ids": [sha256(b"")]}}
    config_data = json.dumps(config).encode()
    manifest = [{"Config": f"{sha256(config_data)[7:]}.json", "RepoTags": ["x:1"],
                 "Layers": [layer]}]
    path = work / "docker.tar"
    path.write_bytes(tar_bytes(member("manifest.json", json.dumps(manifest).encode()),
                               member(manifest[0]["Config"], config_data)))
    return path, ("not in the archive",)


HOSTILE: dict[str, Case] = {
    "dotdot": rootfs_case(dotdot, words=("'..'", "refused")),
    "dotdot-in-layer-2": layered_case(dotdot, words=("'..'", "refused")),
    "absolute": rootfs_case(absolute, words=("absolute", "refused")),
    "absolute-in-layer-2": layered_case(absolute, words=("absolute", "refused")),
    "through-symlink": rootfs_case(symlink_out, through_symlink, words=("symlink", "refused")),
    "through-symlink-in-layer-2": layered_case(symlink_out, through_symlink,
                                               words=("symlink", "refused")),
    "hardlink-absolute": rootfs_case(hardlink_abs, words=("hard link", "outside")),
    "hardlink-dotdot": rootfs_case(hardlink_rel, words=("hard link", "outside")),
    "hardlink-via-symlink": rootfs_case(symlink_out, hardlink_via_symlink,
                                        words=("hard link", "refused")),
    "hardlink-in-layer-2": layered_case(hardlink_rel, words=("hard link", "outside")),
    "block-device": rootfs_case(BLOCK, words=("block device 8:0", "refused")),
    "char-device-1:3": rootfs_case(NULL, words=("char device 1:3", "refused")),
    "char-device-in-layer-2": layered_case(NULL, words=("char device 1:3", "refused")),
    "truncated-in-a-member": lambda w, o: (truncated(w, o, 5_000), ("truncated",)),
    "truncated-at-a-member": lambda w, o: (truncated(w, o, 1024 + 20_480),
                                           ("truncated", "no end-of-archive marker")),
    "truncated-gzip": lambda w, o: (truncated(w, o, -100, gzipped=True), ("corrupt",)),
    "corrupt-gzip": corrupt_gzip,
    "random-bytes": random_bytes,
    "empty-file": empty_file,
    "no-root-filesystem": no_root_filesystem,
    "missing-blob": missing_blob,
    "layer-blob-cut": layer_blob_cut,
    "oci-archive-cut": oci_archive_cut,
    "flipped-byte": flipped_layer_byte,
    "flipped-byte-gzip": lambda w, o: flipped_layer_byte(w, o, gzipped=True),
    "wrong-diff-id": wrong_diff_id,
    "docker-archive-escape": docker_archive_escape,
}


def listed_images(minictr) -> list[str]:
    """`minictr images` without its CREATED column: "2 seconds ago" is not "1 second ago"
    when a case takes more than a second, and says nothing about what the store holds."""
    lines = minictr("images", check=True).stdout.splitlines()
    cut = lines[0].index("CREATED")
    return [line[:cut].rstrip() for line in lines]


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_archive_is_refused_and_leaves_nothing(minictr, minictr_root, tmp_path, case):
    minictr("image", "build", "busybox", check=True)
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "victim").write_text("the host's file\n")
    archive, words = case(work, outside)
    store, images = tree_digest(minictr_root), listed_images(minictr)
    outside_before, work_before = tree_digest(outside), tree_digest(work)

    refused(minictr("image", "import", archive, "evil"), *words)

    assert listed_images(minictr) == images  # nothing registered
    assert list((minictr_root / "layers").glob(".tmp-*")) == []
    assert tree_digest(minictr_root) == store  # no layer, no image, no scratch left
    assert tree_digest(outside) == outside_before  # nothing written outside the store
    assert tree_digest(work) == work_before


def test_name_in_use_or_missing_file_is_refused(minictr, minictr_root, tmp_path):
    base = busybox_layer(minictr)
    tarball = tmp_path / "rootfs.tar"
    run_tool("tar", "-C", base, "-cf", tarball, ".")
    store = tree_digest(minictr_root)
    refused(minictr("image", "import", tarball, "busybox"), "already in use", "rmi busybox")
    refused(minictr("image", "import", tmp_path / "nosuch.tar", "x"), "does not exist")
    refused(minictr("image", "import", tarball, "bad/name"), "invalid image name")
    assert tree_digest(minictr_root) == store


def test_a_symlink_in_one_layer_and_files_below_its_name_in_the_next(minictr, minictr_root,
                                                                      tmp_path):
    """Not refused, and harmless: each layer is extracted into a directory of its own, so
    layer 3's evil/ is a directory there, never a path through layer 2's symlink. In the
    merged view, the directory of the upper layer hides the symlink below it."""
    base, outside = busybox_layer(minictr), tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("the host's file\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(base, arcname=".")
    link = tar_bytes(member("evil", type=tarfile.SYMTYPE, link=str(outside)))
    below = tar_bytes(member("evil/", type=tarfile.DIRTYPE, mode=0o755),
                      member("evil/victim", b"replaced?\n"))
    oci_layout(tmp_path / "layout", [buf.getvalue(), link, below])
    before = tree_digest(outside)

    minictr("image", "import", tmp_path / "layout", "crossing", check=True)
    r = minictr("run", "--rm", "crossing", "sh", "-c",
                "test -L /evil || echo a-directory; cat /evil/victim; echo x > /evil/new",
                check=True)
    assert r.stdout.split("\n") == ["a-directory", "replaced?", ""]
    assert tree_digest(outside) == before
