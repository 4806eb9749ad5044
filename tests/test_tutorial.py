"""The tutorial is executed: every command block, as a student types it in the Vagrant box.

One test per chapter file (``en/01-overlayfs-by-hand``, ``ja/01-overlayfs-by-hand``, ...).
The blocks are read by pytest-codeblocks (``extract_from_file``), so a chapter uses that
library's markers, which are HTML comments and do not show on GitHub:

    <!--pytest-codeblocks:expected-output-->      the next fenced block is the exact stdout
    <!--pytest-codeblocks:expected-output-ignore-whitespace-->   the same, spaces and tabs ignored
    <!--pytest.mark.skip(reason="...")-->         the next block is shown, never run

and, for output that varies (ids, PIDs, times), markers of its own (HTML comments too):

    <!--minictr:stderr-->     the next ```text block is the stderr of the last command block
                              before it (which must run: a skipped one printed nothing)
    <!--minictr:stdout-->     the same, for its stdout
    <!--minictr:stderr excerpt sizes cgroup-v2-->   with options (any of them, in any order)
    <!--minictr:unchecked: REASON-->   shown as it is, never compared: REASON says why

A ``minictr:`` sample is compared after both sides are normalised (tests/samples.py): ids,
digests, PIDs, dates and the like become placeholders; ``…`` in a line matches anything, and
a line that is only ``...`` any number of lines. Options:

    excerpt     its lines appear in that order among the output's (else: the whole output)
    sizes       byte sizes may differ (``du`` on the host's filesystem, memory in use)
    numbers     so may any number of two digits or more (PIDs in ``ps``, mountinfo's ids)
    cgroup-v1   a sample of one kind of host, compared only on that kind (a chapter shows
    cgroup-v2   each kind's, or says what the other prints)

Every ```text and ```json block is one of these four: an expected output, a stdout or stderr
sample, or unchecked with a reason (a session typed into a shell; what only the Vagrant box
prints). The samples of en and ja are identical, as their commands are.

We do not let the plugin run the files itself (``pytest --codeblocks``): it starts a new
``sh`` for every block in pytest's own directory, so a ``cd`` would be forgotten between two
blocks, and it knows nothing of temp dirs, MINICTR_ROOT, sudo or leftover mounts. Instead:

- All ``bash`` blocks of a chapter run in order in ONE bash process, each block ``source``d
  from its own file, so state carries over as in a terminal: the ``cd overlay-lab`` of one
  block, the ``upper=$(...)`` variable of another.
- The shell has errexit and pipefail: the first command that fails stops the chapter, and
  the test names it (chapter line, command, exit status) with the block's stderr.
- stdout of every block is compared with its expected output, when it has one, and
  stdout and stderr with their ``minictr:`` samples: minictr's change report, its
  ``security:`` lines and ``--explain`` go to stderr. Every mismatch of a chapter is shown.
- Every chapter starts in a fresh directory under /var/tmp: HOME (the shell starts there),
  and a separate MINICTR_ROOT. Not /tmp: an upperdir cannot be on overlayfs and, on some
  setups, not on tmpfs either; /var/tmp is usually on the disk. MINICTR_TEST_TMPDIR overrides.
- In a ``finally``, whatever is still mounted under that directory is unmounted, and the test
  fails if the chapter left anything mounted. The directory is removed only when nothing is
  mounted under it (rmtree would otherwise walk into the mounts).

``@pytest.mark.root`` (tests/conftest.py): skipped without root, failed instead with CI=true,
and checked there for leaks (mounts, processes, state directories) like every root test.

``sudo``: the test needs root, and as root it ALWAYS puts a ``sudo`` shim first on PATH,
even where a real sudo exists. Real sudo resets the environment (env_reset, secure_path),
so ``sudo minictr ...`` would lose MINICTR_ROOT and write to /var/lib/minictr of the machine
running the tests, and would not find the minictr of this checkout. The shim is a plain
``exec "$@"``; it refuses sudo's options so that no chapter relies on one it ignores.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_codeblocks import CodeBlock, extract_from_file

from tests import samples
from tests.conftest import CGROUP_V2_HOST
from tests.helpers import damaged_layers, scaled

TUTORIAL = Path(__file__).resolve().parent.parent / "tutorial"
LANGUAGES = ("en", "ja")
CHAPTER_TIMEOUT = 600  # seconds; building the busybox image is the slowest step
RUN_SYNTAX = "bash"  # blocks that are commands; every one of them is run or skipped on purpose
SHOWN_SYNTAXES = {"text", "json"}  # output shown to the reader, never run
SKIP_MARK = re.compile(r'pytest\.mark\.skip\(reason="[^"]+"\)')
NAMED_FUNCTION = re.compile(r"`(minictr(?:\.\w+)+)`")
EXPECTED_MARK = re.compile(r"<!--pytest-codeblocks:expected-output(?:-ignore-whitespace)?-->")
SAMPLE_MARK = re.compile(r"<!--minictr:(stdout|stderr)((?: [a-z0-9-]+)*)-->")
UNCHECKED_MARK = re.compile(r"<!--minictr:unchecked: [^<>]*\w[^<>]*-->")
SAMPLE_OPTIONS = {"excerpt", "sizes", "numbers", "cgroup-v1", "cgroup-v2"}
HOST_CGROUP = "cgroup-v2" if CGROUP_V2_HOST else "cgroup-v1"  # hybrid is v1, as for minictr
# Chapters being written while the sample markers came in (issue 12): their ```text blocks
# are not marked yet. Strict: once a chapter's are, its test passes, and it must leave the set.
UNMARKED_CHAPTERS: set[str] = set()
NOT_FOR_UPPERDIR = {"overlay", "nfs", "nfs4", "vboxsf", "9p", "virtiofs", "cifs", "smb3"}

SUDO_SHIM = """\
#!/bin/sh
# sudo for the tutorial test, which runs as root already. Real sudo would reset the
# environment (MINICTR_ROOT, PATH). See tests/test_tutorial.py.
case "$1" in
    -*) echo "sudo (tutorial test shim): options are not supported: $1" >&2; exit 1 ;;
