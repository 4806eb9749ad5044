"""minictr.show.diff: hand-made upperdirs, and the upperdir of a real overlay mount.

Whiteouts (mknod), trusted.* xattrs and mount need root: those tests are marked ``root``
(conftest.py skips them without root, and fails them instead with CI=true).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from minictr.fs import walk
from minictr.show import diff
from minictr.show.diff import Change, docker_lines, scan, tree_bytes

# --- building layers by hand ----------------------------------------------------------------


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    lower.mkdir()
    return upper, lower


def write(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def copy_up(lower: Path, upper: Path, name: str) -> Path:
    """What overlay's copy-up does to a file: same bytes, mode, owner and mtime."""
    (upper / name).parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(lower / name, upper / name, follow_symlinks=False))


def copy_up_dir(lower: Path, upper: Path, name: str) -> Path:
    (upper / name).mkdir()
    shutil.copystat(lower / name, upper / name)
    return upper / name


def whiteout(path: Path) -> None:
    """Shell: mknod PATH c 0 0"""
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def make_opaque(path: Path) -> None:
    """Shell: setfattr -n trusted.overlay.opaque -v y PATH"""
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def only(changes: list[Change], path: str) -> Change:
    (change,) = [c for c in changes if c.path == path]
    return change


def table(changes: list[Change]) -> list[tuple[object, ...]]:
    """Everything but the reason, one tuple per change."""
    return [(c.path, c.kind, c.ftype, c.size, c.opaque, c.hidden) for c in changes]


def reasons(changes: list[Change]) -> dict[str, str]:
    return {c.path: c.reason for c in changes}


# --- added ----------------------------------------------------------------------------------


