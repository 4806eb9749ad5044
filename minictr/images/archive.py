"""Images in and out: import an archive, commit a container, export an OCI image.

Everything crosses as OCI layer tars, where a deletion is a `.wh.NAME` file; on disk, a layer
is in overlay's form, where it is a 0:0 character device (minictr.images.tarlayer converts
both ways).

    import   archive ──oci.open_image──▶ layer tars ──tarlayer.extract_layer──▶ layers/HEX/
    commit   containers/ID/upper ──tarlayer.write_layer──▶ tar ──extract_layer──▶ layers/HEX/
    export   layers/HEX/ ──write_layer──▶ layer tars ──oci.write_oci_layout_tar──▶ FILE

Each is atomic: layers are made in a temporary directory and renamed, the image is named last,
and a failure removes the layers it added. A layer already stored is shared, not copied.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from minictr import explain
from minictr.errors import StepError
from minictr.explain import note, progress, step
from minictr.images import catalog, oci, tarlayer
from minictr.run.cgroups import freezer
from minictr.spec import Image, ImageConfig
from minictr.store import Store, read_state, status


def import_image(store: Store, path: Path, name: str) -> Image:
    """`minictr image import PATH NAME`. Shell (roughly): umoci unpack, then mv the layers."""
    catalog.check_name_free(store, name)  # before any long work
    if not path.exists():
        raise StepError("import image", f"{path} does not exist")
    added: list[str] = []
    with catalog.changing(store), oci.open_image(path) as source:
        catalog.check_name_free(store, name)
        note(f"{path} is a {source.format}; layers: {len(source.layers)}")
        try:
            digests = []
            for number, layer in enumerate(source.layers, 1):
                with step(f"import layer {number} of {len(source.layers)}",
                          "tar -xf LAYER.tar -C $LAYERS/.tmp  (and .wh.NAME → mknod NAME c 0 0)",
                          why="bottom first, each checked against its digest before it is "
                          "stored: a layer is stored once, by what it holds"):
                    what = f"layer {number} of {len(source.layers)}"
                    digest, new = catalog.add_layer(
                        store, lambda d, layer=layer, what=what: extract_verified(layer, d, what),
                        f"{source.format} {path}")
                added += [digest] if new else []
                digests.append(digest)
            return catalog.register(store, name, digests, source.config,
                                   f"import of {source.format} {path}")
        except BaseException:
            catalog.forget_new_layers(store, added)
            raise


def extract_verified(layer: oci.LayerSource, dest: Path, what: str) -> None:
    """Extract one layer, then read its stream to the end: the digest is checked at the end of
    the stream, and tar readers stop at the end-of-archive marker, before the padding."""
    with progress(what, layer.size) as update, layer.open(progress=update) as stream:
        tarlayer.extract_layer(stream, dest)
        while stream.read(1 << 20):
            pass


def commit(store: Store, container: str, name: str, pause: bool = True) -> Image:
    """`minictr commit [--pause=false] CONTAINER NAME`: the upper becomes a new top layer.

    The new image is the container's image plus that layer, and runs the container's command
    by default, as `docker commit` does. A running container is frozen while its upper is
    read (cgroups.freezer), unless ``pause`` is False: then what it writes meanwhile may be
    caught half-way. Shell: tar -C UPPER -cf layer.tar . (with whiteouts written as .wh.
    files), then import it on top of the image's layers.
    """
    dirs = store.find(container)
    state = read_state(dirs)
    catalog.check_name_free(store, name)
    explain.define("C", dirs.path)
    explain.define("ID", dirs.id)
    running = status(dirs, state) == "running"
    if running and not pause:
        note("the container is running: files it writes at this moment may be caught half-way")
    with catalog.changing(store), tempfile.TemporaryFile(dir=store.layers) as tar:
        catalog.check_name_free(store, name)
        with (freezer.paused(dirs.id) if running and pause else contextlib.nullcontext()), \
                step("write the upper directory as an OCI layer tar",
                     f"tar -C {dirs.upper} -cf layer.tar .  (a 0:0 device becomes .wh.NAME)",
                     why="the upper holds exactly what the container changed: it becomes the "
                     "new image's top layer"):
            tarlayer.write_layer(dirs.upper, tar)
        tar.seek(0)
        with step("store it as a new layer", "tar -xf layer.tar -C $LAYERS/.tmp",
                  why="from the tar, not the upper: the layer is what its digest says, and "
                  "stays so while the container goes on"):
            digest, new = catalog.add_layer(store, lambda d: tarlayer.extract_layer(tar, d),
                                           f"commit of {dirs.name}")
        try:
            config = ImageConfig(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in state["config"].items()})
            return catalog.register(store, name, [*state["layers"], digest], config,
                                   f"commit of container {dirs.name}")
        except BaseException:
            if new:
                catalog.forget_new_layers(store, [digest])
            raise


def export_image(store: Store, name: str, file: Path) -> None:
    """`minictr image export NAME FILE`: an OCI image layout in one tar (umoci and skopeo
    read it: skopeo copy oci-archive:FILE:NAME ...)."""
    image = catalog.get_existing(store, name)
    if file.exists() or file.is_symlink():
        raise StepError("export image", f"{file} exists", hint="remove it, or choose another")
    if not file.parent.is_dir():
        raise StepError("export image", f"{file.parent} is not a directory")
    with catalog.scratch_dir(store) as tmp:
        tars, diff_ids = [], []
        for number, (layer, digest) in enumerate(zip(image.layers, image.digests, strict=True)):
            tar = Path(tmp) / f"{number}.tar"
            with step(f"write layer {number + 1} of {len(image.layers)} as a tar",
                      f"tar -C $LAYERS/{digest.removeprefix('sha256:')} -cf {tar.name} .",
                      why="made as when it was stored, so its digest proves the layer did not "
                      "change on disk"), \
                    open(tar, "wb") as out:
                written = tarlayer.write_layer(layer, out)
            if written != digest:  # the tar is made the same way as when it was stored
                raise StepError("export image", f"layer {digest} changed on disk since it was "
                                "stored", hint="its files were edited: remove and re-import it")
            tars.append(tar)
            diff_ids.append(written)
        with step("write the OCI image layout", f"tar -cf {file} oci-layout index.json blobs/",
                  why="the layers, the config and the index in the OCI image layout, the "
                  "standard one that other tools load (podman load, skopeo)"), \
                progress("compress the layers", sum(t.stat().st_size for t in tars)) as update:
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(image.created))
            oci.write_oci_layout_tar(file, tars, image.config, name, created=created,
                                     diff_ids=diff_ids, progress=update)
