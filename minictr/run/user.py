"""-u UID[:GID] or NAME[:GROUP]: who the command runs as, as Docker decides it.

A name is looked up in the image's /etc/passwd (and a group in /etc/group), as the container
will see them: read by the init before pivot_root, under merged/, by fd. Those files are the
image's, so hostile input: /etc or /etc/passwd may be a symlink (to the host's /etc/shadow),
a FIFO that never ends, a file of gigabytes, or lines with uids no kernel takes. So each
component is opened with O_NOFOLLOW (volumes.open_beneath's rule: a symlink is refused), the
file only if it is a regular one (O_NONBLOCK: opening a FIFO does not wait), at most 1 MiB is
read, and a line that does not parse is skipped.

Docker's rules: a user found by name or uid gives its gid (unless -u has one), its home (as
HOME, unless the image or -e sets it), and the groups of /etc/group that list it; a numeric
uid the image lacks runs with gid 0 and no other groups; a name it lacks is an error. With a
numeric UID:GID, a file that is refused is taken as absent (HOME is then /): it runs anyway.

The switch is the last step before no_new_privs, after the capabilities are dropped: from uid 0
to another, the kernel clears the permitted and effective capabilities (capabilities(7),
"Effect of user ID changes"), and the exec gives a non-root user none of the bounding set.
Shell: setpriv --reuid=UID --regid=GID --groups=G,... (or --clear-groups)
See: setgroups(2), setgid(2), setuid(2), passwd(5), group(5)
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import NamedTuple

from minictr.errors import StepError
from minictr.explain import step
from minictr.spec import IdMap

MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to setuid(2): never an id
MAX_FILE = 1 << 20  # bytes of /etc/passwd or /etc/group read at most


class Ids(NamedTuple):
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str | None  # from /etc/passwd; None: the user has no entry


def parse(text: str) -> str:
    """-u on the host: a syntax check only (the names are the image's, read in the init)."""
    user, _, group = text.partition(":")
    for word in (user, group) if ":" in text else (user,):
        if not word or ":" in word or not word.isprintable() or len(word) > 256:
            raise StepError("check input", f"invalid user {text[:200]!r}",
                            hint="use -u UID[:GID] or -u NAME[:GROUP]")
        if word.isdigit() and int(word) > MAX_ID:
            raise StepError("check input", f"-u {text}: id {word} is out of range",
                            hint=f"ids go from 0 to {MAX_ID}")
    return text


def resolve(merged: Path, text: str, idmap: IdMap | None) -> Ids:
    """The ids of -u, from the image's /etc/passwd and /etc/group under merged/."""
    name, _, group = text.partition(":")
    numeric = name.isdigit() and group.isdigit()
    with step(f"look up the user {text!r} in the image's /etc/passwd and /etc/group",
              f"grep -E '^{name}:' {merged}/etc/passwd",
              why="a name is the image's: read before pivot_root, by fd, refusing symlinks; "
              "bounded, as hostile input"):
        try:
            users = _table(merged, "passwd", 7)
            table = _table(merged, "group", 4)
        except StepError:
            if not numeric:
                raise
            users = table = []  # UID:GID needs neither file: only HOME and groups are lost
        entry = next((u for u in users if (int(u[2]) == int(name) if name.isdigit()
                                           else u[0] == name)), None)
        if entry is None and not name.isdigit():
            raise StepError("look up the user", f"unable to find user {name}: no matching "
                            "entries in the image's /etc/passwd",
                            hint="give a numeric -u UID[:GID], or a user the image has")
        uid = int(name) if entry is None else int(entry[2])
        gid = 0 if entry is None else int(entry[3])
        groups: list[int] = []
        if group:
            match = next((g for g in table if (int(g[2]) == int(group) if group.isdigit()
                                               else g[0] == group)), None)
            if match is None and not group.isdigit():
                raise StepError("look up the user", f"unable to find group {group}: no "
                                "matching entries in the image's /etc/group",
                                hint="give a numeric GID, or a group the image has")
            gid = int(group) if match is None else int(match[2])
        if entry is not None:
            groups = [int(g[2]) for g in table if entry[0] in g[3].split(",")]
    ids = Ids(uid, gid, tuple(dict.fromkeys([gid, *groups])),
              None if entry is None else entry[5])
    _check_mapped(ids, text, idmap)
    return ids


def _check_mapped(ids: Ids, text: str, idmap: IdMap | None) -> None:
    """--userns: the container has only idmap.size ids; another cannot be set (EINVAL)."""
    if idmap is not None and not all(idmap.maps(i) for i in (ids.uid, *ids.groups)):
        raise StepError("look up the user", f"-u {text}: uid {ids.uid} or gid {ids.gid} is "
                        f"not among --userns's {idmap.size} ids", hint="choose ids below that")


def _table(merged: Path, name: str, fields: int) -> list[list[str]]:
    """The lines of merged/etc/NAME that have ``fields`` fields and numeric ids (field 3);
    no file (or a missing /etc) is an empty table, as Docker takes it."""
    data = _read_etc(merged, name)
    rows = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        row = line.split(":")
        if len(row) == fields and row[2].isdigit() and int(row[2]) <= MAX_ID and (
                fields != 7 or (row[3].isdigit() and int(row[3]) <= MAX_ID)):
            rows.append(row)
    return rows


def _read_etc(merged: Path, name: str) -> bytes:
    root = os.open(merged, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        etc = os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                      dir_fd=root)
    except FileNotFoundError:
        return b""
    except OSError as e:  # ELOOP: a symlink; ENOTDIR: a file
        raise _refused("/etc", e) from None
    finally:
        os.close(root)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=etc)
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise _refused(f"/etc/{name}", e) from None
    finally:
        os.close(etc)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StepError("look up the user", f"/etc/{name} in the image is not a regular "
                            "file", hint="the image must have a plain /etc/" + name)
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        raise StepError("look up the user", f"/etc/{name} in the image is larger than "
                        f"{MAX_FILE} bytes", hint="give a numeric -u UID:GID")
    return data


def _refused(path: str, e: OSError) -> StepError:
    return StepError("look up the user", f"{path} in the image: {e.strerror}", errno=e.errno,
                     hint="a symlink there is refused: give a numeric -u UID:GID")


def with_home(env: list[str], ids: Ids) -> list[str]:
    """HOME from /etc/passwd, unless the image or -e gave one (container_env leaves it out
    when -u is given)."""
    if any(item.startswith("HOME=") for item in env):
        return env
    return [*env, f"HOME={ids.home or '/'}"]


def switch(ids: Ids) -> None:
    """Become the user: groups first, then the gid, then the uid (after setuid, no more
    setgid or setgroups is allowed). Shell: setpriv --reuid=U --regid=G --groups=..."""
    groups = ",".join(map(str, ids.groups))
    with step(f"run as uid {ids.uid}, gid {ids.gid} (-u)",
              f"setpriv --reuid={ids.uid} --regid={ids.gid} --groups={groups}",
              {errno.EPERM: "was CAP_SETUID or CAP_SETGID dropped (--cap-drop)? changing "
               "user needs them"},
              why="after the capabilities are dropped (it needs CAP_SETUID and CAP_SETGID, "
              "and leaves a non-root user none), before no_new_privs and the exec"):
        os.setgroups(list(ids.groups))
        os.setgid(ids.gid)
        os.setuid(ids.uid)
