"""Image archives: read the layers and config of an image file, and write one that others read.

An image is an ordered list of layer tars, bottom first, and a config (the default command,
environment, working directory). Four kinds of file hold one, and ``open_image`` tells them
apart by what is inside, never by the file name:

- An **OCI image layout**, as a directory or as a tar of it (``skopeo copy ... oci-archive:``):
  ``oci-layout``, ``index.json``, and content-addressed ``blobs/sha256/<hex>``. index.json
  points (maybe through another index, one per platform) to a manifest, the manifest to the
  config and the layers. Every pointer is a *descriptor*: media type, digest and size.
- A **docker save** archive: ``manifest.json`` names the config and the layer tars by path;
  only the config's ``rootfs.diff_ids`` say what the layers must hash to.
- A **rootfs tarball** (``docker export``, Alpine's minirootfs): one layer, no config.

Nothing is trusted before it is checked. Every blob is hashed while it is read and checked
against its descriptor's digest and size at its end; a layer tar is also checked against its
diff_id (the digest of the *uncompressed* tar). The small JSON blobs are checked here, before
any layer is extracted; a layer is checked as the importer streams it, at the end of the
stream, and ``LayerSource.open`` checks again when the ``with`` block ends: a tar reader stops
at the end-of-archive marker, before the padding that the digest covers too.

Newer Docker (25+) writes a docker save archive that is also an OCI layout (it has
``manifest.json`` *and* ``oci-layout``): it is read as an OCI layout, where every blob has a
digest and size to check, from index.json down.

Shell: jq . L/index.json; sha256sum L/blobs/sha256/*; tar -xOf D.tar manifest.json;
       skopeo inspect oci:L:REF (or oci-archive:L.tar:REF, docker-archive:D.tar)
See: https://github.com/opencontainers/image-spec/blob/v1.1.0/image-layout.md (also
     descriptor.md, image-index.md, manifest.md, config.md "rootfs", layer.md),
     https://github.com/moby/moby/blob/master/image/spec/v1.2.md (docker save),
     tar(5) ("ustar": 512-byte blocks, two zero blocks at the end)
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

from minictr.errors import StepError
from minictr.spec import ImageConfig

STEP = "import image"
EXPORT_STEP = "export image"

LAYOUT_VERSION = "1.0.0"
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"  # image-layout.md: the "tag" in index.json

# Layer media types, and how their blobs are compressed. The nondistributable and "foreign"
# ones are the same tars; only where they may be copied differs. (layer.md, media-types.md)
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": None,
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": None,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": None,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}
# The first bytes of each compressed format (RFC 1952, bzip2, xz, RFC 8878).
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
# Each wraps an open stream, which stays the caller's to close.
_OPENERS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    "gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    "bzip2": lambda f: bz2.BZ2File(f),
    "xz": lambda f: lzma.LZMAFile(f),  # noqa: SIM115
    "zstd": lambda f: _zstd().ZstdFile(f, "rb"),
}
_BAD_DATA = (OSError, EOFError, zlib.error, lzma.LZMAError)  # what the decompressors raise
_ZSTD_HINT = ("Python's standard library cannot read zstd before 3.14: pip install "
              "backports.zstd (make setup does), or recompress with gzip: "
              "skopeo copy --dest-compress-format gzip SRC DEST")
_AGAIN = "get the image again (skopeo copy, docker save) and check it was copied whole"


class Blame(NamedTuple):
    """Whose data a check found wrong, for its message: an archive's, or a registry's."""

    step: str = "import image"
    source: str = "the archive"
    again: str = _AGAIN


ARCHIVE = Blame()


def _zstd() -> Any:
    """zstd: Python 3.14's compression.zstd, or before it, its backport (the same module:
    backports.zstd, a dependency of minictr). Imported only when a zstd layer is met."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError:
            raise _fail("a layer is compressed with zstd, which this Python cannot read",
                        _ZSTD_HINT) from None
    return zstd

# Top-level names that make a plain tar a root filesystem, as docker export writes one.
_ROOTFS_TOP = {"bin", "sbin", "usr", "etc", "lib"}
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Docker's
_JSON_MAX = 16 << 20  # index, manifest, config: small, read whole into memory
_CHUNK = 1 << 20

# Digests: algorithm ":" encoded, and the encodings this module can check (descriptor.md).
_DIGEST = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}
# ref ::= component ("/" component)*; component ::= alphanum (separator alphanum)*;
# separator ::= [-._:@+] | "--"   (image-layout.md, "index.json file", annotations.md)
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")

