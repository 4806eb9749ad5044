"""`minictr push NAME REF`: a local image into a registry, that Docker, Podman and skopeo pull.

    1. each layer          its tar (tarlayer.write_layer: the bytes its digest names, so the
                           layer's digest is its diff_id), gzip-compressed once and kept as
                           layers/HEX.tar.gz: the next push sends the very same blob
    2. the config          the image's command, environment and working directory, and
                           rootfs.diff_ids: the layers' own digests
    3. each blob           HEAD first: one the registry has is not sent again. Else POST
                           .../blobs/uploads/ for a place to send it, then one PUT of the whole
                           blob, or (larger than MINICTR_PUSH_CHUNK_SIZE, 64 MiB by default)
                           PATCHes of chunks and a PUT that ends it with its digest
    4. the manifest        last: a registry takes a manifest only when all it names is there

The result has fixed digests: the same image pushed twice is the same manifest, and pulled
back into minictr it is the same layers (their digests are the diff_ids it pushed).

Shell (roughly): minictr image export NAME F.tar && skopeo copy oci-archive:F.tar:NAME docker://REF
See: https://github.com/opencontainers/distribution-spec/blob/main/spec.md "Push"
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import IO, Any, TextIO

from minictr.errors import StepError
from minictr.explain import note, progress, step
from minictr.images import catalog, oci, reference, registry
from minictr.spec import Image
from minictr.store import Store

STEP = "push image"
DEFAULT_CHUNK = 64 << 20


def chunk_size() -> int:
    try:
        return max(int(os.environ.get("MINICTR_PUSH_CHUNK_SIZE") or DEFAULT_CHUNK), 1)
    except ValueError:
        return DEFAULT_CHUNK


def push(store: Store, name: str, text: str, *, out: TextIO = sys.stdout) -> str:
    """Returns the manifest's digest, as the registry confirmed it."""
    image = catalog.get_existing(store, name)
    ref = reference.parse(text)
    if ref.digest:
        raise StepError("check input", f"{text[:200]!r} names a digest: push to a tag",
                        hint="the digest is the manifest's, known once it is pushed: "
                        f"{ref.registry}/{ref.repository}:TAG")
    lock = catalog.hold_for_start(store)  # no rmi of its layers while they are read
    try:
        blobs = [compressed(store, image, number) for number in range(len(image.digests))]
    finally:
        os.close(lock)
    config = _config(store, image)
    manifest = oci._json_bytes({
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": oci._digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": oci.OCI_LAYER_GZIP, "digest": d, "size": s}
                   for _, d, s in blobs]})
    from minictr.images import pull  # connect: the same ping, token and mirror rules

    client = pull.connect(ref, actions="pull,push", step_name=STEP)
    try:
        sent = 0
        for number, (path, digest, size) in enumerate(blobs, 1):
            sent += upload(client, f"layer {number} of {len(blobs)}", digest, size, path, out)
        sent += upload(client, "the config", oci._digest(config), len(config), config, out)
        digest = put_manifest(client, ref, manifest)
    finally:
        client.close()
    print(f"pushed {image.name} to {ref.familiar}: {len(blobs)} layer"
          f"{'s' if len(blobs) != 1 else ''}, {sent} blob{'s' if sent != 1 else ''} uploaded",
          file=out)
    print(f"digest: {digest}", file=out)
    return digest


def _config(store: Store, image: Image) -> bytes:
    """The image config (config.md): the layers' digests are its diff_ids. A pulled image
    keeps the architecture it was pulled for; a local one is this machine's."""
    platform = catalog.pulled_from(store, image.name).get("platform", "")
    arch = platform.split("/")[1] if platform.count("/") >= 1 else oci.machine_arch()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(image.created))
    return oci._json_bytes(oci._config_doc(image.config, arch, created, list(image.digests)))


def compressed(store: Store, image: Image, index: int) -> tuple[Path, str, int]:
    """The layer's tar, gzip-compressed: (the file, its digest, its size). Made once, kept as
    layers/HEX.tar.gz and its digest recorded in layers/HEX.json; the tar is written again
    and must hash to the layer's digest (the layer did not change on disk)."""
    digest = image.digests[index]
    path = catalog.compressed_blob(store, digest)
    known = catalog.layer_meta(store, digest).get("gzip")
    if path.exists() and isinstance(known, dict):
        return path, str(known["digest"]), int(known["size"])
    from minictr.images import tarlayer

    what = f"layer {index + 1} of {len(image.digests)}"
    hexdigest = digest.removeprefix("sha256:")
    with step(f"compress {what}", f"tar -C $LAYERS/{hexdigest} -cf - --sort=name . | gzip -n "
              f"> $LAYERS/{hexdigest}.tar.gz", why="once: the blob is kept, so the next push "
              "sends the same bytes under the same digest"), catalog.scratch_dir(store) as tmp:
        with open(tmp / "layer.tar.gz", "wb") as f:
            hashed = _Hashing(f)
            with gzip.GzipFile(filename="", mode="wb", fileobj=hashed,  # type: ignore[arg-type]
                               compresslevel=6, mtime=0) as gz:
                written = tarlayer.write_layer(image.layers[index], gz)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        if written != digest:
            raise StepError(STEP, f"layer {digest} changed on disk since it was stored",
                            hint="its files were edited: remove the image and make it again")
        os.rename(tmp / "layer.tar.gz", path)
    blob = f"sha256:{hashed.hash.hexdigest()}"
    catalog.update_layer_meta(store, digest, gzip={"digest": blob, "size": hashed.size})
    return path, blob, hashed.size


