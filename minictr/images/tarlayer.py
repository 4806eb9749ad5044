"""Layers as tar archives (how images travel) and as directories (how overlay stacks them).

An image is an ordered list of layers. A registry, ``docker save`` or umoci hand each layer
over as a tar of what changed (the OCI image-spec, layer.md); overlay needs each one as a
directory to put in ``lowerdir=``. The two say "deleted" and "replaced" differently:

    what               OCI layer tar (layer.md "Whiteouts")   overlay lowerdir (overlayfs.rst)
    NAME deleted       an empty file DIR/.wh.NAME             a char device 0:0 named DIR/NAME
    DIR's old content  an empty file DIR/.wh..wh..opq         the xattr trusted.overlay.opaque=y
      all hidden         ("opaque whiteout")                    on DIR ("opaque directory")

``extract_layer`` turns a tar into overlay's form; ``write_layer`` does the reverse, for a
layer directory or a container's upperdir, and returns the tar's digest (its *diff_id*).

A layer tar comes from elsewhere, so ``extract_layer`` trusts nothing in it: it writes only
below its destination, never through a symlink (every path is opened from a directory fd,
one component at a time, with O_NOFOLLOW: see openat(2)), and it refuses what a layer has no
business holding. It raises StepError("import layer", ...) naming the member; what it wrote
so far is left for the caller to delete.

Decisions, all the same in both directions:

- **setuid, setgid and sticky bits are kept**, as ``tar -xp`` as root, Docker and umoci keep
  them: images need them (su, passwd, /tmp). minictr sets no_new_privs in the container, so a
  setuid program there cannot gain privileges by it.
- **Only one xattr is kept: security.capability** (file capabilities: ping's cap_net_raw, in
  PAX records ``SCHILY.xattr.security.capability``). The others are dropped: trusted.* most of
  all, because overlay reads trusted.overlay.* as instructions (redirect, metacopy), and those
  must never come from an archive. The one exception is read, never copied: a directory whose
  record says trusted.overlay.opaque=y is made opaque, as if it held .wh..wh..opq.
- **Duplicate entries** (layer.md says a layer MUST NOT have them; tar allows them): the later
  one wins, as with ``tar -x``; two directories merge, with the later one's attributes
  (layer.md "Changeset over existing files").
- **A whiteout never hides an entry of its own layer** (layer.md: "Whiteout files MUST only
  apply to resources in lower/parent layers"), so whiteouts are applied after everything
  else: ``.wh.NAME`` beside a directory NAME of the same layer makes that directory opaque.
- **Hard links** only to a regular file extracted earlier from the same layer.
- **Devices**: only char 0:0, a whiteout already in overlay's form (some exporters tar an
  upperdir as it is). Other devices are refused both ways: /dev is made at run time.
- **Sockets** are not written: tar has no type for them, and a socket means nothing without
  the process that listens on it.
- A layer's root: a ``./`` entry is skipped (the root's attributes come from the run);
  ``.wh..wh..opq`` at the root is kept as the xattr, but overlay ignores opaque on a layer's
  root: the layers below such a layer are hidden whole, so the image should drop them.
- mtimes are whole seconds (as in a ustar header); uid and gid are numbers, no names.

Shell: tar -xpf LAYER.tar --numeric-owner -C DEST, then for each DIR/.wh.NAME:
         rm DIR/.wh.NAME; mknod DIR/NAME c 0 0
       and for each DIR/.wh..wh..opq:
         rm DIR/.wh..wh..opq; setfattr -n trusted.overlay.opaque -v y DIR
See: https://github.com/opencontainers/image-spec/blob/main/layer.md, tar(5), mknod(2),
     xattr(7), capabilities(7) "File capabilities", openat(2), overlayfs.rst
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, BinaryIO

from minictr.errors import StepError
from minictr.explain import note, step
from minictr.fs import walk
from minictr.fs.remove import remove_at
from minictr.fs.walk import Walk
from minictr.show.diff import OPAQUE_XATTR, is_opaque_fd, is_whiteout
from minictr.show.report import escaped

IMPORT = "import layer"
EXPORT = "export layer"

WHITEOUT_PREFIX = ".wh."  # .wh.NAME: NAME is deleted
OPAQUE_MARKER = ".wh..wh..opq"  # in DIR: DIR's entries in the layers below are hidden
CAPABILITY_XATTR = "security.capability"
PAX_XATTR = "SCHILY.xattr."  # how GNU tar, Go's archive/tar and Docker put xattrs in PAX

_CHUNK = 1 << 16
_NEAR = 4  # open_dir looks for an opened directory this many levels up, then from the top
_OPENED_MAX = 64  # directories open_dir keeps open
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Not closed after use: each only reads from the caller's stream, which the caller closes.
_DECOMPRESSORS: tuple[tuple[bytes, str, Callable[[IO[bytes]], IO[bytes]]], ...] = (
    (b"\x1f\x8b", "gzip", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (b"BZh", "bzip2", lambda f: bz2.BZ2File(f)),
    (b"\xfd7zXZ\x00", "xz", lambda f: lzma.LZMAFile(f)),  # noqa: SIM115
)
# What the decompressors raise on bad input. bz2 raises a plain OSError with no errno
# ("Invalid data stream"); a real I/O error always has an errno.
_BAD_COMPRESSED = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)

_HINTS = {
    errno.EPERM: "writing a layer needs root: whiteouts are device nodes (mknod(2)) and "
    "opaque directories need trusted.* xattrs (xattr(7))",
    errno.ENOSPC: "the disk that holds the store is full: df MINICTR_ROOT",
    errno.ENOTSUP: "the store's filesystem has no xattrs: use ext4, xfs, btrfs or tmpfs",
}
_MALFORMED = "the archive is malformed or made to escape; nothing of it is kept"


@dataclass(frozen=True)
class LayerStats:
    """What extract_layer wrote."""

    files: int = 0  # entries made: files, directories, symlinks, hard links, fifos
    bytes: int = 0  # bytes of file content (a hard link's once)
    whiteouts: int = 0  # char devices 0:0 made
    opaque_dirs: int = 0  # directories given trusted.overlay.opaque=y
    # sha256 of the uncompressed tar: the image config lists it in rootfs.diff_ids
    diff_id: str = ""


# --- import: a tar stream into a layer directory -----------------------------------------


def extract_layer(
    tar_stream: IO[bytes], dest: Path, *, progress: Callable[[int], None] | None = None
) -> LayerStats:
    """Extract one layer tar (plain, gzip, bzip2 or xz) into the empty directory ``dest``,
    in overlay's form. ``progress(n)`` is called with the bytes read from ``tar_stream``.

    Shell: tar -xpf LAYER --numeric-owner -C DEST    (then whiteouts: see the module doc)
    """
    with step(IMPORT, f"tar -xpf LAYER --numeric-owner -C {dest}  # + whiteouts, see tarlayer",
              why="into a temporary directory, renamed into place only once complete and "
              "checked"):
        plain = _uncompressed(_Input(tar_stream, progress))
        with _LayerDir(dest) as layer:
            _extract_members(plain, layer)
            layer.apply_markers_and_dir_attributes()
        return replace(layer.stats, diff_id=plain.diff_id())


def diff_id_of(path: Path) -> str:
    """``sha256:HEX`` of a layer tar's uncompressed bytes, the digest an image config lists.

    Shell: zcat -f LAYER | sha256sum
    """
    with step(IMPORT, f"zcat -f {path} | sha256sum", why="a layer is named by the hash of "
              "its uncompressed tar: known before anything is extracted"), \
            open(path, "rb") as f:
        plain = _uncompressed(_Input(f, None))
        try:
            plain.read_to_end()
        except _Corrupt as e:
            raise StepError(IMPORT, f"{path}: corrupt archive: {e}") from e
        return plain.diff_id()


def _extract_members(plain: _Uncompressed, layer: _LayerDir) -> None:
    """Every member in archive order, then a check that the archive really ended."""
    try:
        with tarfile.open(fileobj=plain, mode="r|", tarinfo=_TarInfo) as tar:
            for member in tar:
                layer.add(member, tar)
            _check_end(tar)
        plain.read_to_end()  # the diff_id covers every byte, the padding after the end too
    except (tarfile.ReadError, _Corrupt) as e:
        raise _archive_error(e, layer.last, plain.compression) from e


class _TarInfo(tarfile.TarInfo):
    """A TarInfo that notes why tarfile stopped reading.

    tarfile ends the archive quietly at the first header it cannot read, just as at the
    end-of-archive block of zeros (tar(5)): an archive cut at a header would look complete.
    """

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as e:
            tar.minictr_stopped_by = e  # type: ignore[attr-defined]
            raise


def _check_end(tar: tarfile.TarFile) -> None:
    stopped_by = getattr(tar, "minictr_stopped_by", None)
    if not isinstance(stopped_by, tarfile.EOFHeaderError):  # EOF: a block of zeros
        why = f"({stopped_by})" if stopped_by else ""
        raise _Corrupt(f"no end-of-archive blocks where the next header should be {why}")


def _archive_error(err: Exception, last: str | None, compression: str) -> StepError:
    """tarfile's and the decompressors' errors, said in terms of the archive."""
    if last is None and compression == "tar" and isinstance(err, tarfile.ReadError):
        return StepError(IMPORT, f"not a tar archive (nor gzip, bzip2 or xz): {err}",
                         hint="an OCI layer is a tar, maybe compressed: `file LAYER` says which")
    where = f"in or after member {last!r}" if last else "before the first member"
    return StepError(IMPORT, f"truncated or corrupt archive ({compression}), {where}: {err}",
                     hint="download or export it again")


class _Corrupt(Exception):
    """The bytes are not a valid archive (a decompressor's complaint, or a cut tar)."""


# --- the input: counted, then uncompressed and hashed ------------------------------------


class _Input:
    """The stream as given: counts bytes for ``progress``, and lets us peek at the first ones."""

    def __init__(self, stream: IO[bytes], progress: Callable[[int], None] | None) -> None:
        self._stream = stream
        self._progress = progress
        self._ahead = b""
        self.count = 0

    def peek(self, n: int) -> bytes:
        while len(self._ahead) < n and (more := self._stream.read(n - len(self._ahead))):
            self._ahead += more
        return self._ahead[:n]

    def read(self, size: int = -1) -> bytes:
        if self._ahead:
            n = len(self._ahead) if size < 0 else size
            data, self._ahead = self._ahead[:n], self._ahead[n:]
        else:
            data = self._stream.read(size)
        self.count += len(data)
        if data and self._progress:
            self._progress(self.count)
        return data


class _Uncompressed:
    """The plain tar bytes: hashed as they pass (the diff_id), decompressor errors as _Corrupt.

    The decompression is done here, not by tarfile's "r|*": tarfile's own stream reader
    never checks a gzip's CRC nor notices a compressed stream that was cut short.
    """

    def __init__(self, reader: IO[bytes] | _Input, compression: str) -> None:
        self._reader = reader
        self.compression = compression
        self._sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._reader.read(size)
        except _BAD_COMPRESSED as e:
            raise _Corrupt(str(e) or type(e).__name__) from e
        except OSError as e:
            if e.errno is not None:
                raise  # a real I/O error, not bad data
            raise _Corrupt(str(e)) from e
        self._sha.update(data)
        return data

    def read_to_end(self) -> None:
        while self.read(_CHUNK):
            pass

    def diff_id(self) -> str:
        return f"sha256:{self._sha.hexdigest()}"


def _uncompressed(source: _Input) -> _Uncompressed:
    """Decompress by the magic bytes at the start (gzip, bzip2, xz), or read a plain tar."""
    head = source.peek(6)
    if head.startswith(_ZSTD_MAGIC):
        raise StepError(IMPORT, "a zstd-compressed layer: Python's standard library cannot read it",
                        hint="decompress it first: zstd -d < LAYER > LAYER.tar")
    for magic, name, opener in _DECOMPRESSORS:
        if head.startswith(magic):
            return _Uncompressed(opener(source), name)  # type: ignore[arg-type]
    return _Uncompressed(source, "tar")


# --- the layer directory being written ---------------------------------------------------


class _LayerDir:
    """The directory a layer is extracted into, opened once.

    Every path below it is opened from this fd one component at a time with O_NOFOLLOW, so a
    symlink in the layer (``etc -> /etc``: normal in a rootfs) is never followed by us: it
    is for the container to resolve, inside its own root.
    """

    def __init__(self, dest: Path) -> None:
        self.fd = os.open(dest, _OPEN_DIR)
        self.stats = LayerStats()
        self.last: str | None = None  # the member being extracted, for error messages
        self.regular_files: set[str] = set()  # what a hard link may point to
        self.dirs: dict[str, tarfile.TarInfo] = {}  # their attributes are set last
        self.whiteouts: dict[str, tarfile.TarInfo] = {}  # path -> its .wh. marker
        self.opaque: dict[str, str] = {}  # path -> the member that made it opaque
        # The directories opened last, by path: a tar lists a directory's entries together,
        # so the next member's parent is one of them, and a tree 5000 deep is not walked
        # from the top for each member. Each fd was opened one component at a time.
        self.opened: dict[str, int] = {}

    def __enter__(self) -> _LayerDir:
        if os.listdir(self.fd):
            os.close(self.fd)
            raise StepError(IMPORT, "the destination directory is not empty",
                            hint="extract each layer into a new, empty directory")
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.opened.values():
            os.close(fd)
        os.close(self.fd)

    def count(self, **more: int) -> None:
        self.stats = replace(self.stats, **{k: getattr(self.stats, k) + v for k, v in more.items()})

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        """One member: a marker is noted for later, anything else is made now."""
        self.last = member.name
        parts = _member_parts(member)
        if not parts:
            return  # "./", the layer's root: a container's root gets its attributes at run time
        path, kind = "/".join(parts), _marker_kind(member, parts)
        if kind == "opaque":
            self.opaque["/".join(parts[:-1])] = member.name
        elif kind == "whiteout":
            self.whiteouts[_join(parts[:-1], parts[-1][len(WHITEOUT_PREFIX) :])] = member
        else:
            _check_type(member)
            with _os_errors(member.name):
                self._make(member, parts, path, tar)

    # --- making one entry ---

    def _make(self, member: tarfile.TarInfo, parts: list[str], path: str,
              tar: tarfile.TarFile) -> None:
        target = self._hardlink_target(member, path) if member.islnk() else None
        parent = self.open_dir(parts[:-1], member.name)
        try:
            name = parts[-1]
            self._make_room(parent, name, path, member)
            if member.isdir():
                self._make_dir(parent, name, path, member)
            elif member.isreg():
                self._write_file(parent, name, path, member, tar)
            elif target is not None:
                self._link(parent, name, path, target, member)
            else:
                _make_node(parent, name, member)
                whiteout = _is_whiteout_device(member)
                self.count(files=int(not whiteout), whiteouts=int(whiteout))
        finally:
            os.close(parent)

    def _make_room(self, parent: int, name: str, path: str, member: tarfile.TarInfo) -> None:
        """A duplicate entry: the later one wins (a directory over a directory: they merge).

        Shell: rm -rf NAME    (before making it again)
        """
        st = _lstat(parent, name)
        if st is None or (stat.S_ISDIR(st.st_mode) and member.isdir()):
            return
        remove_at(parent, name, Path(path))
        self._forget(path)

    def _forget(self, path: str) -> None:
        """Whatever was noted about a path that was just removed, and below it."""
        def gone(p: str) -> bool:
            return p == path or p.startswith(path + "/")

        for p in [p for p in self.opened if gone(p)]:
            os.close(self.opened.pop(p))
        self.regular_files = {p for p in self.regular_files if not gone(p)}
        self.dirs = {p: m for p, m in self.dirs.items() if not gone(p)}
        self.whiteouts = {p: m for p, m in self.whiteouts.items() if not gone(p)}
        self.opaque = {p: m for p, m in self.opaque.items() if not gone(p)}

    def _make_dir(self, parent: int, name: str, path: str, member: tarfile.TarInfo) -> None:
        """Shell: mkdir NAME    (its mode, owner and mtime are set at the very end: making
        entries inside would change its mtime, and a 0555 mode would forbid them)"""
        if _lstat(parent, name) is None:
            os.mkdir(name, 0o700, dir_fd=parent)
            self.count(files=1)
        self.dirs[path] = member
        if member.pax_headers.get(PAX_XATTR + OPAQUE_XATTR) == "y":  # a tarred upperdir
            self.opaque[path] = member.name

    def _write_file(self, parent: int, name: str, path: str, member: tarfile.TarInfo,
                    tar: tarfile.TarFile) -> None:
        """Shell: cat > NAME; chown UID:GID NAME; chmod MODE NAME; touch -d MTIME NAME"""
        data = tar.extractfile(member)
        assert data is not None  # a regular file always has data, maybe empty
        with open(os.open(name, _CREATE_FILE, 0o600, dir_fd=parent), "wb") as f:
            shutil.copyfileobj(data, f, _CHUNK)
            f.flush()
            _set_attributes(f.fileno(), member)
        self.regular_files.add(path)
        self.count(files=1, bytes=member.size)

    def _hardlink_target(self, member: tarfile.TarInfo, path: str) -> str:
        """Where a hard link may point: a regular file this layer has already extracted.

        Not an absolute path, nor one with "..": a hard link to /etc/shadow extracted, then
        written to, would change the host's file.
        """
        link = member.linkname
        if link.startswith("/") or ".." in link.split("/"):
            raise _refused(member, f"a hard link to {link!r}, outside the layer")
        target = "/".join(p for p in link.split("/") if p not in ("", "."))
        if target == path:
            raise _refused(member, "a hard link to itself")
        if target not in self.regular_files:
            raise _refused(member, f"a hard link to {link!r}, which is not a regular file "
                           "extracted earlier from this layer")
        return target

    def _link(self, parent: int, name: str, path: str, target: str,
              member: tarfile.TarInfo) -> None:
        """Shell: ln TARGET NAME    (no attributes of its own: it is the same inode)"""
        *target_dir, target_name = target.split("/")
        target_parent = self.open_dir(target_dir, member.name)
        try:
            os.link(target_name, name, src_dir_fd=target_parent, dst_dir_fd=parent,
                    follow_symlinks=False)
        finally:
            os.close(target_parent)
        self.regular_files.add(path)
        self.count(files=1)

    # --- walking down, never through a symlink ---

    def open_dir(self, parts: list[str], member: str) -> int:
        """An fd of DEST/PARTS, made like ``mkdir -p`` where missing; refused through a
        symlink or a non-directory. The caller closes it."""
        path = near = "/".join(parts)
        start, fd = 0, self.fd
        for up in range(min(len(parts), _NEAR) + 1):  # PARTS, its parent, ... if opened
            if up:
                near = near.rpartition("/")[0]
            if (cached := self.opened.get(near)) is not None:
                start, fd = len(parts) - up, cached
                break
        fd = self._step_down_from(os.dup(fd), parts, start, member)
        if len(self.opened) >= _OPENED_MAX:
            os.close(self.opened.pop(next(iter(self.opened))))  # the oldest
        if path and path not in self.opened:
            self.opened[path] = os.dup(fd)
        return fd

    def _step_down_from(self, fd: int, parts: list[str], start: int, member: str) -> int:
        try:
            for i in range(start, len(parts)):
                part = parts[i]
                path = "/".join(parts[: i + 1])
                made = _lstat(fd, part) is None
                fd = _step_down(fd, part, path, member)
                if made and path not in self.dirs:
                    # A directory the archive has no entry for (umoci leaves out parents):
                    # fixed attributes, set last like any directory's, so that the same tar
                    # always makes the same tree, with the same digest (images.add_layer).
                    self.dirs[path] = _implied_dir_info(path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # --- at the end: whiteouts, opaque directories, directory attributes ---

    def apply_markers_and_dir_attributes(self) -> None:
        """Last, in this order: whiteouts and opaque xattrs (a whiteout made inside a
        directory changes its mtime), then each directory's attributes, deepest first."""
        for path, marker in sorted(self.whiteouts.items()):
            with _os_errors(marker.name):
                self._whiteout(path, marker)
        for path, member in sorted(self.opaque.items()):
            with _os_errors(member):
                self._make_opaque(path, member)
        for fd in self.opened.values():
            os.close(fd)
        self.opened.clear()

        def set_attributes(path: str, fd: int) -> None:
            if (member := self.dirs.get(path[1:])) is not None:
                with _os_errors(member.name):
                    _set_attributes(fd, member)

        # Deepest first, each directory once all below it is done: a walk's way back up.
        with Walk(self.fd, IMPORT, leave=set_attributes) as w:
            for entry in w:
                if stat.S_ISDIR(entry.st.st_mode) and (fd := w.open_dir()) is not None:
                    w.enter(fd)

    def _whiteout(self, path: str, marker: tarfile.TarInfo) -> None:
        """``.wh.NAME`` becomes a char device 0:0 named NAME, with the marker's attributes.

        If this layer has NAME itself, that entry already hides the layers below: nothing to
        do, unless it is a directory, which must still hide their content: it becomes opaque.
        Shell: mknod NAME c 0 0     See: mknod(2), overlayfs.rst "whiteouts"
        """
        *parent_parts, name = path.split("/")
        parent = self.open_dir(parent_parts, marker.name)
        try:
            st = _lstat(parent, name)
            if st is None:
                os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
                _set_node_attributes(parent, name, marker)
                self.count(whiteouts=1)
            elif stat.S_ISDIR(st.st_mode):
                self._make_opaque(path, marker.name)
        finally:
            os.close(parent)

    def _make_opaque(self, path: str, member: str) -> None:
        """Shell: setfattr -n trusted.overlay.opaque -v y DIR     See: xattr(7)"""
        fd = self.open_dir(path.split("/") if path else [], member)
        try:
            if not is_opaque_fd(fd):  # a marker and a .wh.DIR may both ask for it
                os.setxattr(fd, OPAQUE_XATTR, b"y")
                self.count(opaque_dirs=1)
        finally:
            os.close(fd)


# --- the rules for one member ------------------------------------------------------------


def _member_parts(member: tarfile.TarInfo) -> list[str]:
    """The member's path as components, without "" and ".": "./etc//hosts" -> [etc, hosts].

    An absolute name or a ".." component is refused: ``tar -x`` strips them with a warning,
    but a layer that has them was made wrong, or made to write outside its directory.
    """
    if member.name.startswith("/"):
        raise _refused(member, "an absolute name; a layer's names are relative to its root")
    parts = member.name.split("/")
    if "" in parts or "." in parts:  # (tested first: a name can be 5000 components long)
        parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts:
        raise _refused(member, "a '..' in the name, which could reach outside the layer")
    return parts


def _marker_kind(member: tarfile.TarInfo, parts: list[str]) -> str:
    """"opaque" (.wh..wh..opq), "whiteout" (.wh.NAME), or "entry" for anything else.

    layer.md: a name starting with .wh. is always a marker, and a marker is an empty file.
    """
    if ("/" + "/".join(parts[:-1])).find("/" + WHITEOUT_PREFIX) >= 0:
        raise _refused(member, "a path below a whiteout marker")
    base = parts[-1]
    if not base.startswith(WHITEOUT_PREFIX):
        return "entry"
    if not member.isreg():
        raise _refused(member, f"a whiteout marker that is a {_type_name(member)}, "
                       "not an empty regular file")
    if base == OPAQUE_MARKER:
        return "opaque"
    if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
        raise _refused(member, "an unknown .wh..wh. marker (old Docker's AUFS metadata?)")
    if base[len(WHITEOUT_PREFIX) :] in ("", ".", ".."):
        raise _refused(member, "a whiteout that names no entry")
    return "whiteout"


def _check_type(member: tarfile.TarInfo) -> None:
    """Files, directories, symlinks, hard links, fifos, and char 0:0 (a whiteout) only."""
    if (member.ischr() or member.isblk()) and not _is_whiteout_device(member):
        raise _refused(member, f"a {_type_name(member)} {member.devmajor}:{member.devminor}; "
                       "a layer holds no devices (/dev is made at run time)")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()
            or member.isfifo() or member.ischr()):
        raise _refused(member, f"an unsupported member type {member.type!r}")


def _is_whiteout_device(member: tarfile.TarInfo) -> bool:
    return member.ischr() and member.devmajor == 0 and member.devminor == 0


def _type_name(member: tarfile.TarInfo) -> str:
    names = {tarfile.DIRTYPE: "directory", tarfile.SYMTYPE: "symlink",
             tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "char device",
             tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}
    return names.get(member.type, "regular file" if member.isreg() else f"type {member.type!r}")


def _refused(member: tarfile.TarInfo, what: str) -> StepError:
    return StepError(IMPORT, f"member {member.name!r}: {what}: refused", hint=_MALFORMED)


@contextmanager
def _os_errors(member: str) -> Iterator[None]:
    """An OSError while making a member's entry, as a StepError that names the member."""
    try:
        yield
    except OSError as e:
        raise StepError(IMPORT, f"member {member!r}: {e.strerror or e}", errno=e.errno,
                        hint=_HINTS.get(e.errno or 0)) from e


# --- small file operations, all relative to a directory fd, none following a symlink -----


def _join(parent: list[str], name: str) -> str:
    return "/".join([*parent, name])


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _step_down(fd: int, name: str, path: str, member: str) -> int:
    """Open the directory NAME in fd (made 0755 if missing), close fd, return the new fd."""
    st = _lstat(fd, name)
    if st is None:
        os.mkdir(name, 0o755, dir_fd=fd)
    elif stat.S_ISLNK(st.st_mode):
        raise StepError(IMPORT, f"member {member!r}: {path!r} is a symlink in the layer, and "
                        "nothing is written through one: refused", hint=_MALFORMED)
    elif not stat.S_ISDIR(st.st_mode):
        raise StepError(IMPORT, f"member {member!r}: {path!r} is not a directory: refused",
                        hint=_MALFORMED)
    new = os.open(name, _OPEN_DIR, dir_fd=fd)  # O_NOFOLLOW: a symlink here fails, ELOOP
    os.close(fd)
    if st is None:
        os.fchmod(new, 0o755)  # made by us for a member below it, as tar does; not umasked
    return new


def _make_node(parent: int, name: str, member: tarfile.TarInfo) -> None:
    """A symlink, a fifo, or a whiteout that came as a char device 0:0.

    Shell: ln -s TARGET NAME; mkfifo NAME; mknod NAME c 0 0     See: symlink(2), mknod(2)
    """
    if member.issym():
        os.symlink(member.linkname, name, dir_fd=parent)  # any target: resolved in the container
    elif member.isfifo():
        os.mkfifo(name, 0o600, dir_fd=parent)
    else:
        os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent)
    _set_node_attributes(parent, name, member)