# os.uname().machine -> GOARCH, the names image configs and platforms use (config.md).
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def machine_arch() -> str:
    machine = os.uname().machine
    return _ARCH.get(machine, machine)


# --- what an image is, for the importer ------------------------------------------------------


class LayerOpener(Protocol):
    def __call__(self, progress: Callable[[int], None] | None = None) -> ContextManager[IO[bytes]]:
        ...


@dataclass(frozen=True)
class LayerSource:
    """One layer. ``open()`` gives the UNCOMPRESSED tar stream, verified as it is read; with
    ``progress``, it is called with the bytes of the blob read so far (out of ``size``).
    Open one layer at a time: the layers of a tar archive share its file."""

    diff_id: str | None  # "sha256:..." of the uncompressed tar, if the format says it
    open: LayerOpener
    size: int  # bytes of the blob as stored (compressed or not), for progress


@dataclass(frozen=True)
class ImageSource:
    format: str  # "oci-layout-dir" | "oci-layout-tar" | "docker-archive" | "rootfs-tar"
    layers: tuple[LayerSource, ...]  # bottom first
    config: ImageConfig


def _fail(message: str, hint: str | None = None) -> StepError:
    return StepError(STEP, message, hint=hint)


# --- a stream that checks itself ------------------------------------------------------------


class VerifyingReader(io.RawIOBase):
    """Passes a stream through, hashing it; at its end, checks the digest and size.

    Raises StepError when the data has gone past ``size``, and at the end of the stream when
    the size or digest is not the expected one. ``what`` names the data in the message.
    """

    def __init__(self, stream: IO[bytes], digest: str | None, size: int | None, what: str,
                 *, progress: Callable[[int], None] | None = None,
                 blame: Blame = ARCHIVE) -> None:
        super().__init__()
        self._blame = blame
        self._stream = stream
        self._digest = digest
        self._hash = hashlib.new(digest.partition(":")[0]) if digest else None
        self._size = size
        self._progress = progress
        self.what = what
        self.count = 0
        self.done = False  # the end was reached and checked, or an error was raised
        self.mismatch: StepError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.done or len(buffer) == 0:
            return 0
        try:
            data = self._stream.read(len(buffer))
        except OSError as e:
            self.done = True
            raise StepError.from_os_error(self._blame.step, e) from e
        except (tarfile.TarError, EOFError) as e:  # a member of a damaged outer tar
            self.done = True
            raise StepError(self._blame.step, f"cannot read {self.what}: {e}: "
                            f"{self._blame.source} is truncated", hint=self._blame.again) from e
        if not data:
            self._check_end()
            return 0
        self.count += len(data)
        if self._hash:
            self._hash.update(data)
        if self._size is not None and self.count > self._size:
            self._mismatch(f"size mismatch for {self.what}: more than the {self._size} bytes "
                           f"its descriptor says: {self._blame.source} is corrupt or was changed")
        if self._progress:
            self._progress(self.count)
        buffer[: len(data)] = data
        return len(data)

    def _check_end(self) -> None:
        self.done = True
        if self._size is not None and self.count != self._size:
            self._mismatch(f"size mismatch for {self.what}: {self.count} bytes where its "
                           f"descriptor says {self._size}: {self._blame.source} is truncated "
                           "or corrupt")
        if self._hash and f"{self._hash.name}:{self._hash.hexdigest()}" != self._digest:
            self._mismatch(f"digest mismatch for {self.what}: {self._blame.source} is corrupt "
                           "or was changed")

    def _mismatch(self, message: str) -> None:
        self.done = True
        self.mismatch = StepError(self._blame.step, message, hint=self._blame.again)
        raise self.mismatch

    def diagnose(self) -> StepError | None:
        """After another error: read the rest, and say if the data itself was damaged, which
        is the real cause of whatever a decompressor or tar reader complained about."""
        try:
            while self.read(_CHUNK):
                pass
        except StepError:
            pass
        return self.mismatch


class _Decompressing(io.RawIOBase):
    """A decompressor whose complaints about bad data become one StepError line."""

    def __init__(self, stream: IO[bytes], kind: str, what: str, blame: Blame = ARCHIVE) -> None:
        super().__init__()
        self._inner = _OPENERS[kind](stream)
        self._bad = (*_BAD_DATA, _zstd().ZstdError) if kind == "zstd" else _BAD_DATA
        self._kind = kind
        self._what = what
        self._blame = blame

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._inner.read(len(buffer))
        except self._bad as e:
            raise StepError(self._blame.step, f"{self._what} is not valid {self._kind} data "
                            f"({e}): {self._blame.source} is corrupt", hint=self._blame.again
                            ) from e
        buffer[: len(data)] = data
        return len(data)