def test_added_entries_of_every_plain_type(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(upper / "new", "hello")
    (upper / "newdir").mkdir()
    os.symlink("../new", upper / "newdir" / "ln")
    os.mkfifo(upper / "newdir" / "pipe")

    assert scan(upper, [lower]) == [
        Change("/new", "A", "file", 5, False, "new file"),
        Change("/newdir", "A", "dir", 0, False, "new directory"),
        Change("/newdir/ln", "A", "symlink", 6, False, "new symlink to ../new"),
        Change("/newdir/pipe", "A", "fifo", 0, False, "new fifo"),
    ]


def test_scan_never_follows_symlinks(layers: tuple[Path, Path], tmp_path: Path) -> None:
    upper, lower = layers
    write(tmp_path / "outside" / "big", b"x" * 1000)
    os.symlink(tmp_path / "outside", upper / "escape")

    assert [(c.path, c.ftype) for c in scan(upper, [lower])] == [("/escape", "symlink")]
    assert tree_bytes(upper) == len(os.fsencode(tmp_path / "outside"))


def test_with_no_lowers_everything_is_added(layers: tuple[Path, Path]) -> None:
    upper, _ = layers
    write(upper / "etc" / "hosts", "x")
    assert [(c.path, c.kind) for c in scan(upper, [])] == [("/etc", "A"), ("/etc/hosts", "A")]


# --- changed: what differs from the image ---------------------------------------------------


def test_content_changed_size_differs(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "hosts", "hello\n")
    write(upper / "hosts", "hello\nmore\n")

    assert scan(upper, [lower]) == [
        Change(
            "/hosts",
            "C",
            "file",
            11,
            False,
            "copied up from the image: content changed (6 → 11 bytes)",
        )
    ]


def test_content_changed_same_size_found_past_the_first_chunk(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    data = bytearray(300_000)
    write(lower / "blob", bytes(data))
    copy_up(lower, upper, "blob")
    data[-1] = 1
    with open(upper / "blob", "r+b") as f:  # keep the copied mtime: only the bytes differ
        f.seek(len(data) - 1)
        f.write(b"\x01")
    shutil.copystat(lower / "blob", upper / "blob")

    (change,) = scan(upper, [lower])
    assert change.reason == "copied up from the image: content changed (same size)"


def test_chmod_is_metadata_only(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "passwd", "root:x:0:0\n")
    copy_up(lower, upper, "passwd").chmod(0o600)

    (change,) = scan(upper, [lower])
    assert change.reason == "copied up from the image: mode 0644→0600, content unchanged"


def test_touch_is_metadata_only(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "f", "same")
    os.utime(copy_up(lower, upper, "f"), ns=(0, 10**18))

    (change,) = scan(upper, [lower])
    assert change.reason == "copied up from the image: mtime changed, content unchanged"


@pytest.mark.root
def test_chown_names_uid_and_gid(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "f", "same")
    os.chown(lower / "f", 0, 0)
    os.chown(copy_up(lower, upper, "f"), 1000, 100)
    shutil.copystat(lower / "f", upper / "f")  # chown may clear mode bits; keep them equal

    (change,) = scan(upper, [lower])
    assert change.reason == "copied up from the image: uid 0→1000, gid 0→100, content unchanged"


def test_content_and_mode_both_named_but_not_mtime(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "f", "ab")
    write(upper / "f", "abc", mode=0o600)
    os.utime(upper / "f", ns=(0, 10**18))

    (change,) = scan(upper, [lower])
    assert (
        change.reason == "copied up from the image: content changed (2 → 3 bytes), mode 0644→0600"
    )


def test_copy_up_with_nothing_changed(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "f", "same")
    copy_up(lower, upper, "f")

    (change,) = scan(upper, [lower])
    assert change == Change(
        "/f",
        "C",
        "file",
        4,
        False,
        "copied up, but nothing differs: metadata set to the same value, or opened for writing",
    )


def test_symlink_target_changed(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    os.symlink("hosts", lower / "link")
    os.symlink("motd", upper / "link")

    (change,) = scan(upper, [lower])
    assert change == Change(
        "/link", "C", "symlink", 4, False, "copied up from the image: target changed: hosts → motd"
    )


def test_type_changes(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "was_file", "x")
    write(lower / "was_dir" / "inside", "y")
    (upper / "was_file").mkdir()
    write(upper / "was_dir", "now a file")

    assert [(c.path, c.kind, c.ftype, c.reason) for c in scan(upper, [lower])] == [
        ("/was_dir", "C", "file", "type changed: the image's directory is now a file"),
        ("/was_file", "C", "dir", "type changed: the image's file is now a directory"),
    ]


def test_directory_holding_changes_names_mode_but_not_mtime(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "etc" / "hosts", "a")
    write(lower / "var" / "log", "b")
    copy_up_dir(lower, upper, "etc")
    write(upper / "etc" / "new", "c")
    copy_up_dir(lower, upper, "var").chmod(0o700)
    write(upper / "var" / "new", "d")

    changes = scan(upper, [lower])
    assert only(changes, "/etc").reason == "copied up from the image: holds changes below"
    assert only(changes, "/var").reason == (
        "copied up from the image: holds changes below, mode 0755→0700"
    )


def test_directory_with_nothing_below(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    (lower / "same").mkdir()
    (lower / "touched").mkdir()
    copy_up_dir(lower, upper, "same")
    os.utime(copy_up_dir(lower, upper, "touched"), ns=(0, 10**18))

    assert [(c.path, c.reason) for c in scan(upper, [lower])] == [
        ("/same", "copied up from the image, but nothing differs"),
        ("/touched", "copied up from the image: mtime changed"),
    ]


def test_changes_are_sorted_by_path_as_strings(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(upper / "a.b", "1")
    write(upper / "a" / "b", "2")
    write(upper / "a-c", "3")

    assert [c.path for c in scan(upper, [lower])] == ["/a", "/a-c", "/a.b", "/a/b"]


# --- deleted and opaque (root: mknod, trusted.* xattrs) -------------------------------------


@pytest.mark.root
def test_whiteouts_name_the_type_they_hide(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "motd", "hi")
    write(lower / "data" / "f", "x")
    os.symlink("motd", lower / "link")
    for name in ("motd", "data", "link", "never_there"):
        whiteout(upper / name)

    changes = scan(upper, [lower])
    assert table(changes) == [
        ("/data", "D", "dir", 0, False, ()),
        ("/link", "D", "symlink", 0, False, ()),
        ("/motd", "D", "file", 0, False, ()),
        ("/never_there", "D", "chardev", 0, False, ()),
    ]
    assert reasons(changes) == {
        "/data": "whiteout (char 0:0) hides the image's directory and all below it",
        "/link": "whiteout (char 0:0) hides the image's symlink",
        "/motd": "whiteout (char 0:0) hides the image's file",
        "/never_there": "whiteout (char 0:0), but no image layer has this path",
    }
    assert docker_lines(changes) == [
        "D /data",
        "D /link",
        "D /motd",
        "D /never_there",
    ]


@pytest.mark.root
def test_a_real_device_is_not_a_whiteout(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))

    assert scan(upper, [lower]) == [
        Change("/null", "A", "chardev", 0, False, "new char device 1:3")
    ]


@pytest.mark.root
def test_opaque_directory_lists_what_it_hides(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "data" / "a", "1")
    write(lower / "data" / "b" / "deep", "2")
    write(lower / "data" / "c", "3")
    (upper / "data").mkdir()
    make_opaque(upper / "data")
    write(upper / "data" / "c", "made again")
    write(upper / "data" / "d", "new")

    changes = scan(upper, [lower])
    assert table(changes) == [
        ("/data", "C", "dir", 0, True, ("a", "b")),
        ("/data/c", "C", "file", 10, False, ()),
        ("/data/d", "A", "file", 3, False, ()),
    ]
    assert reasons(changes) == {
        "/data": "opaque: removed and made again; hides 2 of the image's 3 entries",
        "/data/c": "made again: new, where the image's file was removed",
        "/data/d": "new file",
    }
    assert docker_lines(changes) == ["C /data", "D /data/a", "D /data/b", "C /data/c", "A /data/d"]
    # One truth: the report's letter for each path is diff's (it was A in one, C in the other)
    assert {c.path: c.kind for c in changes}.items() <= {
        line[2:]: line[0] for line in docker_lines(changes)}.items()


@pytest.mark.root
def test_opaque_directory_over_an_empty_one(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    (lower / "home").mkdir()
    (upper / "home").mkdir()
    make_opaque(upper / "home")
    write(upper / "home" / "fresh", "")

    changes = scan(upper, [lower])
    assert (
        only(changes, "/home").reason == "opaque: removed and made again; the image's dir was empty"
    )
    assert docker_lines(changes) == ["C /home", "A /home/fresh"]


@pytest.mark.root
def test_opaque_directory_without_a_lower_is_just_new(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    (upper / "fresh").mkdir()
    make_opaque(upper / "fresh")

    assert scan(upper, [lower]) == [Change("/fresh", "A", "dir", 0, True, "new directory")]
    assert docker_lines(scan(upper, [lower])) == ["A /fresh"]


@pytest.mark.root
def test_unknown_overlay_xattrs_are_ignored(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    write(lower / "d" / "f", "x")
    copy_up_dir(lower, upper, "d")
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"x")  # "x": has xattr whiteouts
    os.setxattr(upper / "d", "trusted.overlay.impure", b"y")
    os.setxattr(upper / "d", "trusted.overlay.something-new", b"?")

    (change,) = scan(upper, [lower])
    assert (change.opaque, change.hidden) == (False, ())
    assert change.reason == "copied up from the image, but nothing differs"


@pytest.mark.parametrize("code", [errno.ENODATA, errno.EPERM, errno.ENOTSUP])
def test_unreadable_opaque_xattr_means_not_opaque(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> bytes:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "getxattr", refuse)
    assert diff.is_opaque(tmp_path) is False


def test_other_xattr_errors_are_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> bytes:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "getxattr", broken)
    with pytest.raises(OSError, match="I/O error"):
        diff.is_opaque(tmp_path)


# --- several lower layers (top-most first) --------------------------------------------------


@pytest.mark.root
def test_top_lower_wins_and_its_whiteouts_and_opaque_dirs_hide_the_rest(tmp_path: Path) -> None:
    upper, top, bottom = (tmp_path / n for n in ("upper", "top", "bottom"))
    write(bottom / "f", "bottom's")
    write(top / "f", "top's")
    copy_up(top, upper, "f")  # the same as top's: nothing differs
    write(bottom / "gone", "x")
    whiteout(top / "gone")
    write(upper / "gone", "back")  # top's whiteout hides bottom's: this one is new
    write(bottom / "d" / "old", "x")
    write(top / "d" / "kept", "y")
    make_opaque(top / "d")  # bottom's d/old is not part of the image
    (upper / "d").mkdir()
    make_opaque(upper / "d")

    changes = scan(upper, [top, bottom])
    assert [(c.path, c.kind, c.hidden) for c in changes] == [
        ("/d", "C", ("kept",)),
        ("/f", "C", ()),
        ("/gone", "A", ()),
    ]
    assert only(changes, "/f").reason.startswith("copied up, but nothing differs")


# --- docker_lines and tree_bytes on their own -------------------------------------------------


def test_docker_lines_adds_parents_as_changed_and_never_prints_root() -> None:
    changes = [
        Change("/", "C", "dir", 0, False, "the root"),
        Change("/a.b", "A", "file", 1, False, "new file"),
        Change("/a/b/c", "A", "file", 1, False, "new file"),
        Change("/a/b/d", "D", "file", 0, False, "whiteout"),
    ]
    assert docker_lines(changes) == ["C /a", "A /a.b", "C /a/b", "A /a/b/c", "D /a/b/d"]
    assert docker_lines([]) == []


def test_tree_bytes_counts_files_and_symlinks_and_hard_links_once(tmp_path: Path) -> None:
    write(tmp_path / "a", b"x" * 10)
    write(tmp_path / "sub" / "b", b"y" * 20)
    os.link(tmp_path / "sub" / "b", tmp_path / "b_again")
    os.symlink("abc", tmp_path / "sub" / "ln")
    os.mkfifo(tmp_path / "pipe")

    assert tree_bytes(tmp_path) == 10 + 20 + 3


# --- a real overlay mount --------------------------------------------------------------------

MOUNT_OPTIONS = "redirect_dir=off,metacopy=off,index=off"  # as minictr mounts


def mounted(path: Path) -> bool:
    return f" {path} " in Path("/proc/self/mountinfo").read_text()


def umount(path: Path) -> None:
    """Shell: umount PATH"""
    subprocess.run(["umount", path], check=True)


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """An image in lower/, mounted with an empty upper/ at merged/; never left mounted.

    Shell: mount -t overlay overlay -o lowerdir=L,upperdir=U,workdir=W,redirect_dir=off,... M
    """
    dirs = {n: tmp_path / n for n in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    image = dirs["lower"]
    write(image / "etc" / "hosts", "127.0.0.1 localhost\n")
    write(image / "etc" / "passwd", "root:x:0:0:root:/root:/bin/sh\n")
    write(image / "etc" / "motd", "welcome\n")
    write(image / "etc" / "oldname", "renamed\n")
    write(image / "data" / "f", "data\n")
    write(image / "data" / "sub" / "g", "deep\n")
    d = dirs
    options = f"lowerdir={d['lower']},upperdir={d['upper']},workdir={d['work']},{MOUNT_OPTIONS}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, d["merged"]], check=True)
    try:
        yield dirs
    finally:
        if mounted(d["merged"]):
            umount(d["merged"])
    assert not mounted(d["merged"])


def change_things(merged: Path) -> None:
    """What a container would do, through the merged view."""
    write(merged / "etc" / "new", "new\n")  # echo new > /etc/new
    with open(merged / "etc" / "hosts", "a") as f:  # echo ::1 localhost >> /etc/hosts
        f.write("::1 localhost\n")
    os.chmod(merged / "etc" / "passwd", 0o600)  # chmod 600 /etc/passwd
    os.unlink(merged / "etc" / "motd")  # rm /etc/motd
    shutil.rmtree(merged / "data")  # rm -rf /data && mkdir /data
    (merged / "data").mkdir()
    os.rename(merged / "etc" / "oldname", merged / "etc" / "newname")  # mv


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a change could touch, per path: type, mode, owner, mtime, content."""
    seen: dict[str, tuple[object, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        content = path.read_bytes() if path.is_file() else None
        seen[str(path.relative_to(root))] = (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            content,
        )
    return seen


@pytest.mark.root
def test_real_overlay_upper_is_classified(overlay: dict[str, Path]) -> None:
    change_things(overlay["merged"])
    assert os.listdir(overlay["merged"] / "data") == []  # the image's data/ is hidden
    umount(overlay["merged"])  # as minictr does when the container has exited

    changes = scan(overlay["upper"], [overlay["lower"]])

    assert table(changes) == [
        ("/data", "C", "dir", 0, True, ("f", "sub")),
        ("/etc", "C", "dir", 0, False, ()),
        ("/etc/hosts", "C", "file", 34, False, ()),
        ("/etc/motd", "D", "file", 0, False, ()),
        ("/etc/new", "A", "file", 4, False, ()),
        ("/etc/newname", "A", "file", 8, False, ()),
        ("/etc/oldname", "D", "file", 0, False, ()),
        ("/etc/passwd", "C", "file", 30, False, ()),
    ]
    why = reasons(changes)
    # With file handles on the lower fs, copy-up records where a file came from (overlayfs.rst
    # "origin"), so a renamed file can be told from a new one.
    assert why.pop("/etc/newname") in (
        "new name for an image file: copied up, then moved or linked",
        "new file",
    )
    assert why == {
        "/data": "opaque: removed and made again; hides the image's 2 entries",
        "/etc": "copied up from the image: holds changes below",
        "/etc/hosts": "copied up from the image: content changed (20 → 34 bytes)",
        "/etc/motd": "whiteout (char 0:0) hides the image's file",
        "/etc/new": "new file",
        "/etc/oldname": "whiteout (char 0:0) hides the image's file",
        "/etc/passwd": "copied up from the image: mode 0644→0600, content unchanged",
    }
    assert docker_lines(changes) == [
        "C /data",
        "D /data/f",
        "D /data/sub",
        "C /etc",
        "C /etc/hosts",
        "D /etc/motd",
        "A /etc/new",
        "A /etc/newname",
        "D /etc/oldname",
        "C /etc/passwd",
    ]
    assert tree_bytes(overlay["upper"]) == 34 + 4 + 8 + 30


@pytest.mark.root
def test_real_overlay_leaves_the_image_unchanged(overlay: dict[str, Path]) -> None:
    before = snapshot(overlay["lower"])
    change_things(overlay["merged"])
    umount(overlay["merged"])
    assert snapshot(overlay["lower"]) == before


def test_a_symlink_replaced_before_its_readlink_reads_as_changed(tmp_path: Path) -> None:
    """A running container swaps a symlink for a directory between the walk's listing and
    its readlink (CI saw it: test_a_directory_swapped_for_a_symlink_never_shows_the_host).
    readlinkat(2) then says EINVAL; the walk must read that as "changed meanwhile" and
    leave the entry out, not end in a traceback."""
    (tmp_path / "zzz").mkdir()
    top = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as e:
            walk.readlink(top, "zzz")
    finally:
        os.close(top)
    assert e.value.errno in walk.CHANGED