class _Hashing:
    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.hash, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def upload(client: registry.Client, what: str, digest: str, size: int, blob: Path | bytes,
           out: TextIO) -> int:
    """HEAD, then (if missing) POST, PUT or PATCHes and a PUT. Returns 1 if it was sent."""
    with step(f"upload {what}", f"curl -I {client.url('blobs', digest)}  # 200: there already",
              why="HEAD first: a blob the registry has is not sent again"):
        if client.has_blob(digest):
            print(f"{what} {digest[:19]}…: in the registry already, not uploaded", file=out)
            return 0
        response = client.request("POST", f"{client.base}/v2/{client.repository}/blobs/"
                                  "uploads/", {"Content-Length": "0"}, b"")
        location = _location(client, response, 202, f"starting the upload of {what}")
        with (open(blob, "rb") if isinstance(blob, Path) else io.BytesIO(blob)) as f, \
                progress(what, size) as update:
            body = _Counting(f, update)
            if size > chunk_size():
                location = _chunks(client, location, body, size, what)
                response = client.request("PUT", _with_digest(location, digest),
                                          {"Content-Length": "0"}, b"")
            else:
                response = client.request("PUT", _with_digest(location, digest), {
                    "Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    body)
            _location(client, response, 201, f"the upload of {what}", need=False)
        if body.hash.hexdigest() != digest.removeprefix("sha256:"):
            raise StepError(STEP, f"{what}: its kept blob changed on disk (it no longer hashes "
                            f"to {digest[:19]}…)", hint="remove it: rm "
                            f"{blob if isinstance(blob, Path) else 'it'}; then push again")
    print(f"{what} {digest[:19]}…: {size} bytes uploaded", file=out)
    return 1


def _chunks(client: registry.Client, location: str, body: _Counting, size: int,
            what: str) -> str:
    """PATCH each chunk with its Content-Range; the registry answers with where to go on."""
    step_size, offset = chunk_size(), 0
    while offset < size:
        data = body.read(min(step_size, size - offset))
        response = client.request("PATCH", location, {
            "Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
            "Content-Range": f"{offset}-{offset + len(data) - 1}"}, data)
        location = _location(client, response, 202, f"a chunk of {what}")
        offset += len(data)
    note(f"{what}: {size} bytes sent in chunks of {step_size}")
    return location


def _location(client: registry.Client, response: Any, status: int, what: str,
              need: bool = True) -> str:
    body = client._read(response, registry.ERROR_MAX)
    if response.status != status:
        raise client._error(response, body, what)
    location = response.getheader("Location") or ""
    if need and not location:
        raise StepError(STEP, f"{what}: the registry gave no Location to send it to")
    return urllib.parse.urljoin(f"{client.base}/v2/", location)


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={urllib.parse.quote(digest)}"


class _Counting:
    """A body for http.client: read in blocks, counted for the progress bar, and hashed."""

    def __init__(self, f: IO[bytes], update: Any) -> None:
        self.f, self.update, self.done = f, update, 0
        self.hash: Any = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.done += len(data)
        self.hash.update(data)
        self.update(self.done)
        return data

    def seek(self, where: int) -> None:  # a request made again after a 401
        self.f.seek(where)
        self.done, self.hash = 0, hashlib.sha256()


def put_manifest(client: registry.Client, ref: reference.Reference, manifest: bytes) -> str:
    digest = oci._digest(manifest)
    with step("upload the manifest", f"curl -X PUT -H 'Content-Type: {oci.OCI_MANIFEST}' "
              f"--data-binary @manifest.json {client.url('manifests', ref.tag or 'latest')}",
              why="last: a registry takes a manifest only once every blob it names is there"):
        response = client.request("PUT", client.url("manifests", ref.tag or "latest"),
                                  {"Content-Type": oci.OCI_MANIFEST}, manifest)
        _location(client, response, 201, "the manifest", need=False)
        said = response.getheader("Docker-Content-Digest")
        if said and said != digest:
            raise StepError(STEP, f"the registry stored the manifest as {said[:19]}…, not as "
                            f"{digest[:19]}…: it changed it")
    return digest