def _set_attributes(fd: int, member: tarfile.TarInfo) -> None:
    """Owner, mode, capabilities, mtime of an open file or directory, in that order:
    chown clears setuid, setgid and file capabilities (chown(2)), and the mtime goes last.

    Shell: chown UID:GID F; chmod MODE F; setcap ... F; touch -m -d @MTIME F
    """
    if os.geteuid() == 0:  # as a user, as `tar -x` does: the files are the user's own
        os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)  # setuid, setgid and sticky kept: see the module doc
    capability = member.pax_headers.get(PAX_XATTR + CAPABILITY_XATTR)
    if capability is not None and member.isreg():
        # tarfile decoded the bytes as UTF-8 with surrogateescape: this gets them back.
        os.setxattr(fd, CAPABILITY_XATTR, capability.encode("utf-8", "surrogateescape"))
    os.utime(fd, (member.mtime, member.mtime))


def _set_node_attributes(parent: int, name: str, member: tarfile.TarInfo) -> None:
    """As _set_attributes, for what cannot be opened: a symlink (no mode of its own), a
    fifo (opening blocks), a device. Shell: chown -h UID:GID NAME; touch -h -m NAME"""
    if os.geteuid() == 0:
        os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
    if not member.issym():
        os.chmod(name, member.mode & 0o7777, dir_fd=parent)  # we just made it: no symlink
    os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)


