"""`minictr exec`: one more process in a running container, as `docker exec` runs it.

Every container here is a foreground `minictr run -i` started by this test in the background
(tests.helpers.start), as a workshop attendee starts one in a first terminal; every exec is
another process, `python -m minictr exec`, as from a second terminal. PID 1 says "ready" when
it waits; closing its stdin ends it. Output lines are the synchronisation, never a sleep.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.lifecycle import exec as execution
from tests.helpers import read_line, refused, scaled, start

WAITING = "echo ready; read x"  # PID 1 of every container here, unless a test says otherwise

Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def container(minictr) -> Iterator[Start]:
    """``container(*run_options, script=WAITING, name="web")``: a running container, once its
    PID 1 has printed its first line ("ready"); each is stopped at the end of the test."""
    minictr("image", "build", "busybox", check=True)
    started: list[subprocess.Popen[str]] = []

    def start_container(*options: str, script: str = WAITING,
                        name: str = "web") -> subprocess.Popen[str]:
        proc = start("run", "-i", "--name", name, *options, "busybox", "sh", "-c", script)
        started.append(proc)
        assert read_line(proc) == "ready", proc.stderr
        return proc

    yield start_container
    for proc in started:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> str:
    """End PID 1's `read` (end-of-file on its stdin); the run's stderr."""
    if proc.stdin and proc.stdin.closed:
        proc.wait(timeout=scaled(30))
        return ""
    _, err = proc.communicate("", timeout=scaled(30))
    return err


def ids(minictr, *options: str) -> tuple[str, str]:
    """The real uid and gid of an exec'd process, from /proc/self/status: `id` would read
    the container's /etc/passwd, which some tests here make a fifo."""
    out = ok(minictr("exec", *options, "web", "grep", "-e", "^Uid", "-e", "^Gid",
                     "/proc/self/status"))
    uid, gid = (line.split()[1] for line in out.splitlines())
    return uid, gid


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- what the exec'd process shares with PID 1 ----------------------------------------------

@pytest.mark.root
def test_exec_sees_what_pid_1_sees(minictr, container):
    container()
    out = ok(minictr("exec", "web", "sh", "-c",
                     "hostname; tr '\\0' ' ' < /proc/1/cmdline; echo;"
                     "for ns in ipc uts net cgroup pid mnt; do"
                     "  [ $(readlink /proc/self/ns/$ns) = $(readlink /proc/1/ns/$ns) ]"
                     "  && echo $ns same; done;"
                     "cmp /proc/self/mountinfo /proc/1/mountinfo && echo mounts same;"
                     "[ $(stat -c %d:%i /) = $(stat -c %d:%i /proc/1/root/) ] && echo root same;"
                     "grep -h -e CapEff -e CapBnd -e NoNewPrivs /proc/self/status /proc/1/status"
                     " | sort | uniq -c | sed 's/^ *//'"))
    lines = out.splitlines()
    assert lines[:2] == ["web", f"sh -c {WAITING} "]
    assert lines[2:10] == [f"{ns} same" for ns in ("ipc", "uts", "net", "cgroup", "pid", "mnt")] \
        + ["mounts same", "root same"]
    assert lines[10:] == ["2 CapBnd:\t00000000a80425fb", "2 CapEff:\t00000000a80425fb",
                          "2 NoNewPrivs:\t1"]


@pytest.mark.root
def test_exec_is_in_the_container_cgroup_and_namespaces_not_the_hosts(minictr, container,
                                                                       minictr_root):
    container()
    state = json.loads((minictr_root / "names" / "web" / "state.json").read_text())
    out = ok(minictr("exec", "web", "sh", "-c",
                     "cat /proc/self/cgroup; echo --; readlink /proc/self/ns/uts; echo --;"
                     "ls /proc | grep -c '^[0-9]'; env"))
    cgroup, uts, rest = out.split("--\n")
    assert all(line.endswith(":/") for line in cgroup.splitlines())  # its cgroup is its /
    assert uts.strip() != os.readlink("/proc/self/ns/uts")
    count, *env = rest.splitlines()
    assert int(count) <= 4  # PID 1, this sh, ls and grep: no host process is in its /proc
    assert set(state["env"]) <= set(env)