def _drain(stream: IO[bytes]) -> None:
    while stream.read(_CHUNK):
        pass


@contextmanager
def _layer_stream(raw: ContextManager[IO[bytes]], *, digest: str | None, size: int | None,
                  compression: str | None, diff_id: str | None, what: str,
                  progress: Callable[[int], None] | None,
                  blame: Blame = ARCHIVE) -> Iterator[IO[bytes]]:
    """blob (digest, size) → decompress → tar (diff_id): the uncompressed tar, checked twice.
    ``compression`` "sniff": by the first bytes (gzip, zstd, ...; none: a plain tar).

    Shell: sha256sum BLOB; gzip -dc BLOB | sha256sum   (the second one is the diff_id)
    """
    with raw as stream:
        blob = VerifyingReader(stream, digest, size, what, progress=progress, blame=blame)
        buffered = io.BufferedReader(blob, _CHUNK)
        plain: IO[bytes] = buffered
        if compression == "sniff":
            head = buffered.peek(6)[:6]
            compression = next((k for m, k in _MAGIC.items() if head.startswith(m)), None)
        if compression:
            plain = _Decompressing(plain, compression, what, blame)
        tar = VerifyingReader(plain, diff_id, None, f"{what} (uncompressed, its diff_id)",
                              blame=blame)
        out = io.BufferedReader(tar, _CHUNK)
        try:
            yield out
            _drain(out)  # the padding after the end-of-archive marker, and gzip's trailer
            _drain(blob)
        except Exception as e:
            if (damage := blob.diagnose()) is not None and damage is not e:
                raise damage from e
            raise


# --- where the files are: a directory or a tar ----------------------------------------------


def _clean(name: str) -> str | None:
    """A member name as a relative path inside the archive; None if it is not one."""
    name = posixpath.normpath(name.lstrip("/"))
    if name in (".", "") or name == ".." or name.startswith("../"):
        return None
    return name


class _Dir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def size(self, name: str) -> int | None:
        """Bytes of the regular file at name, None if there is none."""
        clean = _clean(name)
        path = self.root / clean if clean else None
        return path.stat().st_size if path and path.is_file() else None

    def open(self, name: str) -> ContextManager[IO[bytes]]:
        clean = _clean(name)
        assert clean is not None, name  # callers ask size() first
        return open(self.root / clean, "rb")


class _Tar:
    """Random access to the members of a tar (``tarfile.extractfile``): nothing is extracted.

    The whole tar is scanned once first: its member list, and its end. A tar cut short at a
    member's boundary, or with a damaged header, reads as a shorter valid tar, so it must end
    with a zero block, the end-of-archive marker (tar(5)).
    """

    def __init__(self, path: Path, compression: str | None) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
        except (tarfile.TarError, *_BAD_DATA) as e:
            if compression:
                raise _fail(f"{path} is {compression}-compressed, but not a tar archive or a "
                            "complete one", _AGAIN) from e
            raise _unknown(path) from e
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self.tar:
                if (name := _clean(member.name)) is not None:
                    self.members[name] = member  # a later member of the same name wins
            self.tar.fileobj.seek(self.tar.offset)
            end = self.tar.fileobj.read(tarfile.BLOCKSIZE)
        except (tarfile.TarError, *_BAD_DATA) as e:
            self.tar.close()
            raise _truncated(path, str(e)) from e
        if len(end) < tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
            self.tar.close()
            raise _truncated(path, f"no end-of-archive marker after {len(self.members)} members")
        self.top = {name.split("/")[0] for name in self.members}

    def _regular(self, name: str) -> tarfile.TarInfo | None:
        """The regular file at name, following links inside the archive (docker save links
        ID/layer.tar to a shared layer)."""
        for _ in range(16):
            member = self.members.get(_clean(name) or "")
            if member is None or member.isreg():
                return member
            if member.issym() and not member.linkname.startswith("/"):
                name = posixpath.join(posixpath.dirname(member.name), member.linkname)
            elif member.islnk():
                name = member.linkname
            else:
                return None
        return None

    def size(self, name: str) -> int | None:
        member = self._regular(name)
        return member.size if member else None

    def open(self, name: str) -> ContextManager[IO[bytes]]:
        member = self._regular(name)
        assert member is not None, name  # callers ask size() first
        stream = self.tar.extractfile(member)
        assert stream is not None
        return stream

    def close(self) -> None:
        self.tar.close()


