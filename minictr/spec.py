"""What to run: the frozen values the CLI builds and every step reads, never changes.

They are NamedTuples, not dataclasses: as read-only as a frozen dataclass, and written the
same way, but made without generating code, and without importing `dataclasses` (and with it
`inspect`): together about 15 ms of every `minictr run` (bench/README.md).
Copy with a change: ``spec._replace(name="web")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class Limits(NamedTuple):
    """What a container may use (--memory, --pids-limit, --cpus); None: no limit. Checked by
    minictr.run.cgroups.parse_limits; minictr/run/cgroups/ says which file each one is written
    to."""

    memory: int | None = None  # bytes, and no swap beyond them
    pids: int | None = None  # processes and threads at once (and the shim, while it starts)
    cpus: float | None = None  # CPUs' worth of time in every 100 ms

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.memory, self.pids, self.cpus))


class RunSpec(NamedTuple):
    """One `minictr run`, as the user asked for it (already validated by the CLI)."""

    image: str
    command: tuple[str, ...] = ()  # empty: the image's default command
    name: str | None = None  # None: "<image>-<first 6 hex of the id>"
    hostname: str | None = None  # None: the container's name
    env: tuple[str, ...] = ()  # "KEY=VALUE" from -e, applied last
    remove: bool = False  # --rm
    interactive: bool = False  # -i: keep stdin attached (else the command reads /dev/null)
    tty: bool = False  # give the container a pseudo-terminal (stdin and stdout are terminals)
    limits: Limits = Limits()  # --memory, --pids-limit, --cpus
    cap_add: tuple[str, ...] = ()  # --cap-add: "cap_net_admin" or "ALL", beyond Docker's 14
    cap_drop: tuple[str, ...] = ()  # --cap-drop: "cap_chown" or "ALL"
    privileged: bool = False  # --privileged: all capabilities, no masked or read-only paths
    userns: IdMap | None = None  # --userns: root inside is this range of host ids
    network: str = "none"  # --network: none (only lo), bridge (minictr0) or host (no isolation)
    ports: tuple[Port, ...] = ()  # -p HOSTPORT:CONTAINERPORT, bridge only
    volumes: tuple[Volume, ...] = ()  # -v HOSTPATH:CPATH[:ro]: host paths bound in
    tmpfs: tuple[str, ...] = ()  # --tmpfs CPATH: a fresh tmpfs there, in memory
    read_only: bool = False  # --read-only: the merged root mounted read-only
    workdir: str | None = None  # -w DIR: instead of the image's WorkingDir
    user: str | None = None  # -u UID[:GID] or NAME[:GROUP], resolved in the container's /etc
    entrypoint: tuple[str, ...] | None = None  # --entrypoint: None the image's; () none
    init: bool = False  # --init: tini as PID 1, the command its child


class Volume(NamedTuple):
    """-v HOSTPATH:CPATH[:ro]: the host's HOSTPATH bound onto the container's CPATH (checked
    by minictr.run.volumes.parse_volume; mounted there, before pivot_root)."""

    host: str  # absolute, no `..`, exists on the host
    container: str  # absolute, normalised, not / nor under /proc, /sys, /dev
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.container} (from {self.host}, {'ro' if self.read_only else 'rw'})"


class Port(NamedTuple):
    """-p HOSTPORT:CONTAINERPORT[/tcp|/udp]: the host's port leads to the container's (checked
    by minictr.run.network.parse_ports; published there, as an nft DNAT rule)."""

    host: int
    container: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.host}:{self.container}/{self.protocol}"


class IdMap(NamedTuple):
    """--userns: ids 0..size-1 in the container are host ids host..host+size-1, for both
    users and groups, as one line of /proc/PID/uid_map and gid_map (user_namespaces(7))."""

    host: int  # the host uid (and gid) that root in the container is: 100000
    size: int  # how many: 65536 as in /etc/subuid, or 1 (only root exists inside)

    @property
    def line(self) -> str:
        return f"0 {self.host} {self.size}"

    def maps(self, inside_id: int) -> bool:
        """Whether the container has this id (uid or gid) at all."""
        return 0 <= inside_id < self.size


class ContainerDirs(NamedTuple):
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


class ImageConfig(NamedTuple):
    """What a container of the image runs unless told otherwise (OCI image config's names)."""

    cmd: tuple[str, ...] = ("/bin/sh",)  # Cmd: the default command, replaced by run's CMD
    entrypoint: tuple[str, ...] = ()  # Entrypoint: put before the command, kept
    env: tuple[str, ...] = ()  # Env: "KEY=VALUE"
    workdir: str = "/"  # WorkingDir: the command's current directory


class Image(NamedTuple):
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
