"""`minictr demo overlay`: the OverlayFS experiment of tutorial chapter 01, done live.

Four directories, one mount, a handful of files: each step is done for real from Python and
printed as the shell command that does the same, followed by the tree of the four directories
and one sentence on what the kernel did and why. ``--pause`` waits for Enter before each step,
for a presenter in front of an audience.

Part 1 is the experiment of the Japanese article that chapter follows, with the same names
(lower, upper, work, merged; testfile_overlay, testfile_lower, testfile_upper) and its
`mount -l | grep overlay` checks; ``--part 1`` stops there, and the directory is then as the
article leaves it. Part 2 goes on with directories: a lower directory removed and made again
(opaque), and a renamed file.

The shell lines run in DIR, as in the tutorial, and so does the demo: it changes into DIR, so
the Python below reads like the shell (``touch("merged/testfile_overlay")``) and the mount
options carry short relative paths (``lowerdir=lower``) that show as such in ``findmnt``.

Shell: cd DIR && mkdir lower upper work merged && sudo mount -t overlay -o ... overlay merged
See: Documentation/filesystems/overlayfs.rst, mount(2), umount(2), xattr(7), rename(2)
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import re
import shutil
import stat
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

from minictr import libc
from minictr.errors import StepError
from minictr.explain import step
from minictr.fs.remove import remove_tree
from minictr.run import overlay
from minictr.show import diff
from minictr.show.report import use_color

LAYERS = ("lower", "upper", "work", "merged")  # made in DIR; the only things the demo makes
DEFAULT_NAME = "overlay-demo"  # under the current directory: overlay-demo, overlay-demo-2, ...
SHOWN_BYTES = 32  # a file this small shows its content in the tree; a longer one, its size
CHECK_DIR = "check the demo directory"  # the step name of the errors about DIR
WIDTH = 88  # the sentences are wrapped to this many columns, for a projector

# The mount, as in the tutorial, plus the options minictr mounts every container with (see
# minictr/run/overlay.py for why each one): the demo shows what minictr itself does.
MOUNT_OPTIONS = overlay.mount_options([Path("lower")], Path("upper"), Path("work"))
MOUNT_SHELL = (
    f"sudo mount -t overlay -o {MOUNT_OPTIONS} overlay merged\n"
    f"# {','.join(overlay.OPTIONS)}: minictr's own options (minictr/run/overlay.py)"
)
MOUNT_HINTS = {
    errno.ENODEV: "this kernel has no overlay filesystem: sudo modprobe overlay",
    errno.EINVAL: "overlay refused the options; sudo dmesg | tail says why",
    errno.EPERM: "mounting needs root (CAP_SYS_ADMIN): try sudo",
}
UMOUNT_HINTS = {
    errno.EBUSY: "a process still uses merged (a shell cd'd into it?); "
    "minictr detached it lazily (umount -l): the kernel frees it when that process leaves",
}


# --- the actions, one line of shell each ---------------------------------------------------


def make_layers() -> None:
    for name in LAYERS:
        os.mkdir(name)


def mount() -> None:
    """The kernel resolves the relative lowerdir/upperdir/workdir against our cwd, DIR."""
    libc.mount("overlay", "merged", "overlay", 0, MOUNT_OPTIONS)


def unmount() -> None:
    libc.umount2("merged")


def show_overlay_mounts() -> None:
    """``mount -l | grep overlay``, as the article checks: the overlay lines of this mount
    namespace's table, in mount(8)'s words. See: proc_mounts(5)"""
    with open("/proc/self/mounts") as mounts:
        lines = [line.split() for line in mounts if line.split()[2] == "overlay"]
    for source, target, fstype, options, *_ in lines:
        print(f"{source} on {target} type {fstype} ({options})", flush=True)
    if not lines:
        print("(nothing: grep found no overlay line)", flush=True)


def touch(*paths: str) -> None:
    for path in paths:
        Path(path).touch()


def add_to_lower() -> None:
    os.mkdir("lower/testdir_lower")
    touch("lower/testdir_lower/testfile_a", "lower/testdir_lower/testfile_b")
    write("lower/testfile_old", "lower\n")


def write(path: str, text: str) -> None:
    """``echo TEXT > PATH``: open for writing (O_TRUNC), which is what triggers a copy-up."""
    Path(path).write_text(text)


# --- the steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    title: str  # what the presenter says
    shell: str  # the same in the shell, run in DIR; one command a line
    action: Callable[[], None]
    why: str  # one sentence: what the kernel did, and why
    hints: Mapping[int, str] = field(default_factory=dict)  # errno -> what to do
    tree: bool = True  # draw the four directories after it (a check changes nothing)


def _mount_step(title: str, why: str) -> Step:
    return Step(title, MOUNT_SHELL, mount, why, MOUNT_HINTS)


def _unmount_step(why: str) -> Step:
    return Step("unmount", "sudo umount merged", unmount, why, UMOUNT_HINTS)


def _check_step(why: str) -> Step:
    return Step("check the mount table, as the article does", "mount -l | grep overlay",
                show_overlay_mounts, why, tree=False)


PART_1 = (
    Step("make the four directories", "mkdir lower upper work merged", make_layers,
         "Nothing is mounted yet: four ordinary empty directories, with work on the same "
         "filesystem as upper because the kernel finishes every copy in work and then "
         "moves it into upper with one rename(2)."),
    _mount_step("mount the overlay",
                "The kernel laid upper over lower and shows the union at merged; it also "
                "made work/work, its private workbench, which only root may enter."),
    _check_step("One line: an overlay mounted on merged, and its options as the kernel "
                "reports them: rw and relatime are its defaults, and an option left at its "
                "default (redirect_dir=off here) is not listed."),
    Step("create a file through merged", "touch merged/testfile_overlay",
         lambda: touch("merged/testfile_overlay"),
         "A new name has nothing below it to copy, so the kernel created the file straight "
         "in upper, and lower stays empty."),
    _unmount_step("Without the mount, merged is an empty directory again, but "
                  "testfile_overlay lives on in upper: a writable layer is a plain directory."),
    _check_step("No line: the overlay is gone from the mount table; only its directories "
                "remain."),
    Step("put a file in lower and one in upper, while unmounted",
         "touch lower/testfile_lower\ntouch upper/testfile_upper",
         lambda: touch("lower/testfile_lower", "upper/testfile_upper"),
         "These are plain file creations: changing the layers while they are mounted would "
         "be undefined behaviour, so image layers are always prepared unmounted."),
    _mount_step("mount again",
                "merged shows the union: testfile_lower comes from lower, the other two "
                "from upper, and nothing was copied to show them side by side."),
    Step("write to the lower file through merged", "echo test > merged/testfile_lower",
         lambda: write("merged/testfile_lower", "test\n"),
         "Copy-up: opening a lower-only file for writing made the kernel copy it whole into "
         "upper (through work/work) and write to the copy, so lower/testfile_lower is "
         "still empty."),
    Step("write to the upper file through merged", "echo test > merged/testfile_upper",
         lambda: write("merged/testfile_upper", "test\n"),
         "The file is already in upper, so the kernel handed the write straight to it: "
         "no copy."),
    Step("delete the file only upper has", "rm merged/testfile_overlay",
         lambda: os.unlink("merged/testfile_overlay"),
         "Nothing below has this name, so the kernel simply removed it from upper, and it "
         "is gone everywhere."),
    Step("delete the file lower has too", "rm merged/testfile_lower",
         lambda: os.unlink("merged/testfile_lower"),
         "The kernel never writes to lower, and removing the upper copy alone would let the "
         "lower file show through again, so it replaced the copy with a whiteout: a "
         "character device 0, 0 that says 'this name is deleted'."),
    _unmount_step("The deletion is stored in upper as the whiteout while lower still holds "
                  "testfile_lower: deleting an image's file in a container never frees disk "
                  "space."),
)

PART_2 = (
    Step("put a directory and a file in lower, while unmounted",
         "mkdir lower/testdir_lower\n"
         "touch lower/testdir_lower/testfile_a lower/testdir_lower/testfile_b\n"
         "echo lower > lower/testfile_old",
         add_to_lower,
         "Again plain changes to a layer that is not mounted, to have a lower directory and "
         "one more lower file to play with."),
    _mount_step("mount again",
                "merged shows lower's new directory and file, and still hides testfile_lower: "
                "the whiteout in upper outlived the unmount."),
    Step("remove the lower directory", "rm -rf merged/testdir_lower",
         lambda: shutil.rmtree("merged/testdir_lower"),
         "rm deleted both files (a whiteout each, in a copy of the directory in upper) and "
         "then the directory, which the kernel replaced with one whiteout that hides it "
         "and all below it."),
    Step("make the directory again", "mkdir merged/testdir_lower",
         lambda: os.mkdir("merged/testdir_lower"),
         "The kernel put a new directory in place of the whiteout and marked it opaque with "
         "the xattr trusted.overlay.opaque=y, so lower's testfile_a and testfile_b stay "
         "hidden without a whiteout each."),
    Step("rename a lower file", "mv merged/testfile_old merged/testfile_new",
         lambda: os.rename("merged/testfile_old", "merged/testfile_new"),
         "The kernel copied testfile_old up, renamed the copy, and left a whiteout at the "
         "old name, because lower still has the file and must not show through."),
    _unmount_step("Every change of part 2 is in upper too, as a whiteout, an opaque "
                  "directory and a copied-up file, and lower is exactly as it was made."),
)

PARTS = (
    ("Part 1: the experiment of tutorial chapter 01", PART_1),
    ("Part 2: directories and renames", PART_2),
)


def overlay_demo(directory: Path | None, *, pause: bool, cleanup: bool,
                 parts: int = len(PARTS)) -> None:
    """Run every step of the first ``parts`` parts in ``directory`` (None: a new
    ./overlay-demo), then unmount. ``parts=1``: the article's experiment only.

    Everything is checked before anything is made, so bad input changes nothing.
    """
    if not 1 <= parts <= len(PARTS):
        raise StepError("check input", f"--part {parts}: the demo has parts 1 to {len(PARTS)}")
    chosen = PARTS[:parts]
    total = sum(len(steps) for _, steps in chosen)
    check_kernel()
    demo_dir, made_dir = choose_directory(directory)
    out = Printer(color=use_color(sys.stdout))
    out.line(f"OverlayFS, step by step, in {demo_dir}")
    out.line(f"(the shell lines below run there: cd {demo_dir})")
    with ExitStack() as undo:  # undone in reverse order, on success, error or Ctrl-C
        if cleanup:
            undo.callback(remove_layers, demo_dir, made_dir)
        undo.callback(os.chdir, os.getcwd())
        os.chdir(demo_dir)
        undo.callback(unmount_if_mounted, demo_dir / "merged")  # first: before cleanup
        number = 0
        for title, steps in chosen:
            out.part(title)
            for s in steps:
                number += 1
                run_step(s, f"{number}/{total}", demo_dir, out, pause)
    if cleanup:
        out.line(f"\nRemoved what the demo made in {demo_dir} (--cleanup).")
    else:
        out.line(f"\nNothing is mounted any more. The directories stay in {demo_dir}: look at "
                 f"them with sudo ls -l {demo_dir}/upper, remove them with sudo rm -r "
                 f"{demo_dir}")


def run_step(s: Step, number: str, demo_dir: Path, out: Printer, pause: bool) -> None:
    out.header(number, s.title, s.shell)
    if pause:
        wait_for_enter(out)
    with step(s.title, s.shell, s.hints):  # an OSError becomes a StepError, with a hint
        s.action()
        if s.tree:
            out.tree(demo_dir)
    out.why(s.why)


def wait_for_enter(out: Printer) -> None:
    """Read one line; at end-of-file (a pipe, /dev/null) go on without waiting."""
    out.line("[press Enter to run this step]")
    if sys.stdin is not None:
        sys.stdin.readline()


# --- checks, before anything is made ------------------------------------------------------


def check_kernel() -> None:
    """Refuse before touching anything when the kernel cannot mount an overlay."""
    release = os.uname().release
    try:
        modules_dep = Path(f"/lib/modules/{release}/modules.dep").read_text()
    except OSError:
        modules_dep = ""  # no modules installed (a container, a custom kernel): built-in only
    if not kernel_has_overlay(Path("/proc/filesystems").read_text(), modules_dep):
        raise StepError("check the kernel", f"kernel {release} has no overlay filesystem",
                        errno=errno.ENODEV, hint=MOUNT_HINTS[errno.ENODEV])


def kernel_has_overlay(proc_filesystems: str, modules_dep: str) -> bool:
    """True if overlay is built in or loaded (/proc/filesystems lists it, see proc(5)), or is
    a module not loaded yet (modules.dep names it, and mount(2) loads it on first use)."""
    listed = any(line.split()[-1:] == ["overlay"] for line in proc_filesystems.splitlines())
    return listed or re.search(r"(^|/)overlay\.ko", modules_dep, re.MULTILINE) is not None


def choose_directory(directory: Path | None) -> tuple[Path, bool]:
    """The directory to work in, and whether the demo made it (then --cleanup removes it).

    --dir must be new (its parent must exist) or an empty directory; without --dir, the
    first free name of overlay-demo, overlay-demo-2, ... in the current directory.
    """
    if directory is None:
        check_filesystem(Path.cwd())
        for n in range(1, 1000):
            candidate = Path.cwd() / (DEFAULT_NAME if n == 1 else f"{DEFAULT_NAME}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise StepError.from_os_error("make the demo directory", e) from e
            return candidate, True
        raise StepError("make the demo directory", f"{DEFAULT_NAME}-1 to -999 all exist",
                        hint="remove some, or give --dir")
    path = directory.absolute()
    if path.is_dir():
        if any(path.iterdir()):
            raise StepError(CHECK_DIR, f"{path} is not empty",
                            hint="give a new or empty directory, or leave out --dir")
        check_filesystem(path)
        return path, False
    if path.exists() or path.is_symlink():
        raise StepError(CHECK_DIR, f"{path} exists and is not a directory",
                        hint="give a new or empty directory, or leave out --dir")
    if not path.parent.is_dir():
        raise StepError(CHECK_DIR, f"no such directory: {path.parent}",
                        hint=f"make it first (mkdir -p {path.parent})")
    check_filesystem(path.parent)
    try:
        path.mkdir()
    except OSError as e:
        raise StepError.from_os_error("make the demo directory", e) from e
    return path, True


def check_filesystem(path: Path) -> None:
    """Refuse a directory on a filesystem overlay cannot use as upperdir.

    Overlay itself is one (inside a container, or a Docker build); shared folders (vboxsf,
    9p, nfs) and FUSE are others: they cannot hold whiteouts or trusted.* xattrs. tmpfs can,
    and is accepted: the demo behaves there exactly as on a disk.
    """
    fstype = overlay.filesystem_type(path)
    if fstype.split(".")[0] in overlay.UNUSABLE_UPPER_FS:
        raise StepError(CHECK_DIR, f"{path} is on {fstype}, which overlay cannot use as "
                        "upperdir", hint="choose a directory on the machine's own disk, "
                        "e.g. --dir /var/tmp/overlay-demo")


# --- the end, whatever happened -------------------------------------------------------------


def unmount_if_mounted(merged: Path) -> None:
    """After an error or Ctrl-C mid-way: unmount, lazily if a process still uses merged."""
    if not os.path.ismount(merged):
        return
    with step("unmount", "sudo umount merged || sudo umount -l merged"):
        try:
            libc.umount2(str(merged))
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            libc.umount2(str(merged), libc.MNT_DETACH)  # gone from view; freed when unused


def remove_layers(demo_dir: Path, made_dir: bool) -> None:
    """--cleanup: remove what the demo made, never through a mount that is still there."""
    if os.path.ismount(demo_dir / "merged"):
        return
    for name in LAYERS:
        remove_tree(demo_dir / name)  # root may enter work/work
    if made_dir:
        with suppress(OSError):  # someone put something else there meanwhile: not ours
            demo_dir.rmdir()


# --- printing --------------------------------------------------------------------------------

# SGR colours, see console_codes(4); whiteout red and opaque magenta, as in minictr.show.report.
_SGR = {"title": "1", "shell": "36", "whiteout": "31", "opaque": "35", "note": "2"}


class Printer:
    """Everything the demo prints goes to stdout; colour only on a terminal without NO_COLOR."""

    def __init__(self, *, color: bool) -> None:
        self.color = color

    def paint(self, text: str, kind: str) -> str:
        return f"\x1b[{_SGR[kind]}m{text}\x1b[0m" if self.color and text else text

    def line(self, text: str = "") -> None:
        print(text, flush=True)

    def part(self, title: str) -> None:
        self.line()
        self.line(self.paint(f"== {title} ==", "title"))

    def header(self, number: str, title: str, shell: str) -> None:
        self.line()
        self.line(self.paint(f"[{number}] {title}", "title"))
        for command in shell.splitlines():
            self.line(self.paint(command if command.startswith("#") else f"$ {command}",
                                 "shell"))

    def tree(self, demo_dir: Path) -> None:
        rows = list(tree_rows(demo_dir))
        width = max(len(label) for label, _, _ in rows)
        for label, note, kind in rows:
            if note:
                label = label.ljust(width) + "  " + self.paint(note, kind)
            self.line(label)

    def why(self, sentence: str) -> None:
        self.line(textwrap.fill(sentence, WIDTH, initial_indent="→ ", subsequent_indent="  "))


def tree_rows(demo_dir: Path) -> Iterator[tuple[str, str, str]]:
    """(tree line, note, colour) for DIR, as ``tree`` draws it: sorted, no times, no inodes."""
    yield ".", "", "note"
    yield from _rows(demo_dir, demo_dir, "")


def _rows(directory: Path, demo_dir: Path, indent: str) -> Iterator[tuple[str, str, str]]:
    entries = sorted(os.scandir(directory), key=lambda e: e.name)
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        label = indent + ("└── " if last else "├── ") + entry.name + ("/" if is_dir else "")
        path = Path(entry.path)
        note, kind = describe(path, st, demo_dir)
        yield label, note, kind
        if is_dir and path != demo_dir / "work" / "work":  # overlay's own: not shown inside
            yield from _rows(path, demo_dir, indent + ("    " if last else "│   "))


def describe(path: Path, st: os.stat_result, demo_dir: Path) -> tuple[str, str]:
    """The note after an entry's name, and its colour."""
    if diff.is_whiteout(st):  # as ls -l shows it, and the article: c--------- 1 root root 0, 0
        return (f"{stat.filemode(st.st_mode)} {st.st_nlink} {_user(st.st_uid)} "
                f"{_group(st.st_gid)} {_devno(st)}  (whiteout)"), "whiteout"
    if stat.S_ISDIR(st.st_mode):
        if path == demo_dir / "merged":
            if os.path.ismount(path):
                return "mounted: upper over lower", "note"
            return "not mounted" + ("" if any(path.iterdir()) else ": an empty directory"), "note"
        if path == demo_dir / "work" / "work":
            return f"{stat.filemode(st.st_mode)}  overlay's workbench, root only", "note"
        if diff.is_opaque(path):
            return f"{diff.OPAQUE_XATTR}=y  (opaque)", "opaque"
        return "", "note"
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            return "(empty)", "note"
        if st.st_size <= SHOWN_BYTES:
            return json.dumps(path.read_bytes().decode(errors="replace")), "note"
        return f"{st.st_size} bytes", "note"
    return stat.filemode(st.st_mode), "note"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _devno(st: os.stat_result) -> str:
    """As ls -l shows a device: "major, minor" where the size would be."""
    return f"{os.major(st.st_rdev)}, {os.minor(st.st_rdev)}"