esac
exec "$@"
"""


def chapters(lang: str) -> list[Path]:
    return sorted((TUTORIAL / lang).glob("[0-9][0-9]-*.md"))


ALL_CHAPTERS = [path for lang in LANGUAGES for path in chapters(lang)]
MARKED_OR_NOT = [
    pytest.param(path, marks=pytest.mark.xfail(strict=True, reason="samples not marked yet: "
                                               "take it out of UNMARKED_CHAPTERS once they are"))
    if path.stem in UNMARKED_CHAPTERS else path
    for path in ALL_CHAPTERS
]


def chapter_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def commands(path: Path) -> list[CodeBlock]:
    return [block for block in extract_from_file(path) if block.syntax == RUN_SYNTAX]


def is_skipped(block: CodeBlock) -> bool:
    return any(SKIP_MARK.fullmatch(mark) for mark in block.marks)


@dataclass(frozen=True)
class Shown:
    """A ```text or ```json block: output shown to the reader, and the marker line above it."""

    lineno: int  # of its opening fence, counted as pytest-codeblocks counts (from 1)
    syntax: str
    text: str
    marker: str  # the line before it, if it is an HTML comment; else ""

    @property
    def checked(self) -> re.Match[str] | None:
        return SAMPLE_MARK.fullmatch(self.marker)

    @property
    def options(self) -> set[str]:
        return set(self.checked[2].split()) if self.checked else set()


@functools.cache
def shown_blocks(path: Path) -> list[Shown]:
    """Every ```text and ```json block of a chapter, in order, with its marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = lines[i].lstrip()
        if not fence.startswith("```"):
            i += 1
            continue
        ticks = len(fence) - len(fence.lstrip("`"))
        end = next(j for j in range(i + 1, len(lines))
                   if lines[j].lstrip().startswith("`" * ticks))
        syntax = fence[ticks:].strip()
        if syntax in SHOWN_SYNTAXES:
            before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            marker = before if before.startswith("<!--") else ""
            text = "".join(f"{line}\n" for line in lines[i + 1 : end])
            found.append(Shown(i + 1, syntax, text, marker))
        i = end + 1
    return found


def samples_of(path: Path, blocks: list[CodeBlock]) -> dict[int, list[Shown]]:
    """The ``minictr:`` samples of each block that runs (by its index in blocks): those that
    come after it and before the next command block, run or skipped."""
    every = commands(path)
    found: dict[int, list[Shown]] = {}
    for sample in shown_blocks(path):
        if not sample.checked:
            continue
        before = [b for b in every if b.lineno < sample.lineno]
        if before and before[-1] in blocks:
            found.setdefault(blocks.index(before[-1]), []).append(sample)
    return found


