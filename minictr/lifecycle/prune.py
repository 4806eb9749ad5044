"""`minictr prune`: remove stopped containers, and whatever a killed runtime left behind.

A runtime killed with SIGKILL cannot undo anything itself. The kernel still does most of it:
the container dies with it (parent-death signal), and its overlay, /proc and /dev mounts
lived only in the container's mount namespace, which died too. What is left is on disk: the
container's directory and its name, and its cgroup (empty: its processes died). prune removes
those, for every container whose lock no runtime holds (killing what might still be in the
cgroup), and unmounts anything still mounted under MINICTR_ROOT on the host. A cgroup whose
container is in no directory prune knows (another MINICTR_ROOT's) is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from minictr import libc
from minictr.explain import step
from minictr.fs.remove import mounts_under, remove_tree, shell_line
from minictr.images import catalog
from minictr.run import cgroups, network
from minictr.run.cgroups import freezer
from minictr.store import Store, is_locked, read_state, status


def prune(store: Store) -> list[str]:
    """Remove all that no live runtime owns; return a line for each thing removed."""
    removed = unmount_leftovers(store)
    removed += network.stale_leftovers()  # veths, port rules, leases of dead containers
    removed += freezer.thaw_abandoned()  # a commit killed while its container was frozen
    for path in sorted(store.containers.iterdir()):
        if is_locked(path / "lock"):
            continue  # running, or being created right now
        if path.name.startswith(".new-") and not store.abandoned(path):
            continue  # a start between its mkdir and its flock, or renamed meanwhile
        dirs = store.dirs_at(path)
        state = read_state(dirs)
        removed += cgroups.remove_leftover(path.name)
        with step(f"remove container {dirs.name or path.name}", shell_line(path),
                  why="no runtime holds its lock: it has exited, or its runtime was killed"):
            store.remove_container(dirs)
        removed.append(f"{path.name}  {dirs.name or '-'}  ({status(dirs, state)})")
    removed += cgroups.remove_empty_orphans({p.name for p in store.containers.iterdir()})
    for link in sorted(store.names.iterdir()):
        if link.is_symlink() and not link.exists():  # a name whose container is gone
            link.unlink()
    for leftover in sorted(store.layers.glob(".tmp-*")):
        lock = leftover.with_name(f"{leftover.name}.lock")
        if leftover.is_dir() and not is_locked(lock):  # a build, import or export was killed
            remove_tree(leftover)
            lock.unlink(missing_ok=True)
            removed.append(f"{leftover.name}  (unfinished layer)")
    with catalog.changing(store):
        removed += [f"{d}  (unused layer)" for d in catalog.remove_unused_layers(store)]
    return removed


def unmount_leftovers(store: Store) -> list[str]:
    """Lazily unmount, deepest first, every host mount under MINICTR_ROOT (there should be
    none: they live in containers' namespaces). Shell: umount -l PATH   See: umount(2)"""
    points = mounts_under(Path(os.path.realpath(store.root)))
    for point in points:
        with step("unmount a leftover mount", f"umount -l {point}", why="first, deepest "
                  "first: a removal must never walk through a mount into a layer"):
            libc.umount2(point, libc.MNT_DETACH)
    return [f"unmounted {p}" for p in points]
