"""minictr.images.oci against the real other side: layouts and archives that umoci and skopeo wrote,
and archives minictr writes that umoci and skopeo must read.

The root tests build an image with umoci (its unpack and repack keep file owners, so need
root); the others build small archives by hand, here, byte by byte as the specs say, so that
the reader is not tested only against minictr's own writer.
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
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.images import oci
from minictr.images.oci import ImageConfig, VerifyingReader, open_image, write_oci_layout_tar
from tests.helpers import scaled

BUSYBOX = Path("/bin/busybox")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(*argv: str | os.PathLike[str]) -> str:
    result = subprocess.run([os.fspath(a) for a in argv], capture_output=True, text=True,
                            timeout=scaled(120))
    assert result.returncode == 0, result
    return result.stdout


def layer_tar(files: dict[str, bytes | str | None]) -> bytes:
    """An uncompressed layer tar: name -> content (bytes), symlink target ("->x"), or a
    directory (None). Fixed owners and times, so the same files give the same bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content.removeprefix("->")
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


LAYER1 = {"bin": None, "bin/hello": b"#!/bin/sh\necho hello\n", "bin/sh": "->hello",
          "etc": None, "etc/motd": b"welcome\n", "etc/gone": b"soon deleted\n"}
LAYER2 = {"etc": None, "etc/.wh.gone": b"", "etc/new": b"new file\n"}
CONFIG = {"architecture": oci.machine_arch(), "os": "linux",
          "config": {"Cmd": ["/bin/sh", "-c", "echo hi"], "Entrypoint": ["/bin/env"],
                     "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/etc"}}


def put_blob(layout: Path, data: bytes) -> dict[str, object]:
    """Store data under blobs/sha256/ and return its descriptor (no media type yet)."""
    digest = sha256(data)
    path = layout / "blobs" / digest.replace(":", "/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def oci_layout(layout: Path, layers: list[tuple[str, bytes]] | None = None,
               config: dict[str, object] | None = None, *, index_extra: list | None = None,
               diff_ids: list[str] | None = None) -> dict[str, object]:
    """An OCI image layout by hand (image-layout.md): layers are (media type, blob bytes).
    The diff_ids are the digests of the blobs, gunzipped if they are gzip. Returns the
    manifest's descriptor."""
    if layers is None:
        layers = [(oci.OCI_LAYER_GZIP, gzip.compress(layer_tar(LAYER1), mtime=0)),
                  ("application/vnd.oci.image.layer.v1.tar", layer_tar(LAYER2))]
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    if diff_ids is None:
        diff_ids = [sha256(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b) for _, b in layers]
    config = {**(config or CONFIG), "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    manifest = {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, **put_blob(layout, json.dumps(config).encode())},
        "layers": [{"mediaType": t, **put_blob(layout, b)} for t, b in layers],
    }
    desc = {"mediaType": oci.OCI_MANIFEST, **put_blob(layout, json.dumps(manifest).encode()),
            "annotations": {oci.REF_NAME: "latest"}}
    index = {"schemaVersion": 2, "manifests": [desc, *(index_extra or [])]}
    (layout / "index.json").write_text(json.dumps(index))
    return desc


def blob_path(layout: Path, desc: dict[str, object]) -> Path:
    return layout / "blobs" / str(desc["digest"]).replace(":", "/")


def manifest_of(layout: Path) -> dict:
    desc = json.loads((layout / "index.json").read_text())["manifests"][0]
    return json.loads(blob_path(layout, desc).read_bytes())


def tar_dir(src: Path, dest: Path, *names: str) -> Path:
    """tar -C SRC -cf DEST NAMES... (default: .), as a user makes an archive of a layout."""
    run("tar", "-C", src, "-cf", dest, *(names or (".",)))
    return dest