_Archive = _Dir | _Tar


def _unknown(path: Path) -> StepError:
    return _fail(f"{path} is not an image minictr can read",
                 "give a rootfs tarball, an OCI image layout (directory or tar), "
                 "or a docker save archive")


def _truncated(path: Path, why: str) -> StepError:
    return _fail(f"{path} is truncated or corrupt: {why}", _AGAIN)


def _sniff(stream: IO[bytes]) -> str | None:
    head = stream.read(6)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


# --- open_image -----------------------------------------------------------------------------


@contextmanager
def open_image(path: Path, *, ref: str | None = None) -> Iterator[ImageSource]:
    """Find out what ``path`` is and check what can be checked before any layer is read.

    ``ref`` picks one image when the archive holds several: an OCI ref name (the
    ``org.opencontainers.image.ref.name`` annotation, as in ``skopeo ... oci:DIR:REF``) or a
    docker save RepoTag. The layers' streams are usable until the ``with`` block ends.
    """
    path = Path(path)
    if path.is_dir():
        yield _read(_Dir(path), path, ref)
        return
    if not path.is_file():
        raise _fail(f"{path} does not exist" if not path.exists() else
                    f"{path} is not a file or a directory")
    try:
        with open(path, "rb") as f:
            compression = _sniff(f)
    except OSError as e:
        raise StepError.from_os_error(STEP, e) from e
    if compression == "zstd":
        raise _fail(f"{path} is compressed with zstd, which minictr cannot read",
                    f"decompress it first: zstd -d {path}")
    archive = _Tar(path, compression)
    try:
        yield _read(archive, path, ref, compression)
    finally:
        archive.close()


def _read(archive: _Archive, path: Path, ref: str | None,
          compression: str | None = None) -> ImageSource:
    if archive.size("oci-layout") is not None:
        return _read_oci(archive, ref)
    if archive.size("manifest.json") is not None:
        return _read_docker(archive, ref)
    if isinstance(archive, _Tar) and archive.top & _ROOTFS_TOP:
        return _rootfs(path, compression)
    raise _unknown(path)


def _rootfs(path: Path, compression: str | None) -> ImageSource:
    """docker export, a distro's minirootfs: one layer, whole; the config is a guess."""
    def open_layer(progress: Callable[[int], None] | None = None) -> ContextManager[IO[bytes]]:
        return _layer_stream(open(path, "rb"), digest=None, size=None, compression=compression,
                             diff_id=None, what=str(path), progress=progress)

    config = ImageConfig(cmd=("/bin/sh",), env=(_DEFAULT_PATH,), workdir="/")
    layer = LayerSource(None, open_layer, path.stat().st_size)
    return ImageSource("rootfs-tar", (layer,), config)


# --- OCI image layout -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str]
    platform: dict[str, Any]

    @property
    def blob(self) -> str:
        return "blobs/" + self.digest.replace(":", "/", 1)

    @property
    def short(self) -> str:
        return self.blob[: len("blobs/sha256/") + 12] + "…"


def _descriptor(d: Any, where: str) -> _Descriptor:
    """A descriptor (descriptor.md), with a digest this module can check and use as a path."""
    if not isinstance(d, dict):
        raise _fail(f"{where} has a descriptor that is not a JSON object", _AGAIN)
    digest, size = d.get("digest"), d.get("size")
    alg, _, encoded = str(digest).partition(":")
    if not isinstance(digest, str) or alg not in _DIGEST or not _DIGEST[alg].fullmatch(encoded):
        raise _fail(f"{where} names a blob by a digest minictr cannot check: {digest!r}",
                    "minictr checks sha256 and sha512 digests")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _fail(f"{where} gives no valid size for {digest}", _AGAIN)
    return _Descriptor(str(d.get("mediaType", "")), digest, size,
                       d.get("annotations") or {}, d.get("platform") or {})


def _check_blob(archive: _Archive, desc: _Descriptor, named_by: str) -> None:
    size = archive.size(desc.blob)
    if size is None:
        raise _fail(f"{named_by} names {desc.short} which is not in the archive", _AGAIN)
    if size != desc.size:
        raise _fail(f"size mismatch for {desc.short}: {size} bytes where {named_by} says "
                    f"{desc.size}: the archive is corrupt or was changed", _AGAIN)