@pytest.mark.root
def test_the_cgroup_holds_the_command_not_minictr(container, minictr_root):
    """From the host: while the exec runs, its process is in the container's cgroup (in each
    v1 tree), and minictr's joiner, its parent, is not (as run's shim is not)."""
    container()
    state = json.loads((minictr_root / "names" / "web" / "state.json").read_text())
    ex = start("exec", "-i", "web", "sh", "-c", "echo in; read x")
    try:
        assert read_line(ex) == "in"
        for path in state["cgroup"]["paths"]:
            procs = {int(p) for p in Path(path, "cgroup.procs").read_text().split()}
            assert len(procs) == 2 and state["pid"] in procs, path
            (command,) = procs - {state["pid"]}
            assert Path(f"/proc/{command}/comm").read_text() == "sh\n"
    finally:
        ex.communicate("", timeout=scaled(30))
    assert ex.returncode == 1  # `read` at end-of-file


@pytest.mark.root
def test_exec_into_a_foreground_container_from_a_second_process(minictr, container):
    """The workshop case: the run in one terminal, `exec` from another; the run goes on."""
    proc = container(script="echo ready; read x; echo pid1 read $x")
    assert ok(minictr("exec", "web", "sh", "-c", "echo hi from $$")).startswith("hi from ")
    assert proc.poll() is None  # the container still runs
    proc.stdin.write("bye\n")
    proc.stdin.flush()
    assert read_line(proc) == "pid1 read bye"
    err = stop(proc)
    assert proc.returncode == 0, err


@pytest.mark.root
@pytest.mark.parametrize(("command", "code"), [
    (["true"], 0), (["sh", "-c", "exit 3"], 3), (["/etc"], 126), (["nope"], 127),
    (["sh", "-c", "kill -TERM $$"], 128 + 15),
])
def test_exit_codes_as_docker_exec(minictr, container, command, code):
    container()
    r = minictr("exec", "web", *command)
    assert r.returncode == code, r.stderr
    if code in (126, 127):
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("minictr: ")
        assert ("not found" if code == 127 else "Permission denied") in r.stderr


@pytest.mark.root
def test_env_workdir_and_user(minictr, container):
    container()
    out = ok(minictr("exec", "-e", "A=1", "-e", "HOSTNAME=other", "-w", "/tmp", "-u", "nobody",
                     "web", "sh", "-c",
                     "id; pwd; echo $A $HOSTNAME; grep CapEff /proc/self/status"))
    assert out.splitlines() == ["uid=65534(nobody) gid=65534(nogroup)", "/tmp", "1 other",
                                "CapEff:\t0000000000000000"]  # as Docker's: no caps but root's
    assert ok(minictr("exec", "-u", "1234:4321", "web", "id")) == "uid=1234 gid=4321\n"
    assert ok(minictr("exec", "-u", "nobody:root", "web", "id", "-g")) == "0\n"
    assert ok(minictr("exec", "-u", "65534", "web", "id", "-g")) == "65534\n"  # passwd's gid
    refused(minictr("exec", "-u", "bob", "web", "true"), "unable to find user bob")
    refused(minictr("exec", "-u", "nobody:staff2", "web", "true"), "unable to find group")
    refused(minictr("exec", "-w", "/nowhere", "web", "true"), "/nowhere")


@pytest.mark.root
def test_stdin_only_with_i(minictr, container):
    container()
    assert minictr("exec", "-i", "web", "cat", input="hello\n").stdout == "hello\n"
    assert minictr("exec", "web", "cat", input="hello\n").stdout == ""  # /dev/null


@pytest.mark.root
def test_tty_gives_a_pty_of_the_container(minictr_root, container):
    from tests.test_terminal import Terminal

    container()
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "minictr", "exec", "-it", "web", "sh"],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    os.close(slave)
    term = Terminal(master)
    try:
        term.expect("# ")
        term.type("tty; echo $((6 * 7)) $TERM\r")
        term.expect("/dev/pts/")
        term.expect("42 ")
        term.type("exit 5\r")
        _, err = proc.communicate(timeout=scaled(30))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 5, err