def read_all(path: Path, **kw: str) -> tuple[oci.ImageSource, list[bytes]]:
    """open_image, then every layer's stream to its end, as the importer reads them."""
    with open_image(path, **kw) as source:
        blobs = []
        for layer in source.layers:
            with layer.open() as stream:
                blobs.append(stream.read())
        return source, blobs


def refused(path: Path, *words: str, **kw: str) -> StepError:
    """Bad input: one StepError of the import step, one line, with these words in it."""
    with pytest.raises(StepError) as caught:
        read_all(path, **kw)
    err = caught.value
    assert err.step == "import image"
    assert "\n" not in str(err)
    for word in words:
        assert word in str(err), (word, str(err))
    return err


def names_in(tar_bytes: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r|") as tar:
        return [m.name for m in tar]


# --- VerifyingReader --------------------------------------------------------------------------


DATA = b"layer bytes " * 1000


@pytest.mark.parametrize(("data", "digest", "size", "words"), [
    (DATA, sha256(DATA), len(DATA), None),
    (DATA, sha256(DATA), None, None),
    (DATA[:-1], sha256(DATA), len(DATA), "size mismatch for THE BLOB: 11999 bytes where"),
    (DATA + b"x", sha256(DATA), len(DATA), "size mismatch for THE BLOB: more than the 12000"),
    (DATA[:-1] + b"X", sha256(DATA), len(DATA), "digest mismatch for THE BLOB"),
])
def test_verifying_reader(data: bytes, digest: str, size: int | None, words: str | None) -> None:
    reader = io.BufferedReader(VerifyingReader(io.BytesIO(data), digest, size, "THE BLOB"))
    if words is None:
        assert reader.read() == data
        return
    with pytest.raises(StepError, match=words):
        reader.read()


def test_verifying_reader_reports_progress() -> None:
    seen: list[int] = []
    reader = VerifyingReader(io.BytesIO(DATA), sha256(DATA), len(DATA), "b", progress=seen.append)
    while reader.read(1000):
        pass
    assert seen == list(range(1000, len(DATA) + 1, 1000))


# --- images that umoci and skopeo wrote -------------------------------------------------------


@pytest.fixture(scope="module")
def umoci_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """L:t, by umoci: layer 1 adds busybox and a few files, layer 2 deletes one (a whiteout)
    and adds one; the config has Cmd, Env and WorkingDir."""
    tmp = tmp_path_factory.mktemp("umoci")
    layout = tmp / "L"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:t")
    run("umoci", "unpack", "--image", f"{layout}:t", tmp / "b1")
    rootfs = tmp / "b1" / "rootfs"
    (rootfs / "bin").mkdir()
    (rootfs / "etc").mkdir()
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    (rootfs / "etc" / "motd").write_text("welcome\n")
    (rootfs / "etc" / "gone").write_text("soon deleted\n")
    run("umoci", "repack", "--image", f"{layout}:t", tmp / "b1")
    run("umoci", "config", "--image", f"{layout}:t", "--config.cmd=/bin/sh",
        "--config.env=FOO=bar", "--config.workingdir=/etc")
    run("umoci", "unpack", "--image", f"{layout}:t", tmp / "b2")
    (tmp / "b2" / "rootfs" / "etc" / "gone").unlink()
    (tmp / "b2" / "rootfs" / "etc" / "new").write_text("new file\n")
    run("umoci", "repack", "--image", f"{layout}:t", tmp / "b2")
    return layout


def check_umoci_image(source: oci.ImageSource, blobs: list[bytes]) -> None:
    """What umoci_layout holds, whatever form it was read from."""
    assert source.config == ImageConfig(cmd=("/bin/sh",), entrypoint=(), env=("FOO=bar",),
                                        workdir="/etc")
    assert len(source.layers) == 2
    assert [sha256(b) for b in blobs] == [layer.diff_id for layer in source.layers]
    bottom, top = ({n.removeprefix("./") for n in names_in(b)} for b in blobs)
    assert {"bin/busybox", "bin/sh", "etc/motd", "etc/gone"} <= bottom
    assert {"etc/.wh.gone", "etc/new"} <= top and "bin/busybox" not in top


@pytest.mark.root
def test_umoci_layout_dir(umoci_layout: Path) -> None:
    source, blobs = read_all(umoci_layout)
    assert source.format == "oci-layout-dir"
    check_umoci_image(source, blobs)
    sizes = [d["size"] for d in manifest_of(umoci_layout)["layers"]]
    assert [layer.size for layer in source.layers] == sizes  # the gzip blobs' sizes


@pytest.mark.root
def test_umoci_layout_as_tar(umoci_layout: Path, tmp_path: Path) -> None:
    source, blobs = read_all(tar_dir(umoci_layout, tmp_path / "L.tar"))
    assert source.format == "oci-layout-tar"
    check_umoci_image(source, blobs)


@pytest.mark.root
@pytest.mark.parametrize(("transport", "fmt"), [("docker-archive", "docker-archive"),
                                                ("oci-archive", "oci-layout-tar")])
def test_skopeo_archives(umoci_layout: Path, tmp_path: Path, transport: str, fmt: str) -> None:
    archive = tmp_path / "image.tar"
    run("skopeo", "copy", "-q", f"oci:{umoci_layout}:t", f"{transport}:{archive}:name:tag"
        if transport == "docker-archive" else f"{transport}:{archive}:t")
    source, blobs = read_all(archive)
    assert source.format == fmt
    check_umoci_image(source, blobs)  # for docker-archive: the streams hash to the diff_ids


@pytest.mark.root
def test_layer_checked_when_the_tar_reader_stops_early(umoci_layout: Path,
                                                       tmp_path: Path) -> None:
    """A tar reader stops at the end-of-archive marker; the check still runs, at the end of
    the with block."""
    layout = tmp_path / "L"
    shutil.copytree(umoci_layout, layout)
    top = manifest_of(layout)["layers"][1]
    blob = blob_path(layout, top)
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # the gzip trailer's last byte
    with open_image(layout) as source:
        layer = source.layers[1]
        with pytest.raises(StepError, match="digest mismatch for blobs/sha256/"), \
                layer.open() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            assert "etc/new" in [m.name.removeprefix("./") for m in tar]


# --- rootfs tarballs --------------------------------------------------------------------------


ROOTFS = layer_tar({"./": None, "./bin": None, "./bin/sh": b"\x7fELF...", "./etc": None,
                    "./etc/os-release": b"ID=test\n"})


@pytest.mark.parametrize("compress", [
    lambda b: b, lambda b: gzip.compress(b, mtime=0), bz2.compress, lzma.compress,
], ids=["tar", "gzip", "bzip2", "xz"])
def test_rootfs_tarball(tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    path = tmp_path / "rootfs.tar.whatever"
    path.write_bytes(compress(ROOTFS))
    source, blobs = read_all(path)
    assert source.format == "rootfs-tar"
    assert blobs == [ROOTFS]  # the uncompressed tar, whatever the file was
    assert source.layers[0].diff_id is None
    assert source.layers[0].size == path.stat().st_size
    assert source.config.cmd == ("/bin/sh",) and source.config.workdir == "/"
    assert source.config.env[0].startswith("PATH=")


# --- writing: umoci and skopeo read what minictr writes ---------------------------------------


EXPORT_CONFIG = ImageConfig(cmd=("/bin/sh", "-c", "echo hi"), entrypoint=(),
                            env=("PATH=/bin", "A=1"), workdir="/etc")
CREATED = "2024-01-02T03:04:05Z"


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """An image written by write_oci_layout_tar from two layer tars made with tarfile."""
    tars = [layer_tar(LAYER1), layer_tar(LAYER2)]
    paths = []
    for number, data in enumerate(tars):
        paths.append(tmp_path / f"layer{number}.tar")
        paths[-1].write_bytes(data)
    out = tmp_path / "out" / "image.tar"
    out.parent.mkdir()
    write_oci_layout_tar(out, paths, EXPORT_CONFIG, "myimage", created=CREATED,
                         diff_ids=[sha256(t) for t in tars])
    assert os.listdir(out.parent) == ["image.tar"]  # no temporary file left behind
    return out, tars


@pytest.mark.root
def test_export_umoci_unpacks_it(exported: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    out, _ = exported
    layout = tmp_path / "layout"
    layout.mkdir()
    run("tar", "-C", layout, "-xf", out)
    run("umoci", "unpack", "--image", f"{layout}:myimage", tmp_path / "bundle")
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "etc" / "motd").read_text() == "welcome\n"
    assert (rootfs / "etc" / "new").read_text() == "new file\n"
    assert os.readlink(rootfs / "bin" / "sh") == "hello"
    assert not (rootfs / "etc" / "gone").exists()  # the whiteout of layer 2
    process = json.loads((tmp_path / "bundle" / "config.json").read_text())["process"]
    assert process["args"] == ["/bin/sh", "-c", "echo hi"] and process["cwd"] == "/etc"


def test_export_skopeo_reads_it(exported: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    out, tars = exported
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{out}:myimage"))
    assert info["Architecture"] == oci.machine_arch() and info["Os"] == "linux"
    assert info["Env"] == ["PATH=/bin", "A=1"] and len(info["Layers"]) == 2
    run("skopeo", "copy", "-q", f"oci-archive:{out}:myimage", f"dir:{tmp_path / 'copy'}")
    manifest = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    blobs = [(tmp_path / "copy" / d["digest"].split(":")[1]).read_bytes()
             for d in manifest["layers"]]
    assert [gzip.decompress(b) for b in blobs] == tars


def test_export_round_trip(exported: tuple[Path, list[bytes]]) -> None:
    out, tars = exported
    source, blobs = read_all(out)
    assert source.format == "oci-layout-tar"
    assert source.config == EXPORT_CONFIG
    assert blobs == tars
    assert [layer.diff_id for layer in source.layers] == [sha256(t) for t in tars]


def test_export_is_deterministic(exported: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    out, tars = exported
    again = tmp_path / "again.tar"
    layers = [tmp_path / "layer0.tar", tmp_path / "layer1.tar"]
    write_oci_layout_tar(again, layers, EXPORT_CONFIG, "myimage", created=CREATED,
                         diff_ids=[sha256(t) for t in tars])
    assert again.read_bytes() == out.read_bytes()


def test_export_refuses_a_wrong_diff_id_or_ref_name(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(layer_tar(LAYER1))
    out = tmp_path / "out.tar"
    with pytest.raises(StepError, match=r"hashes to sha256:.*not to its diff_id"):
        write_oci_layout_tar(out, [layer], EXPORT_CONFIG, "x", created=CREATED,
                             diff_ids=[sha256(b"other")])
    with pytest.raises(StepError, match="not a valid OCI reference name"):
        write_oci_layout_tar(out, [layer], EXPORT_CONFIG, "my..image", created=CREATED,
                             diff_ids=[sha256(layer.read_bytes())])
    assert sorted(os.listdir(tmp_path)) == ["layer.tar"]


# --- layouts and archives by hand -------------------------------------------------------------


def test_hand_made_layout(tmp_path: Path) -> None:
    oci_layout(tmp_path / "L")
    source, blobs = read_all(tmp_path / "L")
    assert source.config == ImageConfig(cmd=("/bin/sh", "-c", "echo hi"),
                                        entrypoint=("/bin/env",), env=("PATH=/bin", "A=1"),
                                        workdir="/etc")
    assert blobs == [layer_tar(LAYER1), layer_tar(LAYER2)]


def platform_manifest(layout: Path, arch: str) -> dict[str, object]:
    """A manifest (with its config and one layer) for arch, as a descriptor with platform."""
    layer = layer_tar({"arch": arch.encode()})
    config = {**CONFIG, "architecture": arch,
              "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}
    manifest = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                "config": {"mediaType": oci.OCI_CONFIG,
                           **put_blob(layout, json.dumps(config).encode())},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            **put_blob(layout, layer)}]}
    return {"mediaType": oci.OCI_MANIFEST, **put_blob(layout, json.dumps(manifest).encode()),
            "platform": {"os": "linux", "architecture": arch}}


def test_index_of_indexes_picks_this_machine(tmp_path: Path) -> None:
    """As `docker save` with the containerd store: index.json → an index of platforms, whose
    other platforms' blobs are not in the archive."""
    layout = tmp_path / "L"
    oci_layout(layout)
    other = "s390x" if oci.machine_arch() != "s390x" else "amd64"
    mine, theirs = platform_manifest(layout, oci.machine_arch()), platform_manifest(layout, other)
    blob_path(layout, theirs).unlink()  # only this machine's platform was saved
    inner = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [theirs, mine]}
    desc = {"mediaType": oci.OCI_INDEX, **put_blob(layout, json.dumps(inner).encode())}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    _, blobs = read_all(layout)
    assert blobs == [layer_tar({"arch": oci.machine_arch().encode()})]


def test_several_images_need_a_ref(tmp_path: Path) -> None:
    layout = tmp_path / "L"
    extra = dict(platform_manifest(layout, oci.machine_arch()))
    del extra["platform"]
    extra["annotations"] = {oci.REF_NAME: "other"}
    oci_layout(layout, index_extra=[extra])
    refused(layout, "index.json lists 2 images (latest, other)", "skopeo copy")
    _, blobs = read_all(layout, ref="other")
    assert blobs == [layer_tar({"arch": oci.machine_arch().encode()})]
    _, blobs = read_all(layout, ref="latest")
    assert len(blobs) == 2
    refused(layout, "no image named 'nope'", ref="nope")


def docker_archive(path: Path, layers: list[bytes], *, diff_ids: list[str] | None = None,
                   oci_too: bool = False) -> None:
    """A `docker save` archive as Docker before 25 wrote it: ID/layer.tar (here one of them a
    symlink to a shared file), HEX.json config, manifest.json."""
    config = json.dumps({**CONFIG, "rootfs": {
        "type": "layers", "diff_ids": diff_ids or [sha256(b) for b in layers]}}).encode()
    files: dict[str, bytes | str | None] = {}
    names = []
    for number, data in enumerate(layers):
        files[f"{number}{'a' * 63}"] = None
        if number == 0:
            files[f"shared{number}.tar"] = data
            files[f"{number}{'a' * 63}/layer.tar"] = f"->../shared{number}.tar"
        else:
            files[f"{number}{'a' * 63}/layer.tar"] = data
        names.append(f"{number}{'a' * 63}/layer.tar")
    files[f"{hashlib.sha256(config).hexdigest()}.json"] = config
    files["manifest.json"] = json.dumps([{
        "Config": f"{hashlib.sha256(config).hexdigest()}.json",
        "RepoTags": ["name:tag"], "Layers": names}]).encode()
    path.write_bytes(layer_tar(files))


def test_docker_save(tmp_path: Path) -> None:
    tars = [layer_tar(LAYER1), layer_tar(LAYER2)]
    docker_archive(tmp_path / "d.tar", tars)
    source, blobs = read_all(tmp_path / "d.tar")
    assert source.format == "docker-archive"
    assert blobs == tars
    assert source.config.entrypoint == ("/bin/env",)


def test_newer_docker_save_is_read_as_an_oci_layout(tmp_path: Path) -> None:
    """Docker 25+ writes manifest.json and an OCI layout in one tar: the layout wins."""
    layout = tmp_path / "L"
    oci_layout(layout)
    (layout / "manifest.json").write_text('[{"Config": "nowhere.json", "Layers": []}]')
    source, blobs = read_all(tar_dir(layout, tmp_path / "L.tar"))
    assert source.format == "oci-layout-tar" and len(blobs) == 2


# --- bad input: one clear line each -----------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    oci_layout(tmp_path / "L")
    return tmp_path / "L"


def layer_blob(layout: Path, number: int) -> Path:
    return blob_path(layout, manifest_of(layout)["layers"][number])


@pytest.mark.parametrize("which", ["layer", "config", "manifest"])
def test_missing_blob(layout: Path, which: str) -> None:
    manifest = manifest_of(layout)
    desc = {"layer": manifest["layers"][0], "config": manifest["config"],
            "manifest": json.loads((layout / "index.json").read_text())["manifests"][0]}[which]
    blob_path(layout, desc).unlink()
    named_by = "index.json" if which == "manifest" else "the manifest"
    short = str(desc["digest"]).replace(":", "/")[: len("sha256/") + 12]
    refused(layout, f"{named_by} names blobs/{short}… which is not in the archive")


@pytest.mark.parametrize("number", [0, 1])  # a gzip blob, a plain tar blob
def test_digest_mismatch_in_a_layer(layout: Path, number: int) -> None:
    blob = layer_blob(layout, number)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x20
    blob.write_bytes(data)
    refused(layout, "digest mismatch for blobs/sha256/",
            "the archive is corrupt or was changed")


def test_digest_mismatch_in_the_config(layout: Path) -> None:
    blob = blob_path(layout, manifest_of(layout)["config"])
    blob.write_bytes(blob.read_bytes().replace(b"echo hi", b"echo HI"))
    with pytest.raises(StepError, match="digest mismatch for blobs/sha256/"), open_image(layout):
        pass  # checked before any layer is read


def test_size_mismatch(layout: Path) -> None:
    blob = layer_blob(layout, 1)
    size = blob.stat().st_size
    blob.write_bytes(blob.read_bytes() + b"\0")
    with pytest.raises(StepError, match=f"size mismatch for blobs/sha256/.*: {size + 1} bytes "
                       f"where the manifest says {size}"), open_image(layout):
        pass


def test_diff_id_mismatch(tmp_path: Path) -> None:
    """The blob is what the manifest says, but not what the config's diff_id says."""
    layers = [("application/vnd.oci.image.layer.v1.tar", layer_tar(LAYER2))]
    oci_layout(tmp_path / "L", layers, diff_ids=[sha256(b"something else")])
    refused(tmp_path / "L", "digest mismatch for blobs/sha256/", "(uncompressed, its diff_id)")


def test_diff_ids_do_not_match_the_layers(tmp_path: Path) -> None:
    oci_layout(tmp_path / "L", diff_ids=[sha256(b"one")])
    refused(tmp_path / "L", "the image config lists 1 layer diff_ids, but the manifest names 2")


def test_corrupt_gzip_layer(tmp_path: Path) -> None:
    """The digests are right: the blob itself was written wrong."""
    good = gzip.compress(layer_tar(LAYER1), mtime=0)
    bad = good[:20] + bytes(b ^ 0x55 for b in good[20:40]) + good[40:]
    oci_layout(tmp_path / "L", [(oci.OCI_LAYER_GZIP, bad)], diff_ids=[sha256(b"x")])
    refused(tmp_path / "L", "is not valid gzip data")


@pytest.mark.parametrize(("cut", "words"), [
    ("half", "L.tar is truncated or corrupt: unexpected end of data"),
    # Just before the last member: on its own, a valid-looking shorter tar.
    ("boundary", "L.tar is truncated or corrupt: no end-of-archive marker after 7 members"),
    ("header", "L.tar is not an image minictr can read"),  # not even one whole header
])
def test_truncated_outer_tar(layout: Path, tmp_path: Path, cut: str, words: str) -> None:
    archive = tar_dir(layout, tmp_path / "L.tar", "oci-layout", "index.json", "blobs")
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
    data = archive.read_bytes()
    archive.write_bytes(data[: {"half": len(data) // 2, "boundary": last.offset,
                                "header": 100}[cut]])
    refused(archive, words)


def test_index_json_not_json(layout: Path) -> None:
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": [')
    refused(layout, "index.json is not valid JSON")


def test_zstd_layer(tmp_path: Path) -> None:
    """Read with Python 3.14's compression.zstd, or its backport (a dependency) before it."""
    from minictr.images.oci import _zstd

    tar = layer_tar(LAYER1)
    oci_layout(tmp_path / "L", [("application/vnd.oci.image.layer.v1.tar+zstd",
                                 _zstd().compress(tar))], diff_ids=[sha256(tar)])
    _, blobs = read_all(tmp_path / "L")
    assert blobs == [tar]
    oci_layout(tmp_path / "bad", [("application/vnd.oci.image.layer.v1.tar+zstd",
                                   b"(\xb5/\xfd" + b"\0" * 20)], diff_ids=[sha256(tar)])
    refused(tmp_path / "bad", "is not valid zstd data", "the archive is corrupt")


def test_unknown_formats(tmp_path: Path) -> None:
    (tmp_path / "random").write_bytes(os.urandom(4096))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "index.json").write_text("{}")
    (tmp_path / "src.tar").write_bytes(layer_tar({"project-1.0": None,
                                                  "project-1.0/README": b"hi"}))
    for name in ("random", "empty", "emptydir", "dir", "src.tar"):
        err = refused(tmp_path / name, f"{tmp_path / name} is not an image minictr can read")
        assert err.hint and "OCI image layout" in err.hint
    refused(tmp_path / "missing", "does not exist")
    (tmp_path / "z.tar.zst").write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(100))
    refused(tmp_path / "z.tar.zst", "is compressed with zstd")
    (tmp_path / "g.tar.gz").write_bytes(gzip.compress(b"not a tar" * 100))
    refused(tmp_path / "g.tar.gz", "is gzip-compressed, but not a tar archive")
    big = layer_tar({"bin": None, "bin/sh": os.urandom(100_000)})
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(big)[:50_000])
    refused(tmp_path / "cut.tar.gz", "cut.tar.gz is truncated or corrupt")