def _read_json(archive: _Archive, name: str, what: str, *, digest: str | None = None,
               size: int | None = None) -> Any:
    """A small JSON file, checked against digest and size when they are known."""
    with archive.open(name) as stream:
        data = stream.read(_JSON_MAX + 1)
    if len(data) > _JSON_MAX:
        raise _fail(f"{what} is larger than {_JSON_MAX} bytes: not an image's JSON")
    VerifyingReader(io.BytesIO(data), digest, size, what).read()  # read to the end: checked
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(f"{what} is not valid JSON ({e})", _AGAIN) from e


def _blob_json(archive: _Archive, desc: _Descriptor, named_by: str) -> dict[str, Any]:
    _check_blob(archive, desc, named_by)
    doc = _read_json(archive, desc.blob, desc.short, digest=desc.digest, size=desc.size)
    if not isinstance(doc, dict):
        raise _fail(f"{desc.short} is not a JSON object", _AGAIN)
    return doc


def _read_oci(archive: _Archive, ref: str | None) -> ImageSource:
    """oci-layout → index.json → (index →) manifest → config, layers (image-layout.md)."""
    layout = _read_json(archive, "oci-layout", "oci-layout")
    version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    if not isinstance(version, str) or version.split(".")[0] != "1":
        raise _fail(f"unsupported OCI image layout version {version!r}",
                    f"minictr reads imageLayoutVersion {LAYOUT_VERSION}")
    if archive.size("index.json") is None:
        raise _fail("the OCI image layout has no index.json", _AGAIN)
    index = _read_json(archive, "index.json", "index.json")
    desc, manifest = _pick_manifest(archive, index, "index.json", ref)
    if not isinstance(manifest.get("layers"), list):
        raise _fail(f"{desc.short} is not an image manifest (it has no layers)", _AGAIN)
    config_desc = _descriptor(manifest.get("config"), "the manifest")
    if config_desc.media_type not in CONFIG_TYPES:
        raise _fail(f"the manifest's config is a {config_desc.media_type or 'blob of no type'},"
                    " not a container image config", "this is an OCI artifact, not an image")
    config = _blob_json(archive, config_desc, "the manifest")
    descs = [_descriptor(d, "the manifest") for d in manifest["layers"]]
    diff_ids = _diff_ids(config, len(descs))
    layers = tuple(_oci_layer(archive, d, diff_id)
                   for d, diff_id in zip(descs, diff_ids, strict=True))
    kind = "oci-layout-dir" if isinstance(archive, _Dir) else "oci-layout-tar"
    return ImageSource(kind, layers, _image_config(config))


def _oci_layer(archive: _Archive, desc: _Descriptor, diff_id: str) -> LayerSource:
    if desc.media_type not in _LAYER_TYPES:
        raise _fail(f"layer {desc.short} has media type {desc.media_type or '(none)'}, "
                    "which is not a layer tar minictr can read",
                    "minictr reads tar, tar+gzip and tar+zstd layers")
    _check_blob(archive, desc, "the manifest")

    def open_layer(progress: Callable[[int], None] | None = None) -> ContextManager[IO[bytes]]:
        return _layer_stream(archive.open(desc.blob), digest=desc.digest, size=desc.size,
                             compression=_LAYER_TYPES[desc.media_type], diff_id=diff_id,
                             what=desc.short, progress=progress)

    return LayerSource(diff_id, open_layer, desc.size)


def layer_source(open_blob: Callable[[], ContextManager[IO[bytes]]], *, digest: str, size: int,
                 compression: str | None, diff_id: str, what: str, blame: Blame) -> LayerSource:
    """A layer whose blob comes from elsewhere (a registry, minictr.images.pull): the same
    checks as an archive's: the blob's digest and size, then its diff_id, uncompressed."""
    def open_layer(progress: Callable[[int], None] | None = None) -> ContextManager[IO[bytes]]:
        return _layer_stream(open_blob(), digest=digest, size=size, compression=compression,
                             diff_id=diff_id, what=what, progress=progress, blame=blame)

    return LayerSource(diff_id, open_layer, size)


# For minictr.images.pull, which reads the same documents from a registry.
LAYER_COMPRESSION = _LAYER_TYPES


