"""`minictr pull REF`: an image from a registry into the store, each step shown by --explain.

    1. the reference       alpine:3.20 is docker.io/library/alpine:3.20   (reference.py)
    2. GET /v2/            TLS or not, who answers, how to authenticate; a token for
                           repository:library/alpine:pull                 (registry.py, auth.py)
    3. the manifest        GET /v2/library/alpine/manifests/3.20, Accept: index and manifest
                           types. An index lists one manifest per platform: the one for this
                           machine (or --platform) is fetched by its digest; attestations
                           (unknown/unknown) are not images and are skipped.
    4. the config          GET /v2/…/blobs/<config digest>: the command, environment, working
                           directory, and rootfs.diff_ids, what each layer's tar hashes to
    5. each layer          bottom first. Stored already (a layer is known by its diff_id)? Then
                           nothing is downloaded. Else GET the blob, hash it as it streams in,
                           decompress (gzip, zstd, or none), hash the tar (the diff_id), and
                           extract it with `image import`'s rules (whiteouts, opaque
                           directories, nothing outside the layer, no devices)
    6. the name            images/alpine%3A3.20.json, last: a failure or Ctrl-C before it
                           leaves nothing, no name and no layer

Nothing a registry sends is trusted before it is checked: each document and blob against the
digest that names it, each layer's tar against the config's diff_id, sizes against their
descriptors (and the free disk) before anything is downloaded.

Shell (roughly): skopeo copy docker://REF oci:DIR:TAG && minictr image import DIR NAME
See: https://github.com/opencontainers/image-spec/blob/main/image-index.md, manifest.md,
     config.md; https://github.com/opencontainers/distribution-spec/blob/main/spec.md "Pull"
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from typing import Any, NamedTuple, TextIO

from minictr.errors import StepError
from minictr.explain import note, step
from minictr.images import catalog, oci, reference, registry
from minictr.spec import Image
from minictr.store import Store

STEP = "pull image"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
SCHEMA1 = {"application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws"}
AGAIN = "pull again; if it happens again, the registry's copy is damaged"
BLAME = oci.Blame(STEP, "the registry's copy", AGAIN)
_PLATFORM = re.compile(r"([a-z0-9_]+)/([a-z0-9_]+)(?:/([a-z0-9_]+))?")
# os.uname().machine of 32-bit Arm hosts -> its variant (the Go names OCI uses)
_ARM_VARIANT = {"armv7l": "v7", "armv6l": "v6", "armv5tel": "v5"}


class Platform(NamedTuple):
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in self if p)

    def normal(self) -> Platform:
        """arm64's variant is v8 when none is said; amd64's v1 is none (containerd's rule)."""
        default = {"arm64": "v8", "amd64": "", "arm": "v7"}.get(self.architecture, "")
        variant = "" if self.architecture == "amd64" and self.variant == "v1" else self.variant
        return self._replace(variant=variant or default)


def parse_platform(text: str) -> Platform:
    """--platform OS/ARCH[/VARIANT], as Docker's: linux/amd64, linux/arm64/v8, linux/arm/v7."""
    m = _PLATFORM.fullmatch(text)
    if not m:
        raise StepError("check input", f"invalid platform {text[:80]!r}",
                        hint="write it OS/ARCH[/VARIANT]: linux/amd64, linux/arm64, linux/arm/v7")
    if m[1] != "linux":
        raise StepError("check input", f"{m[1]} images are not Linux images",
                        hint="minictr runs Linux containers: --platform linux/ARCH")
    return Platform(m[1], m[2], m[3] or "")


def host_platform() -> Platform:
    return Platform("linux", oci.machine_arch(), _ARM_VARIANT.get(os.uname().machine, ""))


def _platform_of(d: dict[str, Any]) -> Platform:
    return Platform(str(d.get("os", "")), str(d.get("architecture", "")),
                    str(d.get("variant", "") or ""))


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


# --- the pull, top to bottom -----------------------------------------------------------------


def pull(store: Store, text: str, *, platform: str | None = None,
         out: TextIO = sys.stdout) -> Image:
    """`minictr pull [--platform P] REF`. Stored under the reference's short name."""
    ref = reference.parse(text)
    want = parse_platform(platform) if platform else host_platform()
    name = catalog.check_image_name(ref.familiar)
    with step("read the reference", f"# {text} is {ref.canonical}", why="Docker's rules: no "
              "registry is docker.io, one word is library/WORD, no tag is latest"):
        note(f"registry {ref.registry}, repository {ref.repository}, "
             + (f"digest {ref.digest}" if ref.digest else f"tag {ref.tag}"))
    client = connect(ref)
    try:
        return _pull(store, client, ref, name, want, explicit=platform is not None, out=out)
    finally:
        client.close()


def _pull(store: Store, client: registry.Client, ref: reference.Reference, name: str,
          want: Platform, *, explicit: bool, out: TextIO) -> Image:
    top, manifest, digest = resolve(client, ref, want)
    if (image := _up_to_date(store, name, top, want)) is not None:
        print(f"{name}: up to date ({_short(top)}…): downloaded nothing", file=out)
        return image
    config_desc, layers = _parts(manifest)
    with catalog.changing(store):
        if (same := _same_manifest(store, digest)) is not None:  # pulled before, by another name
            print(f"{_short(digest)}… is stored already as {same.name}: downloaded nothing",
                  file=out)
            return _name_it(store, name, list(same.digests), same.config, ref, top, digest,
                            {**catalog.pulled_from(store, same.name), "top": top,
                             "asked": str(want), "reference": ref.canonical})
    config = fetch_config(client, config_desc)
    got = _platform_of(config)
    if got.os != "linux":
        raise StepError(STEP, f"{name} is a {printable_word(got.os)} image, not a Linux one",
                        hint="minictr runs Linux containers")
    if top == digest and got.architecture != want.architecture:  # a manifest, not an index
        raise StepError(STEP, f"{name} is an image for {got} only; this machine is {want}"
                        if not explicit else f"{name} is for {got}, not {want}",
                        hint=f"--platform {got} pulls it all the same (it runs here only "
                        "with an emulator: binfmt_misc, qemu-user-static)")
    diff_ids = _checked(lambda: oci.config_diff_ids(config, len(layers)))
    image_config = _checked(lambda: oci.image_config(config))
    pulled = _pulled(ref, client, top, digest, config_desc.digest, got, want)
    print(f"pulling {name} ({got}) from {client.base}", file=out)
    with catalog.changing(store):  # no import, commit or rmi meanwhile (a run waits)
        digests, added = store_layers(store, client, ref, layers, diff_ids, out)
        try:
            image = _name_it(store, name, digests, image_config, ref, top, digest, pulled)
        except BaseException:
            catalog.forget_new_layers(store, added)
            raise
    print(f"digest: {digest}", file=out)
    print(f"pulled {name}: {len(digests)} layer{'s' if len(digests) != 1 else ''}, "
          f"{_size(image.size)}; downloaded {client.blobs} blob"
          f"{'s' if client.blobs != 1 else ''}, {_size(client.blob_bytes)}", file=out)
    return image


def printable_word(text: str) -> str:
    return registry.printable(text, 40) or "(no os)"


def _size(n: int) -> str:
    from minictr.show.report import human_size

    return human_size(n)


def _checked(read: Any) -> Any:
    """oci's checks of a config, with a pull's words (step, hint)."""
    try:
        return read()
    except StepError as e:
        raise StepError(STEP, e.message.replace("the image config", "the config"),
                        hint=AGAIN) from None


def _pulled(ref: reference.Reference, client: registry.Client, top: str, digest: str,
            config: str, platform: Platform, asked: Platform) -> dict[str, str]:
    """What images/NAME.json records of a pull: the digests, and the platform it is for."""
    return {"reference": ref.canonical, "from": client.base, "top": top, "manifest": digest,
            "config": config, "platform": str(platform), "asked": str(asked)}


def _up_to_date(store: Store, name: str, top: str, want: Platform) -> Image | None:
    """The image pulled under this name from the same manifest, or from the same index for
    the same platform: then nothing is downloaded at all."""
    pulled = catalog.pulled_from(store, name)
    if pulled.get("top") != top:
        return None
    if pulled.get("top") != pulled.get("manifest") and pulled.get("asked") != str(want):
        return None
    return catalog.load(store, name)


def _same_manifest(store: Store, digest: str) -> Image | None:
    for image in catalog.all_images(store):
        if catalog.pulled_from(store, image.name).get("manifest") == digest:
            return image
    return None


def _name_it(store: Store, name: str, digests: list[str], config: Any,
             ref: reference.Reference, top: str, digest: str, pulled: dict[str, str]) -> Image:
    """images/NAME.json, last. A tag that moved on gets the new image, as in Docker; the
    layers only the old one used go."""
    with step("name the image", f"echo '{{\"layers\": [...]}}' > images/"
              f"{reference.file_stem(name)}.json", why="last: until this, nothing names the "
              "new layers, and a failure leaves nothing"):
        moved = catalog.exists(store, name)
        image = catalog.register(store, name, digests, config, f"pull of {ref.canonical}@"
                                 f"{digest}", replace=moved, pulled=pulled)
        if moved:
            catalog.remove_unused_layers(store)
    return image


# --- which image: the index, the platform, the manifest --------------------------------------


def connect(ref: reference.Reference, *, actions: str = "pull",
            step_name: str = STEP) -> registry.Client:
    """The registry's client, pinged. For docker.io, MINICTR_REGISTRY_MIRROR first (as
    Docker's registry-mirrors); Docker Hub itself if the mirror cannot be reached."""
    mirror = os.environ.get("MINICTR_REGISTRY_MIRROR", "").rstrip("/")
    if ref.registry == reference.DOCKER_HUB and mirror and actions == "pull":
        client = registry.Client(ref.registry, ref.repository, api=mirror, actions=actions,
                                 step=step_name)
        try:
            with step("ask the mirror who it is and how to log in",
                      why="MINICTR_REGISTRY_MIRROR: docker.io's images from a mirror"):
                client.ping()
            return client
        except registry.Unreachable as e:
            client.close()
            note(f"the mirror cannot be reached ({e.message}): Docker Hub itself")
    api = reference.DOCKER_HUB_API if ref.registry == reference.DOCKER_HUB else None
    client = registry.Client(ref.registry, ref.repository, api=api, actions=actions,
                             step=step_name)
    with step("ask the registry who it is and how to log in", why="a 401 here names the "
              "token service (WWW-Authenticate: Bearer realm=...); a 200: no login needed"):
        client.ping()
    return client


def resolve(client: registry.Client, ref: reference.Reference,
            want: Platform) -> tuple[str, dict[str, Any], str]:
    """(the digest the reference names, the image's manifest, the manifest's digest): one
    and the same digest when the reference names a manifest, not an index."""
    what = f"{ref.familiar}"
    with step("fetch the manifest", why="an index (one manifest per platform) or a manifest "
              "(config and layers); its digest names the image"):
        doc, top, kind = fetch_manifest(client, ref.reference, what)
    if kind in (OCI_INDEX, DOCKER_LIST):
        with step("choose this platform's manifest", f"# the entry of the index for {want}",
                  why="an index lists one image per platform; attestations (unknown/unknown) "
                  "describe an image and are not one"):
            desc = choose_platform(doc, want, what)
            note(f"{want}: {desc.digest} ({desc.size} bytes)")
        with step("fetch that manifest", why="by its digest: what it hashes to is checked"):
            doc, digest, kind = fetch_manifest(client, desc.digest, f"{what} ({want})",
                                               size=desc.size)
        if kind in (OCI_INDEX, DOCKER_LIST):
            raise StepError(STEP, f"{what}: an index inside an index: not an image", hint=AGAIN)
        return top, doc, digest
    return top, doc, top


def fetch_manifest(client: registry.Client, name: str, what: str,
                   size: int | None = None) -> tuple[dict[str, Any], str, str]:
    """GET /v2/REPO/manifests/NAME, checked: (the document, its digest, its media type)."""
    body, kind, headers = client.get_json(client.url("manifests", name), ACCEPT, what)
    pinned = reference.DIGEST.fullmatch(name) is not None
    alg = name.split(":")[0] if pinned else "sha256"
    digest = f"{alg}:{hashlib.new(alg, body).hexdigest()}"
    if pinned and digest != name:
        raise StepError(STEP, f"{what}: the registry sent a manifest that hashes to "
                        f"{_short(digest)}…, not to the {_short(name)}… asked for", hint=AGAIN)
    said = headers.get("Docker-Content-Digest") or ""
    if said.startswith("sha256:") and said != digest:
        raise StepError(STEP, f"{what}: the registry says the manifest is {_short(said)}…, but "
                        f"what it sent hashes to {_short(digest)}…", hint=AGAIN)
    if size is not None and size != len(body):
        raise StepError(STEP, f"{what}: {len(body)} bytes, where the index says {size}",
                        hint=AGAIN)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise StepError(STEP, f"{what}: the manifest is not JSON ({e!s:.60})", hint=AGAIN) from e
    if not isinstance(doc, dict):
        raise StepError(STEP, f"{what}: the manifest is not a JSON object", hint=AGAIN)
    kind = kind if kind and kind != "application/json" else str(doc.get("mediaType") or "")
    if kind in SCHEMA1 or doc.get("schemaVersion") == 1:
        raise StepError(STEP, f"{what} is a Docker schema 1 manifest, a format from 2015 that "
                        "registries stopped accepting and Docker no longer pulls",
                        hint="push the image again with a current tool (docker, skopeo, "
                        "minictr): it then has a schema 2 or OCI manifest")
    if not kind:
        kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if kind not in (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST):
        raise StepError(STEP, f"{what}: a {registry.printable(kind, 80)}, not an image "
                        "index or manifest", hint="is it an artifact (a Helm chart, a "
                        "signature) rather than a container image?")
    return doc, digest, kind


def _is_attestation(d: Any) -> bool:
    return (d.platform.get("os") == "unknown" or d.platform.get("architecture") == "unknown"
            or d.annotations.get("vnd.docker.reference.type") == "attestation-manifest")


def choose_platform(index: dict[str, Any], want: Platform, what: str) -> Any:
    """The index's entry for ``want`` (normalised: arm64 is arm64/v8), attestations skipped."""
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise StepError(STEP, f"{what}: the index has no manifests list", hint=AGAIN)
    found = [_checked(lambda m=m: oci.descriptor(m, "the index")) for m in entries]
    images = [d for d in found if not _is_attestation(d)]
    if len(images) == 1 and not images[0].platform:  # one image, and it does not say for what
        return images[0]
    match = [d for d in images if _platform_of(d.platform).normal() == want.normal()]
    if not match and not want.variant:
        match = [d for d in images if _platform_of(d.platform)[:2] == want[:2]]
    if not match:
        have = ", ".join(sorted({str(_platform_of(d.platform)) for d in images})) or "none"
        raise StepError(STEP, f"{what} has no image for {want}: it has {have}",
                        hint="--platform OS/ARCH[/VARIANT] chooses one of them (another "
                        "architecture runs here only with an emulator)")
    return match[0]


def _parts(manifest: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The manifest's config and layer descriptors, checked before anything is downloaded."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise StepError(STEP, "the manifest lists no layers: not an image", hint=AGAIN)
    config = _checked(lambda: oci.descriptor(manifest.get("config"), "the manifest"))
    if config.media_type not in oci.CONFIG_TYPES:
        raise StepError(STEP, f"the manifest's config is a "
                        f"{registry.printable(config.media_type, 80) or 'blob of no type'}, "
                        "not a container image's", hint="this is an OCI artifact, not an image")
    descs = [_checked(lambda d=d: oci.descriptor(d, "the manifest")) for d in layers]
    catalog.check_stack_height(len(descs))
    for number, (raw, desc) in enumerate(zip(layers, descs, strict=True), 1):
        compression(desc, raw, number)
    return config, descs


def compression(desc: Any, raw: dict[str, Any], number: int) -> str | None:
    """By the layer's media type; an unknown one that could be a tar, by its magic bytes."""
    kind = desc.media_type
    if "foreign" in kind or "nondistributable" in kind or raw.get("urls"):
        raise StepError(STEP, f"layer {number} is a foreign layer ({registry.printable(kind)}),"
                        " whose blob is elsewhere, as Windows base layers are",
                        hint="minictr pulls Linux images, whose layers are in the registry")
    if kind in oci.LAYER_COMPRESSION:
        return oci.LAYER_COMPRESSION[kind]
    if kind in ("application/octet-stream", "") or "tar" in kind:
        return "sniff"
    raise StepError(STEP, f"layer {number} is a {registry.printable(kind, 80)}, not a layer "
                    "tar", hint="minictr pulls tar, tar+gzip and tar+zstd layers")


def fetch_config(client: registry.Client, desc: Any) -> dict[str, Any]:
    with step("fetch the image config", why="the command, environment and working "
              "directory, and rootfs.diff_ids: what each layer's tar hashes to uncompressed"):
        return read_json_blob(client, desc, "the config")


def read_json_blob(client: registry.Client, desc: Any, what: str) -> dict[str, Any]:
    if desc.size > registry.JSON_MAX:
        raise StepError(STEP, f"{what} is {desc.size} bytes by its descriptor: not a config")
    with client.blob(desc.digest, desc.size, what) as body:
        data = body.read(desc.size + 1)
    alg = desc.digest.split(":")[0]
    if len(data) != desc.size or f"{alg}:{hashlib.new(alg, data).hexdigest()}" != desc.digest:
        raise StepError(STEP, f"digest mismatch for {what} ({_short(desc.digest)}…): "
                        "the registry's copy is corrupt or was changed", hint=AGAIN)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise StepError(STEP, f"{what} is not JSON ({e!s:.60})", hint=AGAIN) from e
    if not isinstance(doc, dict):
        raise StepError(STEP, f"{what} is not a JSON object", hint=AGAIN)
    return doc


# --- the layers ------------------------------------------------------------------------------


def store_layers(store: Store, client: registry.Client, ref: reference.Reference,
                 layers: list[Any], diff_ids: list[str],
                 out: TextIO) -> tuple[list[str], list[str]]:
    """Each layer, bottom first: found by its diff_id, or downloaded, checked and extracted.
    Returns the store's digests, and those of the layers new to it (undone on a failure)."""
    from minictr.images import archive  # the import's extraction: for a download only

    known = catalog.layers_by_diff_id(store)
    missing = [d for d, diff_id in zip(layers, diff_ids, strict=True) if diff_id not in known]
    _check_free_space(store, sum(d.size for d in missing))
    digests: list[str] = []
    added: list[str] = []
    try:
        for number, (desc, diff_id) in enumerate(zip(layers, diff_ids, strict=True), 1):
            what = f"layer {number} of {len(layers)}"
            if diff_id in known:
                print(f"{what} {_short(desc.digest)}…: stored already "
                      f"(layers/{known[diff_id].removeprefix('sha256:')[:12]}…), "
                      "not downloaded", file=out)
                digests.append(known[diff_id])
                continue
            kind = compression(desc, {}, number)
            unpack = {"gzip": "gzip -d | ", "zstd": "zstd -d | ", None: ""}.get(kind, "")
            with step(f"download and store {what}",
                      f"curl -sL {client.url('blobs', desc.digest)} | tee >(sha256sum >&2) | "
                      f"{unpack}tar -xp -C $LAYERS/.tmp  (and .wh.NAME → mknod NAME c 0 0)",
                      why="checked as it streams in: the blob's sha256, then the tar's "
                      "(its diff_id); stored by what it holds"):
                source = oci.layer_source(
                    lambda desc=desc, what=what: client.blob(desc.digest, desc.size, what),
                    digest=desc.digest, size=desc.size, compression=kind, diff_id=diff_id,
                    what=f"{what} ({_short(desc.digest)}…)", blame=BLAME)
                digest, new = catalog.add_layer(
                    store, lambda d, s=source, w=what: archive.extract_verified(s, d, w),
                    f"pull of {ref.canonical}", diff_id=diff_id)
            added += [digest] if new else []
            known[diff_id] = digest  # the same layer twice in one image is stored once
            digests.append(digest)
            print(f"{what} {_short(desc.digest)}…: {_size(desc.size)} "
                  f"{kind if kind in ('gzip', 'zstd') else 'tar'}, downloaded and "
                  + ("stored" if new else "found stored already")
                  + f" (layers/{digest.removeprefix('sha256:')[:12]}…)", file=out)
    except BaseException:
        catalog.forget_new_layers(store, added)
        raise
    return digests, added


def _check_free_space(store: Store, needed: int) -> None:
    """The blobs alone, compressed, must fit: a manifest that names a 10 GB layer is refused
    before a byte of it is downloaded. (What they unpack to is checked as it is written.)"""
    st = os.statvfs(store.layers)
    free = st.f_bavail * st.f_frsize
    if needed > free:
        raise StepError(STEP, f"the layers to download are {_size(needed)}, and "
                        f"{store.root} has {_size(free)} free",
                        hint="free some space (minictr rmi, minictr prune), or use a disk with "
                        "more: MINICTR_ROOT=DIR")


def pull_if_missing(store: Store, text: str, *, out: TextIO) -> str:
    """`run REF`: the image's name in the store, pulled first if it is not there (as
    `docker run` does)."""
    name = catalog.check_image_name(reference.parse(text).familiar)
    if not catalog.exists(store, name):
        print(f"minictr: {name} is not in the store: pulling it", file=out)
        pull(store, text, out=out)
    return name
