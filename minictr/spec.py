"""What to run: the frozen values the CLI builds and every step reads, never changes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunSpec:
    """One `minictr run`, as the user asked for it (already validated by the CLI)."""

    image: str
    command: tuple[str, ...] = ()  # empty: the image's default command
    name: str | None = None  # None: "<image>-<first 6 hex of the id>"
    hostname: str | None = None  # None: the container's name
    env: tuple[str, ...] = ()  # "KEY=VALUE" from -e, applied last
    remove: bool = False  # --rm
    interactive: bool = False  # -i: keep stdin attached (else the command reads /dev/null)
    tty: bool = False  # give the container a pseudo-terminal (stdin and stdout are terminals)


@dataclass(frozen=True)
class ContainerDirs:
    """Where one container lives on the host: ``$MINICTR_ROOT/containers/<id>/``."""

    id: str
    name: str
    path: Path

    @property
    def upper(self) -> Path:
        return self.path / "upper"  # overlay's upperdir: everything the container writes

    @property
    def work(self) -> Path:
        return self.path / "work"  # overlay's workdir: its scratch space, same filesystem as upper

    @property
    def merged(self) -> Path:
        return self.path / "merged"  # where the overlay is mounted, inside the container's mount ns

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.path / "lock"  # flock-ed by the runtime for as long as the container runs


@dataclass(frozen=True)
class ImageConfig:
    """What a container of the image runs unless told otherwise (OCI image config's names)."""

    cmd: tuple[str, ...] = ("/bin/sh",)  # Cmd: the default command, replaced by run's CMD
    entrypoint: tuple[str, ...] = ()  # Entrypoint: put before the command, kept
    env: tuple[str, ...] = ()  # Env: "KEY=VALUE"
    workdir: str = "/"  # WorkingDir: the command's current directory


@dataclass(frozen=True)
class Image:
    """An ordered stack of read-only layers, and the defaults its containers start with."""

    name: str
    digests: tuple[str, ...]  # "sha256:<hex>" of each layer, bottom first
    layers: tuple[Path, ...]  # each layer's directory, bottom first
    config: ImageConfig
    size: int  # apparent bytes of all its layers
    created: float
    source: str  # where it came from: a recipe, an import, a commit

    @property
    def lowers(self) -> tuple[Path, ...]:
        """The overlay lowerdirs, top-most first, as lowerdir=top:...:bottom wants them."""
        return tuple(reversed(self.layers))
