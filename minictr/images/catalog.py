"""Images: an ordered stack of read-only layers, and the defaults a container starts with.

    layers/<hex>/           one layer's files in overlay's form (whiteouts are 0:0 devices,
                            opaque directories carry trusted.overlay.opaque=y): a lowerdir
    layers/<hex>.json       its digest, size, where it came from, and the diff_ids a registry
                            knows it by (a pulled layer's tar was not written by minictr)
    layers/<hex>.tar.gz     its tar, gzip-compressed once for `push` (kept: pushed again as is)
    images/<name>.json      its layers (bottom first), its config, where it came from; a pulled
                            image's name is percent-encoded: images/alpine%3A3.20.json

A layer is stored once, under the sha256 of its OCI layer tar (minictr.images.tarlayer.write_layer),
however many images use it: two images built on one base share that base's directory, and so
does every container of them. `run` mounts lowerdir=top:...:bottom; a layer is never written to.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from minictr.errors import StepError
from minictr.fs.remove import remove_tree
from minictr.spec import Image, ImageConfig
from minictr.store import NAME_PATTERN, Store, check_name, hold_lock, read_state

# mount(2) copies at most one page of options, so lowerdir=... must fit in 4095 bytes with the
# rest. minictr names lowers relative to layers/ (65 bytes each): about 60 layers fit. The
# kernel's own limit is 500 lowers (OVL_MAX_STACK in fs/overlayfs/params.h).
MAX_MOUNT_OPTIONS = 4095


def exists(store: Store, name: str) -> bool:
    """Whether the store has a record of the image (nothing is read)."""
    return record_file(store, name).exists()


def check_image_name(name: str) -> str:
    """A local image's name (busybox: no ':', '/' or '@'), or a pulled image's, which is a
    reference in its short form (alpine:3.20; minictr.images.reference)."""
    if NAME_PATTERN.fullmatch(name) or not any(c in name for c in ":/@"):
        return check_name(name, "image name")
    from minictr.images import reference  # only for a pulled image's name

    return reference.check_stored_name(name)


def record_file(store: Store, name: str) -> Path:
    """images/NAME.json: a local name as it is, a reference percent-encoded, so that no '/'
    or '..' of a name ever reaches the filesystem (alpine:3.20 -> images/alpine%3A3.20.json)."""
    if NAME_PATTERN.fullmatch(check_image_name(name)):
        return store.images / f"{name}.json"
    from minictr.images import reference

    return store.images / f"{reference.file_stem(name)}.json"


def _name_of(record: Path) -> str:
    if "%" not in record.stem:
        return record.stem
    from minictr.images import reference

    return reference.name_of_file(record.stem)


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def load(store: Store, name: str) -> Image:
    """The image images/NAME.json records. A damaged record (cut short by a full disk,
    edited by hand) is one line, and `rmi` still removes it."""
    try:
        record = json.loads(record_file(store, name).read_text())
        digests = tuple(record["layers"])
        if not digests or not all(isinstance(d, str) and DIGEST.fullmatch(d) for d in digests):
            raise ValueError(f"its layers are not sha256 digests: {digests!r:.80}")
        layers = tuple(layer_dir(store, d) for d in digests)
        config = ImageConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in record["config"].items()})
        size = sum(layer_size(store, d) for d in digests)
        return Image(name, digests, layers, config, size, float(record["created"]),
                     str(record["source"]))
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise StepError("read image", f"images/{name}.json is damaged: {e!s:.120}",
                        hint=f"remove it: minictr rmi {name}") from e


def all_images(store: Store) -> list[Image]:
    """Every image whose record is readable (a damaged one: see damaged_images)."""
    return scan_images(store)[0]


def damaged_images(store: Store) -> list[str]:
    return scan_images(store)[1]


def scan_images(store: Store) -> tuple[list[Image], list[str]]:
    """Every record read once: the images, and the names whose record is damaged."""
    found, damaged = [], []
    for path in sorted(store.images.glob("*.json")):
        try:
            found.append(load(store, _name_of(path)))
        except StepError:
            damaged.append(_name_of(path))
    return found, damaged


def layer_dir(store: Store, digest: str) -> Path:
    return store.layers / digest.removeprefix("sha256:")


def layer_size(store: Store, digest: str) -> int:
    meta = store.layers / f"{digest.removeprefix('sha256:')}.json"
    return int(json.loads(meta.read_text())["size"])


@contextlib.contextmanager
def changing(store: Store) -> Iterator[None]:
    """Hold the store's image lock while layers and images are added or removed, so an import,
    a commit and an rmi never see each other half-done. Shell: flock images/.lock ..."""
    fd = os.open(store.images / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def hold_for_start(store: Store) -> int:
    """The image lock, shared, for a container that is starting: from loading its image until
    its state names the layers (then rmi sees it and refuses), no rmi, import or commit may
    change the store (they take the lock whole: `changing`). Several starts share it.
    Shell: flock -s images/.lock ..."""
    fd = os.open(store.images / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def add_layer(store: Store, fill: Callable[[Path], None], origin: str,
              diff_id: str | None = None) -> tuple[str, bool]:
    """Fill a new directory with a layer's files, name it by its digest, and store it once.

    Returns the digest and whether the layer is new (the caller removes new ones if a later
    step fails). The digest is the sha256 of the layer's OCI tar, as `image export` writes it.
    ``diff_id``: the digest of the tar it came from, when another tool wrote that tar (a
    registry's layer): recorded, so the next pull of that layer finds it (layers_by_diff_id).
    Shell: mkdir layers/.tmp; tar -xf LAYER -C layers/.tmp; mv layers/.tmp layers/HEX
    """
    from minictr.images import tarlayer  # the tar code is for building, importing and committing

    with scratch_dir(store) as tmp:
        fill(tmp)
        with open(os.devnull, "wb") as sink:
            digest = tarlayer.write_layer(tmp, sink)
        final = layer_dir(store, digest)
        also = [diff_id] if diff_id and diff_id != digest else []
        if final.exists():  # the same files are stored already: share them
            if also and also[0] not in (old := layer_meta(store, digest)).get("diff_ids", []):
                update_layer_meta(store, digest, diff_ids=[*old.get("diff_ids", []), *also])
            return digest, False
        size = _apparent_bytes(tmp)
        meta = {"digest": digest, "size": size, "origin": origin, "created": time.time()}
        if also:
            meta["diff_ids"] = also
        final.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        tmp.chmod(0o755)
        os.rename(tmp, final)
        return digest, True


@contextlib.contextmanager
def scratch_dir(store: Store) -> Iterator[Path]:
    """A temporary directory in the layer store (the same filesystem, so rename(2) can move
    it into place), locked so that `prune` removes it only if its owner was killed."""
    import tempfile  # here: `run` never makes one, and tempfile costs it ~2 ms to import

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=store.layers))
    lock_file = store.layers / f"{tmp.name}.lock"
    lock = hold_lock(lock_file)
    try:
        yield tmp
    finally:
        # (Failing, it must not hide the error that ended the build: `prune` removes it.)
        with contextlib.suppress(StepError):
            remove_tree(tmp)
        lock_file.unlink(missing_ok=True)
        os.close(lock)


def layer_meta(store: Store, digest: str) -> dict:
    return json.loads(layer_dir(store, digest).with_suffix(".json").read_text())


def update_layer_meta(store: Store, digest: str, **changes: object) -> None:
    """Change layers/HEX.json atomically: a new file renamed over the old one."""
    meta = layer_dir(store, digest).with_suffix(".json")
    tmp = meta.with_name(f".{meta.name}.tmp")
    tmp.write_text(json.dumps(layer_meta(store, digest) | changes, indent=2) + "\n")
    os.replace(tmp, meta)


def layers_by_diff_id(store: Store) -> dict[str, str]:
    """Every stored layer, by each digest it is known by: its own (the tar minictr writes of
    it, which is also its diff_id in an image minictr exported or pushed), and the diff_ids
    of the tars it was pulled from. Shell: jq -r '.digest, .diff_ids[]?' layers/*.json"""
    found: dict[str, str] = {}
    for meta in store.layers.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            record = json.loads(meta.read_text())
            if meta.with_suffix("").is_dir():
                for known_as in [record["digest"], *record.get("diff_ids", [])]:
                    found[str(known_as)] = str(record["digest"])
    return found


def compressed_blob(store: Store, digest: str) -> Path:
    """Where `push` keeps the layer's tar, gzip-compressed once (layers/HEX.tar.gz)."""
    return store.layers / f"{digest.removeprefix('sha256:')}.tar.gz"


def _apparent_bytes(root: Path) -> int:
    from minictr.show import diff

    return diff.tree_bytes(root)


def check_stack_height(count: int) -> None:
    """Refused if a stack of this many layers is too tall for one mount(2) call."""
    options = count * len("sha256:," + "0" * 64) + 200  # the lowerdirs, upperdir and the rest
    if options > MAX_MOUNT_OPTIONS:
        raise StepError("register image", f"{count} layers are too many for one mount",
                        hint="overlay's options must fit in one 4 KiB page; squash the image")


def register(store: Store, name: str, digests: list[str], config: ImageConfig,
             source: str, *, replace: bool = False,
             pulled: dict[str, str] | None = None) -> Image:
    """Name a stack of stored layers. Refused if the name is taken (unless ``replace``: a
    pull of a tag that moved) or the stack is too tall for one mount(2) call. ``pulled``:
    the registry's digests of what was pulled (minictr.images.pull reads them back)."""
    if pulled is None:
        check_name(name, "image name")  # import, commit, build: a local name, never a reference
    final = record_file(store, name)
    check_stack_height(len(digests))
    record: dict[str, object] = {
        "layers": digests, "created": time.time(), "source": source,
        "config": {"cmd": list(config.cmd), "entrypoint": list(config.entrypoint),
                   "env": list(config.env), "workdir": config.workdir}}
    if pulled:
        record["pulled"] = pulled
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    try:
        if replace:
            os.replace(tmp, final)
        else:
            os.link(tmp, final)  # link(2) never replaces: atomic claim
    except FileExistsError:
        raise name_in_use(name) from None
    finally:
        tmp.unlink(missing_ok=True)
    return load(store, name)


def pulled_from(store: Store, name: str) -> dict[str, str]:
    """The registry digests recorded by the pull that made the image ({} if none)."""
    try:
        pulled = json.loads(record_file(store, name).read_text()).get("pulled")
    except (OSError, ValueError, AttributeError):
        return {}
    return pulled if isinstance(pulled, dict) else {}


def name_in_use(name: str) -> StepError:
    return StepError("register image", f"the image name {name!r} is already in use",
                     hint=f"choose another name, or remove it first: minictr rmi {name}")


def check_name_free(store: Store, name: str) -> None:
    """Before long work: a name in use is refused before anything is extracted. (A local
    name: import and commit never make an image that looks pulled.)"""
    check_name(name, "image name")
    if record_file(store, name).exists():
        raise name_in_use(name)


# --- rmi and what holds a layer ---------------------------------------------------------------


def remove(store: Store, name: str) -> list[str]:
    """`minictr rmi NAME`: refused while a container of the image exists or another image is
    built on it (its layers are the bottom of that one's, which has more), as Docker refuses.
    Then the layers no image and no container uses go too. Returns the digests deleted.
    A damaged record is removed too: which layers it named is unknown, so they stay."""
    record = record_file(store, name)
    if name in damaged_images(store):
        record.unlink()
        return []
    image = get_existing(store, name)
    for dirs in store.all_containers():
        if read_state(dirs).get("image") == name:
            raise StepError("remove image", f"container {dirs.name} uses {name}",
                            hint=f"remove the container first: minictr rm {dirs.name}")
    for other in all_images(store):
        if (len(other.digests) > len(image.digests)
                and other.digests[: len(image.digests)] == image.digests):
            raise StepError("remove image", f"image {other.name} is built on {name}",
                            hint=f"remove it first: minictr rmi {other.name}")
    record.unlink()
    return remove_unused_layers(store)


def get_existing(store: Store, name: str) -> Image:
    check_exists(store, name)
    return load(store, name)


def check_exists(store: Store, name: str) -> None:
    """A valid name with a record (readable or not: `rmi` removes a damaged one too)."""
    if not record_file(store, name).exists():
        hint = "list them: minictr images"
        if not any(c in name for c in ":/@"):
            hint += (f"; a name without ':' or '/' is a local image: to pull Docker Hub's, "
                     f"name a tag: minictr pull {name}:latest")
        raise StepError("find image", f"no such image: {name}", hint=hint)


def containers_layers(store: Store) -> Iterator[tuple[str, list[str]]]:
    for dirs in store.all_containers():
        yield dirs.name, list(read_state(dirs).get("layers", []))


def remove_unused_layers(store: Store) -> list[str]:
    """Delete each layer that no image and no container names. Shell: rm -rf layers/HEX
    While an image's record is damaged, none: the layers it names are unknown."""
    found, damaged = scan_images(store)
    if damaged:
        return []
    used = {d for image in found for d in image.digests}
    used |= {d for _, digests in containers_layers(store) for d in digests}
    removed = []
    for meta in sorted(store.layers.glob("*.json")):
        digest = json.loads(meta.read_text())["digest"]
        if digest not in used:
            remove_tree(layer_dir(store, digest))
            compressed_blob(store, digest).unlink(missing_ok=True)
            meta.unlink()
            removed.append(digest)
    return removed


def forget_new_layers(store: Store, digests: list[str]) -> None:
    """Undo for a failed import or commit: the layers it added that nothing uses go again."""
    for digest in digests:
        with contextlib.suppress(OSError, StepError):
            remove_tree(layer_dir(store, digest))
            compressed_blob(store, digest).unlink(missing_ok=True)
            layer_dir(store, digest).with_suffix(".json").unlink()


# --- df ---------------------------------------------------------------------------------------


class DiskUsage(NamedTuple):
    layers: list[tuple[str, int, list[str]]]  # digest, bytes, who uses it
    containers: list[tuple[str, str, int]]  # name, image, bytes in its upper
    on_disk: int  # every layer once, plus every upper
    without_sharing: int  # every image with its own copy of its layers, every container too


def disk_usage(store: Store) -> DiskUsage:
    """What `minictr df` shows: each layer counted once, and what copies would cost instead."""
    from minictr.show import diff

    images = all_images(store)
    users: dict[str, list[str]] = {}
    for image in images:
        for d in image.digests:
            users.setdefault(d, []).append(f"image {image.name}")
    containers = []
    copies = sum(image.size for image in images)
    for dirs in store.all_containers():
        state = read_state(dirs)
        upper = diff.tree_bytes(dirs.upper)
        containers.append((dirs.name, str(state.get("image", "?")), upper))
        for d in state.get("layers", []):
            users.setdefault(d, []).append(f"container {dirs.name}")
        copies += upper + sum(layer_size(store, d) for d in state.get("layers", []))
    metas = [json.loads(m.read_text()) for m in sorted(store.layers.glob("*.json"))]
    layers = [(meta["digest"], int(meta["size"])) for meta in metas]
    rows = [(d, size, users.get(d, ["nothing (minictr prune removes it)"])) for d, size in layers]
    on_disk = sum(size for _, size in layers) + sum(upper for _, _, upper in containers)
    return DiskUsage(rows, containers, on_disk, copies)