# --- the runner ------------------------------------------------------------------------


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory`, in mount order (see proc(5), mountinfo)."""
    found = []
    prefix = str(directory).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # field 5 is the mount point, with space, tab, newline and \ escaped in octal
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
            if point == prefix[:-1] or point.startswith(prefix):
                found.append(point)
    return found


def unmount_all(points: list[str]) -> None:
    """Unmount, the last mounted first; lazily if a process still holds one (umount(8) -l)."""
    for point in reversed(points):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", point], capture_output=True)


def fresh_base() -> Path:
    parent = Path(os.environ.get("MINICTR_TEST_TMPDIR", "/var/tmp"))
    # "minictr-test-": the prefix conftest's leak check knows, should one be left behind
    base = Path(tempfile.mkdtemp(prefix="minictr-test-tutorial-", dir=parent))
    fstype = subprocess.run(
        ["findmnt", "--noheadings", "--output", "FSTYPE", "--target", str(base)],
        capture_output=True, text=True,
    ).stdout.strip()
    if fstype in NOT_FOR_UPPERDIR or fstype.startswith("fuse"):
        base.rmdir()
        pytest.fail(
            f"{parent} is on {fstype}, which overlay cannot use as upperdir: set "
            "MINICTR_TEST_TMPDIR to a directory on a disk filesystem (ext4, xfs, btrfs)",
            pytrace=False,
        )
    return base


def chapter_env(base: Path) -> dict[str, str]:
    """The environment of a student's shell in the box, pointed at this chapter's dirs."""
    shim_dir = base / "bin"
    shim_dir.mkdir()
    (shim_dir / "sudo").write_text(SUDO_SHIM)
    (shim_dir / "sudo").chmod(0o755)
    (base / "home").mkdir()
    (base / "minictr-root").mkdir()
    # the bin dir of this Python holds the `minictr` script of this checkout (pip install -e)
    path = os.pathsep.join([str(shim_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("MINICTR_") and k not in {"BASH_ENV", "ENV", "CDPATH"}
    }
    env.update(
        HOME=str(base / "home"),
        MINICTR_ROOT=str(base / "minictr-root"),
        PATH=path,
        LANG="C.UTF-8",  # what the Ubuntu box has: `tree` draws its lines in UTF-8
        LC_ALL="C.UTF-8",
    )
    return env


def driver_script(blocks: list[CodeBlock], run_dir: Path) -> str:
    """One bash script that sources the blocks in order, each with its own stdout/stderr."""
    failed = shlex.quote(str(run_dir / "failed"))
    on_error = f'printf "%s\\t%s\\t%s\\n" "$?" "$LINENO" "$BASH_COMMAND" > {failed}'
    lines = ["set -o errexit -o pipefail", f"trap {shlex.quote(on_error)} ERR", 'cd "$HOME"']
    for i, block in enumerate(blocks):
        code = run_dir / f"{i}.sh"
        code.write_text(block.code, encoding="utf-8")
        q = {ext: shlex.quote(str(run_dir / f"{i}.{ext}")) for ext in ("sh", "out", "err")}
        lines.append(f"echo {i} > {shlex.quote(str(run_dir / 'current'))}")
        lines.append(f"source {q['sh']} > {q['out']} 2> {q['err']} < /dev/null")
    lines.append(f"echo done > {shlex.quote(str(run_dir / 'current'))}")
    return "\n".join(lines) + "\n"


def tail(file: Path, lines: int = 40) -> str:
    if not file.exists():
        return ""
    text = file.read_text(encoding="utf-8", errors="replace")
    return "".join(text.splitlines(keepends=True)[-lines:])


def describe(path: Path, block: CodeBlock, what: str, run_dir: Path, i: int,
             with_stdout: bool = True) -> str:
    """What went wrong, where in the chapter, with the block and what it printed."""
    text = f"{chapter_id(path)}.md, block at line {block.lineno}: {what}\n"
    text += "--- block ---\n" + block.code
    outputs = [("stdout", "out")] if with_stdout else []
    for name, ext in [*outputs, ("stderr", "err")]:
        if printed := tail(run_dir / f"{i}.{ext}"):
            text += f"--- its {name} (last 40 lines) ---\n{printed}"
    return text


def check_outputs(path: Path, blocks: list[CodeBlock], run_dir: Path, upto: int,
                  base: Path) -> None:
    """Compare the stdout of blocks [0, upto) with their expected output, and their stdout and
    stderr with their samples; fail with every mismatch of the chapter."""
    failures = []
    substitutions = reader_paths(base)
    for i, block in enumerate(blocks[:upto]):
        got = {ext: (run_dir / f"{i}.{ext}").read_text(encoding="utf-8", errors="replace")
               for ext in ("out", "err")}
        if block.expected_output is not None:
            want = block.expected_output
            if block.expected_output_ignore_whitespace:
                same = re.sub(r"\s+", "", got["out"]) == re.sub(r"\s+", "", want)
            else:
                same = got["out"] == want
            if not same:
                diff = "".join(difflib.unified_diff(
                    want.splitlines(keepends=True), got["out"].splitlines(keepends=True),
                    "expected", "got",
                ))
                failures.append(describe(path, block, "unexpected output\n" + diff, run_dir, i,
                                         with_stdout=False))
        for sample in samples_of(path, blocks).get(i, []):
            stream, options = sample.checked[1], sample.options
            if options & {"cgroup-v1", "cgroup-v2"} - {HOST_CGROUP}:
                continue  # a sample of the other kind of host
            wrong = samples.mismatch(sample.text, got["out" if stream == "stdout" else "err"],
                                     excerpt="excerpt" in options, sizes="sizes" in options,
                                     numbers="numbers" in options,
                                     substitutions=substitutions)
            if wrong:
                failures.append(f"{chapter_id(path)}.md, {stream} sample at line "
                                f"{sample.lineno} (after the block at line {block.lineno}): "
                                f"{wrong}")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def reader_paths(base: Path) -> dict[str, str]:
    """The test's paths, and what the reader sees in their place: the Vagrant box's."""
    repo = Path(__file__).resolve().parent.parent
    return {
        str(base / "minictr-root"): "/var/lib/minictr",
        str(base / "home"): "/home/vagrant",
        str(Path(sys.executable).parent / "minictr"): "/usr/local/bin/minictr",
        str(repo): "/home/vagrant/minictr",
    }


def run_chapter(path: Path, base: Path) -> None:
    blocks = [block for block in commands(path) if not is_skipped(block)]
    run_dir = base / "run"
    run_dir.mkdir()
    driver = run_dir / "driver.sh"
    driver.write_text(driver_script(blocks, run_dir), encoding="utf-8")
    with open(run_dir / "driver.err", "wb") as driver_err:
        shell = subprocess.Popen(
            ["bash", str(driver)], cwd=base / "home", env=chapter_env(base),
            stdin=subprocess.DEVNULL, stdout=driver_err, stderr=driver_err,
            start_new_session=True,  # its own process group: a timeout kills it all
        )
        try:
            shell.wait(timeout=scaled(CHAPTER_TIMEOUT))
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        finally:  # whatever a block left running in the background must not hold a mount
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)
    current = tail(run_dir / "current").strip()
    if current == "done" and shell.returncode == 0:
        check_outputs(path, blocks, run_dir, len(blocks), base)
        return
    if not current.isdigit():
        pytest.fail(f"{chapter_id(path)}: the shell did not start:\n"
                    + tail(run_dir / "driver.err"), pytrace=False)
    i = int(current)
    check_outputs(path, blocks, run_dir, i, base)  # an earlier wrong output explains more
    if shell.returncode == -signal.SIGKILL:
        what = f"still running after {CHAPTER_TIMEOUT}s (waiting for input?)"
    elif (run_dir / "failed").exists():
        status, line, command = tail(run_dir / "failed").rstrip("\n").split("\t", 2)
        what = (f"`{command}` failed with exit status {status} "
                f"(chapter line {blocks[i].lineno + int(line)})")
    else:
        what = f"the shell exited with status {shell.returncode}"
    pytest.fail(describe(path, blocks[i], what, run_dir, i), pytrace=False)


# --- the tests --------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize("path", ALL_CHAPTERS, ids=chapter_id)
def test_chapter(path: Path) -> None:
    """Run the chapter's blocks in a fresh directory; fail on a wrong output or a leftover mount."""
    base = fresh_base()
    leftover: list[str] = []
    try:
        run_chapter(path, base)
        if damaged := damaged_layers(base / "minictr-root"):
            pytest.fail(f"{chapter_id(path)} changed layers of its store: {damaged}",
                        pytrace=False)
    finally:
        leftover = mounts_under(base)
        unmount_all(leftover)
        if mounts_under(base):
            print(f"left in place, still mounted under it: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if leftover:
        pytest.fail(f"{chapter_id(path)} left mounted (the test unmounted them): {leftover}",
                    pytrace=False)


@pytest.mark.parametrize("path", ALL_CHAPTERS, ids=chapter_id)
def test_every_block_is_run_or_deliberately_skipped(path: Path) -> None:
    """No command hides in a block the runner ignores (```sh, ```console, no language)."""
    for block in extract_from_file(path):
        where = f"{chapter_id(path)}.md line {block.lineno}"
        assert block.syntax in {RUN_SYNTAX, *SHOWN_SYNTAXES}, (
            f"{where}: fence language {block.syntax!r}: use bash for commands, text for output"
        )
        assert block.syntax == RUN_SYNTAX or block.expected_output is None, (
            f"{where}: an expected output follows this output block, not a command: put it "
            "right after its command block, before any sample"
        )
        for mark in block.marks:
            assert SKIP_MARK.fullmatch(mark), (
                f'{where}: unsupported marker {mark!r}: only pytest.mark.skip(reason="...")'
            )


@pytest.mark.parametrize("path", MARKED_OR_NOT, ids=chapter_id)
def test_every_output_shown_is_checked_or_says_why_not(path: Path) -> None:
    """Each ```text and ```json block: an expected output, a minictr:stdout or minictr:stderr
    sample after a command that runs, or minictr:unchecked with its reason."""
    run = [b for b in commands(path) if not is_skipped(b)]
    for sample in shown_blocks(path):
        where = f"{chapter_id(path)}.md line {sample.lineno}"
        marker = sample.marker
        if EXPECTED_MARK.fullmatch(marker) or UNCHECKED_MARK.fullmatch(marker):
            continue
        assert sample.checked, (
            f"{where}: say what this output is checked against: {marker or 'no marker'} is "
            "none of <!--pytest-codeblocks:expected-output-->, <!--minictr:stdout-->, "
            "<!--minictr:stderr--> (with options), <!--minictr:unchecked: REASON-->"
        )
        assert sample.options <= SAMPLE_OPTIONS, f"{where}: unknown options in {marker}"
        assert len(sample.options & {"cgroup-v1", "cgroup-v2"}) < 2, where
        before = [b for b in commands(path) if b.lineno < sample.lineno]
        assert before and before[-1] in run, (
            f"{where}: a {sample.checked[1]} sample must follow a command block that runs "
            "(this one follows none, or a skipped one: mark it unchecked, with why)"
        )


def test_languages_have_the_same_chapters() -> None:
    en = [p.name for p in chapters("en")]
    ja = [p.name for p in chapters("ja")]
    assert en, "no chapters found in tutorial/en"
    assert en == ja


@pytest.mark.parametrize("path", chapters("en"), ids=chapter_id)
def test_languages_have_the_same_commands(path: Path) -> None:
    """Only the prose is translated: commands, skips and expected outputs are identical."""
    ja = TUTORIAL / "ja" / path.name
    if not ja.exists():
        pytest.fail(f"missing translation: {ja.relative_to(TUTORIAL)}")

    def key(p: Path) -> list[tuple[object, ...]]:
        return [(b.code, b.marks, b.expected_output) for b in commands(p)]

    en_blocks, ja_blocks = key(path), key(ja)
    for n, (e, j) in enumerate(zip(en_blocks, ja_blocks, strict=False), start=1):
        assert e == j, f"command block {n} differs between en and ja:\n{e}\n{j}"
    assert len(en_blocks) == len(ja_blocks), "en and ja have a different number of command blocks"

    def checked(p: Path) -> list[tuple[str, str]]:
        return [(s.marker, s.text) for s in shown_blocks(p) if s.checked]

    en_samples, ja_samples = checked(path), checked(ja)
    for n, (e, j) in enumerate(zip(en_samples, ja_samples, strict=False), start=1):
        assert e == j, f"checked sample {n} differs between en and ja:\n{e}\n{j}"
    assert len(en_samples) == len(ja_samples), "en and ja have a different number of samples"


def test_index_lists_every_chapter() -> None:
    index = (TUTORIAL / "README.md").read_text(encoding="utf-8")
    missing = [f"{p.parent.name}/{p.name}" for p in ALL_CHAPTERS
               if f"{p.parent.name}/{p.name}" not in index]
    assert not missing, f"tutorial/README.md does not link: {missing}"


@pytest.mark.parametrize("path", ALL_CHAPTERS, ids=chapter_id)
def test_named_functions_exist(path: Path) -> None:
    """A chapter names the function that does its step (`minictr.run.overlay.mount_overlay`)."""
    for name in sorted(set(NAMED_FUNCTION.findall(path.read_text(encoding="utf-8")))):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"{chapter_id(path)}.md names {name}: no {attr}"
                obj = getattr(obj, attr)
            break
        else:
            pytest.fail(f"{chapter_id(path)}.md names {name}, which cannot be imported")