# --- export: a directory in overlay's form into a tar ------------------------------------


def write_layer(src: Path, out: IO[bytes]) -> str:
    """Write ``src`` (a layer directory, or a container's upperdir) to ``out`` as an
    uncompressed OCI layer tar, and return its diff_id, ``sha256:HEX`` of the bytes written.

    The same tree always gives the same bytes: names sorted, POSIX (PAX) format, numeric
    owners and no names, mtimes in whole seconds, and fixed attributes on the markers.
    Within a directory: .wh..wh..opq first, then the whiteouts, then the entries (layer.md:
    "whiteout files appear before sibling directory entries").

    Shell: tar -cf - --format=posix --sort=name --numeric-owner -C SRC .
           (with each char 0:0 NAME written as .wh.NAME, and an opaque DIR given DIR/.wh..wh..opq)
    """
    hashed = _HashingWriter(out)
    shell = f"tar -cf - --format=posix --sort=name --numeric-owner -C {src} ."
    top = os.open(src, _OPEN_DIR)
    try:
        with step(EXPORT, shell, why="one byte-exact tar for the same tree, always: its "
                  "hash is the layer's name"), \
                tarfile.open(fileobj=hashed, mode="w|", format=tarfile.PAX_FORMAT) as tar, \
                Walk(top, EXPORT, order=_tar_order) as w:
            if is_opaque_fd(top):
                tar.addfile(_marker_info(OPAQUE_MARKER))
            links: _Links = {}
            for entry in w:
                try:
                    _write_entry(tar, w, entry, links)
                except OSError as e:
                    if e.errno not in walk.CHANGED:
                        raise
                    # Removed or replaced since it was listed (a running container): left
                    # out. Nothing was written for it: each header goes last.
                    note(f"{escaped(entry.path)} changed while it was read: not in the layer")
    finally:
        os.close(top)
    return hashed.diff_id()


