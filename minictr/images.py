"""Images: a read-only root filesystem (the overlay's lowerdir) and its defaults.

Today there is one recipe, ``busybox`` (``images/busybox/`` in the repository), built from the
host's static busybox. The image is never written to after it is built: every container of it
gets its own upperdir, and the change report proves the image stayed the same.
"""

from __future__ import annotations

import json
from pathlib import Path

from minictr.errors import StepError
from minictr.spec import Image
from minictr.store import Store, check_name

# The recipes live in the repository's images/ directory; `make setup` installs minictr in
# editable mode, so they are found next to the package.
RECIPES = Path(__file__).resolve().parent.parent / "images"


def get(store: Store, name: str) -> Image:
    """The image called ``name``; a recipe-built image is built on first use."""
    check_name(name, "image name")
    config = store.images / name / "image.json"
    if not config.exists():
        if not (RECIPES / name / "image.json").exists():
            raise StepError("find image", f"no such image: {name}",
                            hint="list images with: minictr images; build one with: "
                            "minictr image build busybox")
        from minictr import recipes  # only when building: it imports what `run` never needs

        recipes.build(store, name)
    return load(store.images / name)


def load(path: Path) -> Image:
    c = json.loads((path / "image.json").read_text())
    return Image(path.name, path / "rootfs", tuple(c["cmd"]), tuple(c["env"]), int(c["size"]))


def all_images(store: Store) -> list[Image]:
    return [load(p) for p in sorted(store.images.iterdir()) if (p / "image.json").exists()]