@pytest.mark.root
def test_explain_shows_nsenter_and_each_setns(minictr, container):
    container()
    r = minictr("exec", "--explain", "web", "true")
    assert r.returncode == 0, r.stderr
    assert "nsenter --target" in r.stderr and "--mount --uts --ipc --net --pid --cgroup" in r.stderr
    steps = re.findall(r"=> setns: the (\w+) namespace  \[(?:joiner|exec): ", r.stderr)
    assert steps == ["ipc", "uts", "net", "cgroup", "pid", "mnt"]
    assert r.stderr.count("why: ") >= 12
    assert "=> move into the container's cgroup" in r.stderr
    assert "[exec: minictr.lifecycle.exec.exec_command]" in r.stderr


@pytest.mark.root
def test_exec_into_a_userns_container(minictr, container):
    container("--userns", "100000:65536")
    out = ok(minictr("exec", "web", "sh", "-c", "id -u; cat /proc/self/uid_map; hostname;"
                     "grep CapEff /proc/self/status; touch /tmp/x && ls -ln /tmp/x"))
    lines = out.splitlines()
    assert lines[0] == "0" and lines[1].split() == ["0", "100000", "65536"]
    assert lines[2:4] == ["web", "CapEff:\t00000000a80425fb"]
    assert lines[4].split()[2:4] == ["0", "0"]
    assert ok(minictr("exec", "-u", "1000", "web", "id", "-u")) == "1000\n"
    refused(minictr("exec", "-u", "70000", "web", "true"), "0 to 65535")


# --- bad input: one line, 125, nothing changed ----------------------------------------------


@pytest.mark.root
def test_exec_of_an_exited_or_unknown_container_is_refused(minictr, container):
    proc = container()
    stop(proc)
    refused(minictr("exec", "web", "true"), "container web is not running (Exited (1) ")
    refused(minictr("exec", "ghost", "true"), "no such container: ghost")


@pytest.mark.root
@pytest.mark.parametrize(("args", "words"), [
    (["-w", "tmp"], ["not an absolute path"]),
    (["-e", "A=1\n2"], ["line break"]),
    (["-u", "a b"], ["invalid -u"]),
    (["-u", "99999999999"], ["invalid -u"]),
])
def test_bad_options_are_refused(minictr, container, args, words):
    container()
    refused(minictr("exec", *args, "web", "true"), *words)


@pytest.mark.root
def test_a_missing_command_is_refused(minictr, container):
    container()
    refused(minictr("exec", "web"), "exec needs a command")


# --- a hostile container --------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize(("prepare", "words"), [
    ("ln -sf /etc/shadow /etc/passwd", "a symbolic link"),
    ("rm /etc/passwd && mkfifo /etc/passwd", "a fifo"),
    ("truncate -s 3G /etc/passwd", "more than 1 MiB"),
    ("mv /etc /e2 && ln -s /e2 /etc", "its /etc is not a directory"),
])
def test_a_hostile_passwd_is_not_read(minictr, container, prepare, words):
    """The container owns /etc/passwd: a link to the host's /etc/shadow (which a path through
    /proc/PID/root would follow, from the host's /), a fifo (which would block), 3 GB."""
    container(script=f"{prepare}; echo ready; read x")
    r = minictr("exec", "-u", "nobody", "web", "true", timeout=30)
    refused(r, words)
    assert "root:" not in r.stderr
    assert ids(minictr, "-u", "1:1") == ("1", "1")  # a number: no file is read


@pytest.mark.root
def test_escapes_in_passwd_are_never_printed(minictr, container):
    lines = ["\\033]0;pwned\\007:x:1:1::/:/bin/sh", "evil:x:\\033[2J:0::/:/bin/sh",
             "short:x", "ok:x:4321:4322::/:/bin/sh"]  # printf %b: \\033 is ESC
    quoted = " ".join(f"'{line}'" for line in lines)
    container(script=f"echo >> /etc/passwd; printf '%b\\n' {quoted} >> /etc/passwd; "
                     "echo ready; read x")
    r = minictr("exec", "-u", "evil", "web", "true")
    refused(r, "not a number")
    assert "\x1b" not in r.stderr
    refused(minictr("exec", "-u", "short", "web", "true"), "unable to find user short")
    assert ids(minictr, "-u", "ok") == ("4321", "4322")


@pytest.mark.root
def test_no_fd_of_the_caller_reaches_the_command(minictr_root, container):
    """An fd on the host's / left open by whoever runs minictr would be a way out."""
    container()
    fd = os.open("/", os.O_RDONLY)
    try:
        r = subprocess.run([sys.executable, "-m", "minictr", "exec", "web", "ls", "/proc/self/fd"],
                           pass_fds=(fd,), capture_output=True, text=True, timeout=scaled(30),
                           stdin=subprocess.DEVNULL)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) <= {"0", "1", "2", "3"}  # 3: ls's own directory