def _tar_order(entry: tuple[str, os.stat_result]) -> tuple[bool, bytes]:
    """Within a directory, whiteouts first, then the entries; each by the bytes of its name."""
    name, st = entry
    return not is_whiteout(st), os.fsencode(name)


class _HashingWriter:
    """``out``, with a sha256 of everything written to it."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self._out.write(data)
        return len(data)

    def diff_id(self) -> str:
        return f"sha256:{self._sha.hexdigest()}"


_Links = dict[tuple[int, int], str]  # (st_dev, st_ino) of a regular file -> its first name


def _write_entry(tar: tarfile.TarFile, w: Walk, entry: walk.Entry, links: _Links) -> None:
    """One entry; a directory's, and its opaque marker, before everything below it."""
    name, st = entry.path[1:], entry.st
    if is_whiteout(st):
        tar.addfile(_marker_info(_parent_prefix(name) + WHITEOUT_PREFIX + entry.name))
        return
    if entry.name.startswith(WHITEOUT_PREFIX):
        raise StepError(EXPORT, f"{name!r}: a name starting with .wh. would read as a whiteout",
                        hint="rename it: OCI layers cannot hold such names (layer.md)")
    info = _tarinfo(name, st)
    here = w.dir_fd()
    assert here is not None
    if stat.S_ISDIR(st.st_mode):
        fd = w.open_dir()
        if fd is None:  # a running container made it a symlink since it was listed
            raise OSError(errno.ENOTDIR, "not a directory any more", name)
        tar.addfile(info)
        w.enter(fd)
        if is_opaque_fd(fd):  # trusted.* or, from a --userns container, user.*
            tar.addfile(_marker_info(name + "/" + OPAQUE_MARKER))
    elif stat.S_ISREG(st.st_mode):
        _write_file(tar, (here, entry.name), info, st, links)
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, walk.readlink(here, entry.name)
        tar.addfile(info)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    elif stat.S_ISSOCK(st.st_mode):
        note(f"not in the layer: /{escaped(name)} is a socket (tar has no socket type)")
    else:
        raise StepError(EXPORT, f"{name!r}: a device {os.major(st.st_rdev)}:"
                        f"{os.minor(st.st_rdev)}; a layer holds no devices",
                        hint="/dev is made at run time: delete it, then export again")