def _pick_manifest(archive: _Archive, index: Any, where: str, ref: str | None,
                   depth: int = 0) -> tuple[_Descriptor, dict[str, Any]]:
    """The one image of an index: the only one, the one named ref, or the one for this
    machine's platform. An index may point to another index (one manifest per platform)."""
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise _fail(f"{where} is not an image index (it has no manifests list)", _AGAIN)
    if depth > 4:
        raise _fail(f"{where}: indexes nested too deep", _AGAIN)
    found = {d.digest: d for d in (_descriptor(m, where) for m in index["manifests"])
             if d.media_type in INDEX_TYPES | MANIFEST_TYPES | {""}}
    candidates = list(found.values())
    if ref is not None and depth == 0:
        candidates = [d for d in candidates if d.annotations.get(REF_NAME) == ref]
        if not candidates:
            raise _fail(f"{where} has no image named {ref!r}")
    if len(candidates) > 1:
        arch = machine_arch()
        candidates = [d for d in candidates if d.platform.get("os") == "linux"
                      and d.platform.get("architecture") == arch] or candidates
    if len(candidates) != 1:
        names = sorted({_describe(d) for d in found.values()})
        raise _fail(f"{where} lists {len(found)} images ({', '.join(names)}) and minictr "
                    f"cannot tell which one to import",
                    "copy only the one you want: skopeo copy oci:DIR:REF oci:NEWDIR:REF")
    desc = candidates[0]
    doc = _blob_json(archive, desc, where)
    if desc.media_type in INDEX_TYPES or (not desc.media_type and "manifests" in doc):
        return _pick_manifest(archive, doc, desc.short, None, depth + 1)
    return desc, doc


def _describe(d: _Descriptor) -> str:
    if REF_NAME in d.annotations:
        return d.annotations[REF_NAME]
    if d.platform:
        return f"{d.platform.get('os')}/{d.platform.get('architecture')}"
    return d.short


# --- the image config -----------------------------------------------------------------------


def _diff_ids(config: dict[str, Any], layers: int) -> list[str]:
    """config.rootfs.diff_ids: the digest of each layer's uncompressed tar, bottom first."""
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != layers:
        count = len(diff_ids) if isinstance(diff_ids, list) else "no"
        raise _fail(f"the image config lists {count} layer diff_ids, but the manifest names "
                    f"{layers} layers", _AGAIN)
    for diff_id in diff_ids:
        alg, _, encoded = str(diff_id).partition(":")
        if alg not in _DIGEST or not _DIGEST[alg].fullmatch(encoded):
            raise _fail(f"the image config has an invalid diff_id {diff_id!r}", _AGAIN)
    return diff_ids


def _image_config(config: dict[str, Any]) -> ImageConfig:
    """config.config's Cmd, Entrypoint, Env, WorkingDir (config.md); each may be missing."""
    c = config.get("config") or {}
    if not isinstance(c, dict):
        raise _fail("the image config is not valid: config.config is not an object", _AGAIN)

    def strings(key: str) -> tuple[str, ...]:
        value = c.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(f"the image config's {key} is not a list of strings", _AGAIN)
        return tuple(value)

    workdir = c.get("WorkingDir") or "/"
    if not isinstance(workdir, str):
        raise _fail("the image config's WorkingDir is not a string", _AGAIN)
    return ImageConfig(cmd=strings("Cmd"), entrypoint=strings("Entrypoint"),
                       env=strings("Env"), workdir=workdir)


descriptor = _descriptor  # for minictr.images.pull: the same rules for a registry's documents
config_diff_ids = _diff_ids
image_config = _image_config


# --- docker save ----------------------------------------------------------------------------