@pytest.mark.root
def test_the_joiner_is_hidden_from_the_container(minictr, container):
    """Until its exec, the process that joined is non-dumpable: the container's root cannot
    read its /proc/PID/fd or environ (runc's CVE-2016-9962). After the exec it is the
    command's, an ordinary process. And a setuid binary gives nothing back (no_new_privs)."""
    container(script="mkdir /tmp/s && cp /bin/busybox /tmp/s/busybox && chmod 4755 "
                     "/tmp/s/busybox; echo ready; read x")
    out = ok(minictr("exec", "-u", "1000", "web", "/tmp/s/busybox", "grep", "-e", "Uid",
                     "-e", "NoNewPrivs", "-e", "CapEff", "/proc/self/status"))
    assert out.split("\n")[:3] == ["Uid:\t1000\t1000\t1000\t1000",
                                   "CapEff:\t0000000000000000", "NoNewPrivs:\t1"]


@pytest.mark.root
def test_a_pid_1_in_a_user_namespace_of_its_own_is_not_joined(minictr, container):
    container(script="exec unshare -U sh -c 'echo ready; read x'")
    refused(minictr("exec", "web", "true"), "user namespace of its own making")


@pytest.mark.root
@pytest.mark.parametrize("pause_at", ["=> move into the container's cgroup",
                                      "=> setns: the pid namespace",
                                      "=> fork: the child is born"])
def test_the_container_stops_while_exec_joins_it(minictr_root, container, pause_at):
    """--step holds the exec at a step (its pause is the synchronisation); the container
    stops there; then the exec goes on, fails in one line, and leaves nothing."""
    proc = container()
    ex = subprocess.Popen([sys.executable, "-m", "minictr", "exec", "--step", "web", "true"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert ex.stdin and ex.stderr
    while True:  # Enter at each pause, until the one before the step
        shown = b""  # the step that this pause waits to run
        while not shown.endswith(b"press Enter to run it "):
            byte = ex.stderr.read(1)
            assert byte, shown.decode()
            shown += byte
        if pause_at.encode() in shown:
            break
        ex.stdin.write(b"\n")
        ex.stdin.flush()
    stop(proc)
    ex.stdin.close()  # end-of-file: the pauses go on without waiting
    err = ex.stderr.read().decode()
    ex.wait(timeout=scaled(30))
    assert ex.returncode == 125, err
    assert err.strip().splitlines()[-1].startswith("minictr: ")


# --- the pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0", "1000:1000", "nobody", "www-data:staff", "a$", "4294967294"])
def test_user_values(text):
    execution.parse_user(text)


@pytest.mark.parametrize("text", ["", ":", "a:", "-1", "4294967295", "a b", "x:y:z", "\x1b[2J"])
def test_bad_user_values(text):
    with pytest.raises(StepError):
        execution.parse_user(text)


def test_passwd_fields_are_checked():
    text = b"root:x:0:0::/root:/bin/sh\nbad:x:12a:0\nbig:x:99999999999:0\nx\n"
    assert execution.find_entry(text, "root", 0) == [b"root", b"x", b"0", b"0", b"",
                                                      b"/root", b"/bin/sh"]
    assert execution.find_entry(text, "0", 2)[0] == b"root"
    assert execution.find_entry(text, "x", 0) is None
    for name in ("bad", "big"):
        with pytest.raises(StepError, match="not a number"):
            execution.number_of(execution.find_entry(text, name, 0), 2, name)


def test_exec_env_is_the_containers_then_e():
    request = execution.Request(("true",), ("A=2", "B=x=y"), None, None, False, True)
    env = execution.exec_env(["PATH=/bin", "A=1"], request)
    assert env[:3] == ["PATH=/bin", "A=2", f"TERM={os.environ.get('TERM', 'xterm')}"]
    assert env[3] == "B=x=y"


def test_the_module_says_where_each_step_is_documented():
    text = Path(execution.__file__).read_text()
    for page in ("setns(2)", "nsenter(1)", "pid_namespaces(7)"):
        assert page in text