def _parent_prefix(name: str) -> str:
    """"a/b/c" -> "a/b/", "c" -> ""."""
    return name.rpartition("/")[0] + "/" if "/" in name else ""


def _write_file(tar: tarfile.TarFile, at: tuple[int, str], info: tarfile.TarInfo,
                st: os.stat_result, links: _Links) -> None:
    """A regular file's content, or a hard link to the name it was first written under.

    Only regular files: overlay shares one whiteout inode among many whiteouts, and those
    become separate .wh. files (they never reach here).
    """
    first = links.setdefault((st.st_dev, st.st_ino), info.name) if st.st_nlink > 1 else None
    if first is not None and first != info.name:
        info.type, info.linkname = tarfile.LNKTYPE, first
        tar.addfile(info)
        return
    with open(walk.open_regular(*at, st), "rb") as f:
        if (capability := walk.fd_xattr(f.fileno(), CAPABILITY_XATTR)) is not None:
            info.pax_headers = {PAX_XATTR + CAPABILITY_XATTR:
                                capability.decode("utf-8", "surrogateescape")}
        info.size = st.st_size
        tar.addfile(info, _Padded(f, info.size, "/" + info.name))


class _Padded:
    """``size`` bytes of a file, whatever it does meanwhile: tar's header already holds
    the size from lstat. A running container (commit --pause=false) may shrink the file
    while it is read; the rest is zeros, as GNU tar does ("File shrank by N bytes; padding
    with zeros"). Bytes it grew by are left out: tarfile reads ``size`` bytes, no more."""

    def __init__(self, f: BinaryIO, size: int, path: str) -> None:
        self.f, self.left, self.path, self.shrank = f, size, path, False

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        data = b""
        while not self.shrank and len(data) < n:
            more = self.f.read(n - len(data))
            data += more
            if not more:  # the end of the file, before its size
                self.shrank = True
                note(f"{escaped(self.path)} shrank by {self.left - len(data)} bytes while "
                     "it was read: padded with zeros, as tar does")
        data += bytes(n - len(data))
        self.left -= n
        return data


def _tarinfo(name: str, st: os.stat_result) -> tarfile.TarInfo:
    """A header from lstat: mode, numeric uid and gid (no user names), whole-second mtime."""
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    info.type = tarfile.DIRTYPE if stat.S_ISDIR(st.st_mode) else tarfile.REGTYPE
    return info


def _implied_dir_info(name: str) -> tarfile.TarInfo:
    """A directory made for the entries below it: 0755, root's, mtime 0, as tar's
    ``mkdir -p`` would make it, but with no time of its own (it would be the import's)."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    return info


def _marker_info(name: str) -> tarfile.TarInfo:
    """An empty file .wh.NAME or .wh..wh..opq, with fixed attributes: a marker's own mean
    nothing, and overlay's whiteouts share one inode whose mtime says when it was made."""
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o600, 0
    return info