def _read_docker(archive: _Archive, ref: str | None) -> ImageSource:
    """manifest.json: [{"Config": "HEX.json", "RepoTags": [...], "Layers": ["ID/layer.tar"]}]

    The names carry no digests, except where they are content addresses: Docker's config is
    named by its digest (the image ID) and newer Docker names blobs blobs/sha256/HEX; those
    are checked. Every layer is checked against its diff_id as it is read.
    """
    entries = _read_json(archive, "manifest.json", "manifest.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _fail("manifest.json is not a docker save manifest (a list of images)", _AGAIN)
    if ref is not None:
        entries = [e for e in entries if any(_tag_matches(t, ref) for t in e.get("RepoTags")
                                             or [])]
    unique = list({str(e.get("Config")): e for e in entries}.values())
    if not unique:
        raise _fail("manifest.json lists no image" + (f" tagged {ref!r}" if ref else ""))
    if len(unique) > 1:
        tags = sorted(str(t) for e in unique for t in e.get("RepoTags") or [])
        raise _fail(f"manifest.json lists {len(unique)} images ({', '.join(tags) or 'untagged'})"
                    " and minictr cannot tell which one to import",
                    "save only the one you want: docker save NAME:TAG -o FILE")
    entry = unique[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list) or not all(
            isinstance(n, str) for n in layer_names):
        raise _fail("manifest.json is not a docker save manifest (Config, Layers)", _AGAIN)
    config = _docker_config(archive, config_name)
    diff_ids = _diff_ids(config, len(layer_names))
    layers = tuple(_docker_layer(archive, name, diff_id)
                   for name, diff_id in zip(layer_names, diff_ids, strict=True))
    return ImageSource("docker-archive", layers, _image_config(config))


def _tag_matches(tag: str, ref: str) -> bool:
    return tag == ref or tag.removeprefix("docker.io/").removeprefix("library/") == ref


def _name_digest(name: str) -> str | None:
    """The digest a file name is, if it is a content address: HEX.json, blobs/sha256/HEX."""
    parts = name.removesuffix(".json").split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] in _DIGEST:
        return f"{parts[1]}:{parts[2]}" if _DIGEST[parts[1]].fullmatch(parts[2]) else None
    if len(parts) == 1 and name.endswith(".json") and _DIGEST["sha256"].fullmatch(parts[0]):
        return f"sha256:{parts[0]}"
    return None


def _docker_config(archive: _Archive, name: str) -> dict[str, Any]:
    size = archive.size(name)
    if size is None:
        raise _fail(f"manifest.json names {name} which is not in the archive", _AGAIN)
    config = _read_json(archive, name, name, digest=_name_digest(name), size=size)
    if not isinstance(config, dict):
        raise _fail(f"{name} is not an image config", _AGAIN)
    return config


def _docker_layer(archive: _Archive, name: str, diff_id: str) -> LayerSource:
    size = archive.size(name)
    if size is None:
        raise _fail(f"manifest.json names {name} which is not in the archive", _AGAIN)
    with archive.open(name) as f:
        compression = _sniff(f)  # docker save writes plain tars; others may not
    def open_layer(progress: Callable[[int], None] | None = None) -> ContextManager[IO[bytes]]:
        return _layer_stream(archive.open(name), digest=_name_digest(name), size=size,
                             compression=compression, diff_id=diff_id, what=name,
                             progress=progress)

    return LayerSource(diff_id, open_layer, size)


# --- writing an OCI image layout tar --------------------------------------------------------


def _json_bytes(doc: object) -> bytes:
    """One stable form, so the same image always has the same digests."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _HashingWriter:
    """A file that hashes and counts what is written to it: the compressed blob's digest."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _gzip_layer(src: Path, dest: Path, progress: Callable[[int], None] | None,
                done: int) -> tuple[str, int, str]:
    """Compress one layer tar: (digest of the gzip blob, its size, digest of the tar).

    Shell: gzip -n -6 <LAYER.tar >BLOB; sha256sum BLOB; sha256sum LAYER.tar
    mtime=0 and no file name in the gzip header: the same tar always gives the same blob.
    """
    tar_hash = hashlib.sha256()
    with open(src, "rb") as inp, open(dest, "wb") as out:
        writer = _HashingWriter(out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=writer,  # type: ignore[arg-type]
                           compresslevel=6, mtime=0) as gz:
            while chunk := inp.read(_CHUNK):
                tar_hash.update(chunk)
                gz.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done)
    return f"sha256:{writer.hash.hexdigest()}", writer.size, f"sha256:{tar_hash.hexdigest()}"