def test_docker_save_bad_layer(tmp_path: Path) -> None:
    tars = [layer_tar(LAYER1), layer_tar(LAYER2)]
    changed = tars[1].replace(b"new file", b"NEW FILE")
    docker_archive(tmp_path / "d.tar", [tars[0], changed], diff_ids=[sha256(t) for t in tars])
    refused(tmp_path / "d.tar", "digest mismatch for 1aaa", "/layer.tar (uncompressed")


def test_docker_save_missing_layer(tmp_path: Path) -> None:
    archive = tmp_path / "d.tar"
    docker_archive(archive, [layer_tar(LAYER1)])
    files = {}
    with tarfile.open(archive) as tar:
        for m in tar:
            if m.name != "shared0.tar":
                f = tar.extractfile(m) if m.isreg() else None
                files[m.name] = f.read() if f else None if m.isdir() else "->" + m.linkname
    archive.write_bytes(layer_tar(files))
    refused(archive, f"manifest.json names 0{'a' * 63}/layer.tar which is not in the archive")



def test_layer_progress_counts_blob_bytes(layout: Path) -> None:
    seen: list[int] = []
    with open_image(layout) as source:
        layer = source.layers[0]  # gzip: the blob is smaller than the tar
        with layer.open(progress=seen.append) as stream:
            assert stream.read() == layer_tar(LAYER1)
    assert seen and seen == sorted(seen) and seen[-1] == layer.size