def write_oci_layout_tar(out_path: Path, layers: Sequence[Path], config: ImageConfig,
                         ref_name: str, *, created: str, diff_ids: Sequence[str],
                         progress: Callable[[int], None] | None = None) -> None:
    """Write an OCI image layout as one tar (an "oci-archive"), atomically.

    ``layers`` are uncompressed layer tars, bottom first, and ``diff_ids`` their digests
    (checked here). Each becomes a tar+gzip blob: what umoci, skopeo and registries all read.
    ``progress`` is called with the bytes of layer tars compressed so far.

    Shell: umoci init --layout L; ...; tar -C L -cf OUT oci-layout index.json blobs
    Check: skopeo inspect oci-archive:OUT:REF; umoci unpack --image L:REF BUNDLE
    """
    if not _REF.fullmatch(ref_name):
        raise StepError(EXPORT_STEP, f"{ref_name!r} is not a valid OCI reference name",
                        hint="letters and digits, each run of them separated by one of "
                        "- . _ : @ + or by --: an image-layout.md rule that umoci enforces")
    if len(layers) != len(diff_ids):
        raise StepError(EXPORT_STEP, f"{len(layers)} layers but {len(diff_ids)} diff_ids")
    try:
        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as t:
            tmp = Path(t)
            blobs, layer_descs = _compress_layers(layers, diff_ids, tmp, progress)
            index = _add_config_and_manifest(blobs, layer_descs, config, ref_name, created,
                                             list(diff_ids))
            layout = {"oci-layout": _json_bytes({"imageLayoutVersion": LAYOUT_VERSION}),
                      "index.json": index}
            _write_tar(tmp / "image.tar", layout, blobs)
            os.replace(tmp / "image.tar", out_path)  # same directory: rename(2), atomic
    except OSError as e:
        raise StepError.from_os_error(EXPORT_STEP, e) from e


def _compress_layers(layers: Sequence[Path], diff_ids: Sequence[str], tmp: Path,
                     progress: Callable[[int], None] | None,
                     ) -> tuple[dict[str, Path | bytes], list[dict[str, Any]]]:
    """Each layer tar as a gzip blob in tmp: the blobs (digest -> file), their descriptors."""
    blobs: dict[str, Path | bytes] = {}
    descs, done = [], 0
    for number, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True), 1):
        gz = tmp / f"layer-{number}.tar.gz"
        digest, size, seen = _gzip_layer(layer, gz, progress, done)
        if seen != diff_id:
            raise StepError(EXPORT_STEP, f"layer {number} ({layer}) hashes to {seen}, "
                            f"not to its diff_id {diff_id}")
        done += layer.stat().st_size
        blobs[digest] = gz  # two equal layers are one blob
        descs.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size})
    return blobs, descs


def _add_config_and_manifest(blobs: dict[str, Path | bytes], layer_descs: list[dict[str, Any]],
                             config: ImageConfig, ref_name: str, created: str,
                             diff_ids: list[str]) -> bytes:
    """Add the config and manifest blobs; return index.json, which points to the manifest
    and names it ref_name (what `skopeo ... oci-archive:FILE:REF` and umoci's --image L:REF
    look up)."""
    arch = machine_arch()
    config_blob = _json_bytes(_config_doc(config, arch, created, diff_ids))
    manifest_blob = _json_bytes({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layer_descs,
        "config": {"mediaType": OCI_CONFIG, "digest": _digest(config_blob),
                   "size": len(config_blob)},
    })
    blobs[_digest(config_blob)] = config_blob
    blobs[_digest(manifest_blob)] = manifest_blob
    return _json_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": _digest(manifest_blob),
        "size": len(manifest_blob), "annotations": {REF_NAME: ref_name},
        "platform": {"architecture": arch, "os": "linux"},
    }]})


def _config_doc(config: ImageConfig, arch: str, created: str,
                diff_ids: list[str]) -> dict[str, Any]:
    """The image config (config.md); empty fields are left out, as Docker leaves them."""
    run: dict[str, Any] = {"WorkingDir": config.workdir or "/"}
    for key, value in (("Cmd", config.cmd), ("Entrypoint", config.entrypoint),
                       ("Env", config.env)):
        if value:
            run[key] = list(value)
    return {
        "architecture": arch, "os": "linux", "created": created, "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": "minictr"} for _ in diff_ids],
    }


def _write_tar(dest: Path, files: dict[str, bytes], blobs: dict[str, Path | bytes]) -> None:
    """The layout as a tar: owner root, mtime 0, a fixed order: the same image, the same tar."""
    def info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size = (tarfile.DIRTYPE, 0o755, 0) if directory else (
            tarfile.REGTYPE, 0o644, size)
        return ti

    with open(dest, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in files.items():
                tar.addfile(info(name, len(data)), io.BytesIO(data))
            tar.addfile(info("blobs", directory=True))
            tar.addfile(info("blobs/sha256", directory=True))
            for digest, blob in sorted(blobs.items()):
                name = "blobs/" + digest.replace(":", "/", 1)
                if isinstance(blob, bytes):
                    tar.addfile(info(name, len(blob)), io.BytesIO(blob))
                else:
                    with open(blob, "rb") as data:
                        tar.addfile(info(name, blob.stat().st_size), data)
        f.flush()
        os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
