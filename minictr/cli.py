"""The command line: parse the words into a spec, call the library, print, choose the exit code.

Nothing here calls the kernel; the step modules do. Every error is one line on stderr and
exit 125 (Docker's "the runtime failed"), or the command's own code from `run`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from minictr.errors import EXIT_RUNTIME_ERROR, StepError
from minictr.explain import explain_to

if TYPE_CHECKING:  # for annotations only: `run` imports these when it runs
    Verbs = argparse._SubParsersAction[argparse.ArgumentParser]
    from minictr.run.container import Outcome
    from minictr.spec import Image, RunSpec

HOSTNAME_PATTERN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})")
ENV_KEY_PATTERN = re.compile(r"[^=\0]+")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and 125, as Docker does for bad flags (argparse would exit 2)."""
        print(f"minictr: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_RUNTIME_ERROR)


def build_parser(only: str | None = None) -> Parser:
    """The parser of every command; with ``only``, of that one alone. Building all of them,
    with their options and sub-commands, would cost `minictr run` about 8 ms (bench/)."""
    parser = Parser(prog="minictr", description="A small, real, readable container runtime "
                    "for learning how containers and OverlayFS copy-on-write work.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND",
                                  parser_class=Parser)
    for verb, add in ADD_VERB.items():
        if only in (None, verb):
            add(verbs)
    return parser


def _add_run(verbs: Verbs) -> None:
    run = verbs.add_parser("run", help="run a command in a new container")
    run.add_argument("--name", help="the container's name (default: IMAGE-xxxxxx)")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    run.add_argument("--hostname", help="the hostname inside (default: the container's name)")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                     help="set an environment variable (KEY alone: take it from the host)")
    run.add_argument("-i", "--interactive", action="store_true",
                     help="keep stdin attached when it is not a terminal (a terminal always is)")
    run.add_argument("-m", "--memory", metavar="SIZE",
                     help="memory limit: a number and a unit b, k, m or g (64m); no swap beyond")
    run.add_argument("--pids-limit", metavar="N",
                     help="at most N processes and threads, minictr's shim included (-1: none)")
    run.add_argument("--cpus", metavar="N", help="CPU time limit, in CPUs (0.5: half of one)")
    run.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                     help="keep a capability beyond Docker's default 14 (NET_ADMIN, or ALL)")
    run.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                     help="drop one of the 14 as well (CHOWN, or ALL)")
    run.add_argument("--privileged", action="store_true",
                     help="all capabilities, nothing masked or read-only (still no_new_privs "
                     "and only the safe devices)")
    run.add_argument("--userns", metavar="HOSTID[:COUNT]",
                     help="root inside is this host uid: a range as in /etc/subuid "
                     "(100000:65536), or one id")
    run.add_argument("--network", default="none", metavar="none|bridge|host",
                     help="none (default): only lo; bridge: an address on minictr0, NAT out, "
                     "-p in; host: the host's network, no isolation")
    run.add_argument("-p", "--publish", action="append", default=[],
                     metavar="HOSTPORT:CONTAINERPORT[/udp]",
                     help="with --network bridge: the host's port leads to the container's "
                     "(127.0.0.1:HOSTPORT too)")
    run.add_argument("-v", "--volume", action="append", default=[],
                     metavar="HOSTPATH:CPATH[:ro]",
                     help="bind a host path (which must exist) into the container; its writes "
                     "go to the host, not the upper")
    run.add_argument("--tmpfs", action="append", default=[], metavar="CPATH",
                     help="mount a fresh tmpfs there (nosuid,nodev,noexec,mode=1777)")
    run.add_argument("--read-only", action="store_true",
                     help="mount the root read-only (--tmpfs paths and volumes stay writable)")
    run.add_argument("-w", "--workdir", metavar="DIR",
                     help="the command's working directory (made if missing)")
    run.add_argument("-u", "--user", metavar="UID[:GID]",
                     help="run as this user: numeric, or a name from the image's /etc/passwd")
    run.add_argument("--entrypoint", metavar="CMD",
                     help="replace the image's entrypoint ('' clears it) and its default CMD")
    run.add_argument("--init", action="store_true",
                     help="run tini as PID 1: it passes signals on and reaps zombies")
    run.add_argument("--explain", action="store_true",
                     help="print every step with the shell command that does the same")
    run.add_argument("--step", action="store_true",
                     help="as --explain, and wait for Enter before each step")
    run.add_argument("image", metavar="IMAGE",
                     help="a local image (busybox), or a registry's, by a reference with a tag "
                     "or registry (alpine:3.20): pulled on first use")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD [ARG...]")


def _add_pull(verbs: Verbs) -> None:
    pull = verbs.add_parser("pull", help="download an image from a registry (Docker Hub, or any "
                            "OCI registry)")
    pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                      help="which image of a multi-platform index (default: this machine's)")
    pull.add_argument("--explain", action="store_true",
                      help="print each step, and each request as the curl line that makes it")
    pull.add_argument("reference", metavar="REF",
                      help="alpine, alpine:3.20, localhost:5000/team/app:1, NAME@sha256:...")


def _add_push(verbs: Verbs) -> None:
    push = verbs.add_parser("push", help="upload a local image to a registry")
    push.add_argument("--explain", action="store_true",
                      help="print each step, and each request as the curl line that makes it")
    push.add_argument("name", metavar="NAME", help="the image, as `minictr images` lists it")
    push.add_argument("reference", metavar="REF", help="where: localhost:5000/team/app:1")


def _add_login(verbs: Verbs) -> None:
    login = verbs.add_parser("login", help="log in to a registry (kept in ~/.docker/config.json, "
                             "as docker login keeps it)")
    login.add_argument("-u", "--username", help="the user (default: asked on the terminal)")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from stdin (default: asked on the terminal)")
    login.add_argument("--explain", action="store_true", help="print each request as curl")
    login.add_argument("registry", metavar="REGISTRY", nargs="?", default="docker.io")


def _add_logout(verbs: Verbs) -> None:
    logout = verbs.add_parser("logout", help="forget the credentials of a registry")
    logout.add_argument("registry", metavar="REGISTRY", nargs="?", default="docker.io")


def _add_exec(verbs: Verbs) -> None:
    ex = verbs.add_parser("exec", help="run a command in a running container (as docker exec)")
    ex.add_argument("-i", "--interactive", action="store_true",
                    help="pass stdin to the command (default: /dev/null)")
    ex.add_argument("-t", "--tty", action="store_true",
                    help="give the command a pseudo-terminal of the container's devpts")
    ex.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set an environment variable, over the container's")
    ex.add_argument("-w", "--workdir", metavar="DIR",
                    help="the working directory, absolute (default: the image's)")
    ex.add_argument("-u", "--user", metavar="UID[:GID]",
                    help="a uid, or a name of the container's /etc/passwd (default: root)")
    ex.add_argument("--explain", action="store_true",
                    help="print each setns(2) step, and the nsenter(1) line that does the same")
    ex.add_argument("--step", action="store_true",
                    help="as --explain, and wait for Enter before each step")
    ex.add_argument("container", metavar="NAME")
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD [ARG...]")


def _add_ps(verbs: Verbs) -> None:
    ps = verbs.add_parser("ps", help="list running containers")
    ps.add_argument("-a", "--all", action="store_true", help="list stopped containers too")


def _add_diff(verbs: Verbs) -> None:
    diff = verbs.add_parser("diff", help="what a container changed, as `docker diff` prints it")
    diff.add_argument("container", metavar="NAME")


def _add_inspect(verbs: Verbs) -> None:
    inspect = verbs.add_parser("inspect", help="a container's state and directories, as JSON")
    inspect.add_argument("containers", nargs="+", metavar="NAME")


def _add_stats(verbs: Verbs) -> None:
    stats = verbs.add_parser("stats", help="memory, pids and CPU time of containers: live while "
                             "they run, the final numbers after")
    stats.add_argument("containers", nargs="+", metavar="NAME")


def _add_rm(verbs: Verbs) -> None:
    rm = verbs.add_parser("rm", help="remove stopped containers")
    rm.add_argument("containers", nargs="+", metavar="NAME")


def _add_prune(verbs: Verbs) -> None:
    verbs.add_parser("prune", help="remove all stopped containers and what crashed runs left")


def _add_network(verbs: Verbs) -> None:
    net = verbs.add_parser("network", help="the bridge minictr0: list, prune")
    net_verbs = net.add_subparsers(dest="network_verb", required=True, metavar="COMMAND",
                                   parser_class=Parser)
    net_verbs.add_parser("ls", help="the bridge, its subnet and NAT, the addresses in use")
    net_verbs.add_parser("prune", help="remove the bridge and its nft rules if no container "
                         "uses them (and what dead containers left)")


def _add_layers(verbs: Verbs) -> None:
    layers = verbs.add_parser("layers", help="the merged tree, each entry with the layer it "
                              "comes from")
    layers.add_argument("container", metavar="NAME")
    layers.add_argument("--path", default="/", help="only this subtree (default: /)")


def _add_demo(verbs: Verbs) -> None:
    demo = verbs.add_parser("demo", help="live demonstrations for teaching")
    demo_verbs = demo.add_subparsers(dest="demo_verb", required=True, metavar="DEMO",
                                     parser_class=Parser)
    overlay = demo_verbs.add_parser("overlay", help="the OverlayFS experiment, step by step")
    overlay.add_argument("--dir", help="where to make lower/upper/work/merged "
                         "(default: a new directory under the current one)")
    overlay.add_argument("--pause", action="store_true", help="wait for Enter between steps")
    overlay.add_argument("--cleanup", action="store_true", help="remove the directory at the end")
    overlay.add_argument("--part", type=int, choices=(1, 2), default=2,
                         help="stop after this part (1: the article's experiment, and the "
                         "directory as it leaves it; default: both)")


def _add_images(verbs: Verbs) -> None:
    verbs.add_parser("images", help="list images: layers, size, bytes shared with others")


def _add_rmi(verbs: Verbs) -> None:
    rmi = verbs.add_parser("rmi", help="remove images (refused while something uses them)")
    rmi.add_argument("images", nargs="+", metavar="NAME")


def _add_commit(verbs: Verbs) -> None:
    commit = verbs.add_parser("commit", help="a new image: the container's image plus its upper")
    commit.add_argument("-p", "--pause", type=true_or_false, nargs="?", const=True,
                        default=True, metavar="true|false",
                        help="freeze a running container while its upper is read "
                        "(default true, as docker commit; --pause=false does not)")
    commit.add_argument("--explain", action="store_true",
                        help="print each step, and its shell equivalent, to stderr")
    commit.add_argument("container", metavar="CONTAINER")
    commit.add_argument("name", metavar="NAME")


def true_or_false(text: str) -> bool:
    """A Docker-style boolean flag's value: --pause=false."""
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _add_df(verbs: Verbs) -> None:
    verbs.add_parser("df", help="disk use: each layer once, each container's upper, sharing")


def _add_image(verbs: Verbs) -> None:
    image = verbs.add_parser("image", help="manage images")
    image_verbs = image.add_subparsers(dest="image_verb", required=True, metavar="COMMAND",
                                       parser_class=Parser)
    build = image_verbs.add_parser("build", help="build an image from its recipe in images/")
    build.add_argument("name", metavar="NAME", choices=["busybox", "debian"])
    imp = image_verbs.add_parser("import", help="import a rootfs tarball, an OCI image layout "
                                 "(directory or tar) or a `docker save` archive")
    imp.add_argument("path", metavar="PATH", type=Path)
    imp.add_argument("name", metavar="NAME")
    export = image_verbs.add_parser("export", help="write an image as an OCI image layout tar")
    export.add_argument("name", metavar="NAME")
    export.add_argument("file", metavar="FILE", type=Path)
    inspect_image = image_verbs.add_parser("inspect", help="an image's layers and config, as JSON")
    inspect_image.add_argument("name", metavar="NAME")


ADD_VERB: dict[str, Callable[[Verbs], None]] = {
    "run": _add_run,
    "ps": _add_ps,
    "diff": _add_diff,
    "inspect": _add_inspect,
    "stats": _add_stats,
    "rm": _add_rm,
    "prune": _add_prune,
    "network": _add_network,
    "layers": _add_layers,
    "demo": _add_demo,
    "images": _add_images,
    "rmi": _add_rmi,
    "commit": _add_commit,
    "df": _add_df,
    "image": _add_image,
    "pull": _add_pull,
    "push": _add_push,
    "login": _add_login,
    "logout": _add_logout,
    "exec": _add_exec,
}


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C does, so every undo runs:
    # no mount or directory is left. `run` passes them to the container while it runs.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda n, _: sys.exit(128 + n))
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = argv[0] if argv and argv[0] in ADD_VERB else None  # else: all, for --help or a typo
    args = build_parser(verb).parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except BrokenPipeError:  # `minictr images | head -1`: the reader has gone; as `ls` would
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit either
        return 128 + signal.SIGPIPE
    except StepError as e:
        print(e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("minictr: interrupted", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    """The `minictr` command (pyproject's console script): main(), then a quick exit.

    A normal exit tears the interpreter down one module and object at a time, about 20 ms
    on the bench's machine, for memory the kernel frees at once anyway. So once stdout and
    stderr are flushed, os._exit(2) ends the process. Every undo has run by then: main()
    returns only after its ExitStack has closed. Tests call main(), which returns.
    """
    try:
        code = main()
    except SystemExit as e:
        if not (e.code is None or isinstance(e.code, int)):
            raise  # a message to print: Python's own exit does that
        code = e.code or 0
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed file
            stream.flush()
    os._exit(code)


def cmd_run(args: argparse.Namespace) -> int:
    from minictr.run import cgroups, container, network, pid1, security, user, userns, volumes
    from minictr.spec import RunSpec
    from minictr.store import check_name

    if args.name is not None:
        check_name(args.name, "container name")
    pulled = any(c in args.image for c in ":/@")  # a reference: minictr.images.reference
    if pulled:
        from minictr.images import reference

        try:
            reference.parse(args.image)  # refused now, before anything is pulled
        except StepError as e:
            raise StepError(e.step, f"invalid image name {args.image[:200]!r}: with ':', '/' "
                            f"or '@' it is a reference, and {e.message.split(': ', 1)[-1]}",
                            hint=e.hint) from None
    else:
        check_name(args.image, "image name")
    if args.hostname is not None and not HOSTNAME_PATTERN.fullmatch(args.hostname):
        raise StepError("check input", f"invalid hostname {args.hostname!r}",
                        hint="use letters, digits, '-' and '.', at most 64 characters")
    limits = cgroups.parse_limits(args.memory, args.pids_limit, args.cpus)
    cap_add = security.parse_capabilities(args.cap_add)
    cap_drop = security.parse_capabilities(args.cap_drop)
    idmap = None if args.userns is None else userns.parse(args.userns)
    if idmap is not None:
        userns.check_free(idmap)
    mode = network.parse_mode(args.network)
    ports = network.parse_ports(args.publish, mode)
    binds = tuple(volumes.parse_volume(v) for v in args.volume)  # ch.13: -v, --tmpfs, ...
    tmpfs = tuple(volumes.parse_tmpfs(t) for t in args.tmpfs)
    volumes.check_distinct(binds, tmpfs)
    if args.workdir is not None and not (args.workdir.startswith("/")
                                         and args.workdir.isprintable()):
        raise StepError("check input", f"-w {args.workdir[:200]!r}: not an absolute path",
                        hint="give the working directory as the container sees it: -w /app")
    workdir = None if args.workdir is None else os.path.normpath(args.workdir)
    who = None if args.user is None else user.parse(args.user)
    if args.init:
        pid1.check_installed()
    if args.explain or args.step:
        explain_to(sys.stderr, pause=args.step)
    image = args.image
    if pulled:  # as `docker run`: pulled on first use; the output is the container's
        from minictr.images import pull
        from minictr.store import Store

        image = pull.pull_if_missing(Store.open(), args.image, out=sys.stderr)
    # As `docker run -it` when stdin and stdout are terminals; otherwise as `docker run`
    # (stdin is /dev/null: nothing ever waits for input), or `docker run -i` with -i.
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    spec = RunSpec(image=image, command=tuple(args.command), name=args.name,
                   hostname=args.hostname, env=tuple(parse_env(args.env)), remove=args.rm,
                   interactive=args.interactive or tty, tty=tty, limits=limits,
                   cap_add=cap_add, cap_drop=cap_drop, privileged=args.privileged,
                   userns=idmap, network=mode, ports=ports, volumes=binds, tmpfs=tmpfs,
                   read_only=args.read_only, workdir=workdir, user=who, init=args.init,
                   entrypoint=None if args.entrypoint is None else
                   (args.entrypoint,) if args.entrypoint else ())  # one word, as Docker's
    outcome = container.run(spec)
    try:
        print_report(outcome, spec)
    except BrokenPipeError:  # `... 2>&1 | head`: the report is lost, the exit code is not
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit either
    return outcome.exit_code


def print_report(outcome: Outcome, spec: RunSpec) -> None:
    """After the run: the title line, the change report's tree, limits, security (stderr)."""
    from minictr.run import cgroups
    from minictr.show import report

    sys.stdout.flush()
    where = "removed with --rm" if spec.remove else str(outcome.dirs.upper)
    why = "".join(f", {reason}" for reason in
                  cgroups.why_it_ended(outcome.limits, outcome.stats, outcome.exit_code))
    print(f"minictr: {outcome.dirs.name} exited with code {outcome.exit_code}{why}; what it "
          f"changed, in its upper layer ({where}):", file=sys.stderr)
    print(report.render_tree(outcome.changes, upper_bytes=outcome.upper_bytes,
                             image_bytes=outcome.image.size, image=outcome.image.name,
                             color=report.use_color(sys.stderr)), end="", file=sys.stderr)
    if used := cgroups.describe(outcome.limits, outcome.stats, outcome.wall):
        print(f"limits: {used}", file=sys.stderr)
    if mounts := report.volumes_line(spec.volumes, spec.tmpfs, read_only=spec.read_only):
        print(mounts, file=sys.stderr)
    if outcome.security is not None:  # its later lines indented under its first
        print("security: " + outcome.security.summary().replace("\n", "\n          "),
              file=sys.stderr)


def parse_env(items: Sequence[str]) -> list[str]:
    """-e KEY=VALUE as given; -e KEY takes KEY's value from the host, or is dropped (Docker)."""
    env = []
    for item in items:
        key, sep, _ = item.partition("=")
        if not ENV_KEY_PATTERN.fullmatch(key) or "\0" in item:
            raise StepError("check input", f"invalid environment variable {item!r}",
                            hint="use -e KEY=VALUE")
        if "\n" in item or "\r" in item:  # `env`, --explain and inspect show one per line
            raise StepError("check input", f"a line break in the environment variable {item!r}",
                            hint="give each variable its own -e KEY=VALUE")
        if sep:
            env.append(item)
        elif key in os.environ:
            env.append(f"{key}={os.environ[key]}")
    return env


def cmd_exec(args: argparse.Namespace) -> int:
    """As docker exec: bad input and a container that is not running are one line and 125,
    before anything is joined; else the command's exit code."""
    from minictr.lifecycle import exec as execution
    from minictr.store import Store, read_state, status

    if not args.command:
        raise StepError("check input", "exec needs a command",
                        hint="minictr exec [OPTIONS] NAME CMD [ARG...]")
    if args.workdir is not None and not args.workdir.startswith("/"):
        raise StepError("check input", f"-w {args.workdir[:80]!r} is not an absolute path",
                        hint="a path inside the container, from its /: -w /tmp")
    env = parse_env(args.env)
    execution.parse_user(args.user)
    if args.explain or args.step:
        explain_to(sys.stderr, pause=args.step)
    store = Store.open()
    dirs = store.find(args.container)
    state = read_state(dirs)
    if (now := status(dirs, state)) != "running":
        raise execution.not_running(dirs, describe_status(now, state))
    request = execution.Request(tuple(args.command), tuple(env), args.workdir, args.user,
                                args.interactive, args.tty)
    return execution.exec_in(dirs, state, request)


def cmd_ps(args: argparse.Namespace) -> int:
    from minictr.store import Store, read_state, status

    store = Store.open()
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    containers = [(dirs, read_state(dirs)) for dirs in store.all_containers()]
    containers.sort(key=lambda c: -float(c[1].get("created") or 0))  # newest first, as Docker
    for dirs, state in containers:
        now = status(dirs, state)
        if now != "running" and not args.all:
            continue
        command = " ".join(state.get("command", []))
        rows.append((dirs.id[:12], state.get("image", ""),
                     f'"{command[:20]}…"' if len(command) > 20 else f'"{command}"',
                     ago(state.get("created")), describe_status(now, state), dirs.name))
    table(rows)
    return 0


def describe_status(now: str, state: dict) -> str:
    if now == "running":
        return f"Up {ago(state.get('started'), suffix='')}"
    if now == "exited":
        return f"Exited ({state.get('exit_code')}) {ago(state.get('finished'))}"
    return now.capitalize()


def ago(then: float | None, suffix: str = " ago") -> str:
    if not then:
        return "-"
    seconds = max(0, int(time.time() - then))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''}{suffix}"
    return f"{seconds} second{'s' if seconds != 1 else ''}{suffix}"


def cmd_diff(args: argparse.Namespace) -> int:
    from minictr.show import diff, report
    from minictr.store import Store, read_state

    store = Store.open()
    dirs = store.find(args.container)
    lowers = [Path(p) for p in read_state(dirs).get("lower", [])]
    print(report.render_docker(diff.scan(dirs.upper, lowers)), end="")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from minictr.run import cgroups
    from minictr.store import Store, read_state, status

    store = Store.open()
    found = [store.find(name) for name in args.containers]  # all or nothing
    out = []
    for dirs in found:
        state = read_state(dirs)
        state["status"] = status(dirs, state)
        if state["status"] == "running" and (live := cgroups.live_stats(dirs.id)):
            state["stats"] = live.as_dict()  # now; after the exit, the final numbers
        out.append(state)
    print(json.dumps(out, indent=2))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """One line per container, as `docker stats --no-stream`: its cgroup's numbers now if it
    runs, else the last ones, read as it exited."""
    from minictr.run import cgroups
    from minictr.store import Store, read_state, status

    store = Store.open()
    found = [store.find(name) for name in args.containers]  # all or nothing
    rows = [("NAME", "STATUS", "MEMORY / LIMIT", "PEAK", "PIDS / LIMIT", "CPU TIME",
             "OOM KILLS", "FORKS REFUSED")]
    for dirs in found:
        state = read_state(dirs)
        now = status(dirs, state)
        limits = state.get("limits") or {}
        live = cgroups.live_stats(dirs.id) if now == "running" else None
        s = live or cgroups.Stats.from_dict(state.get("stats") or {})
        rows.append((dirs.name, now,
                     used_of(live and live.memory, limits.get("memory"), cgroups.size),
                     "-" if s.memory_peak is None else cgroups.size(s.memory_peak),
                     used_of(live and live.pids, limits.get("pids"), str),
                     "-" if s.cpu_ns is None else f"{s.cpu_ns / 1e9:.2f} s",
                     "-" if s.oom_kills is None else str(s.oom_kills),
                     "-" if s.forks_refused is None else str(s.forks_refused)))
    table(rows, right=(3, 5, 6, 7))
    return 0


def used_of(used: int | None, limit: int | None, show: Callable[[int], str]) -> str:
    """``12.0 MiB / 64 MiB``: ``-`` when not running, ``unlimited`` without a limit."""
    return (f"{'-' if used is None else show(used)} / "
            f"{'unlimited' if limit is None else show(limit)}")


def cmd_rm(args: argparse.Namespace) -> int:
    from minictr.run import cgroups
    from minictr.store import Store, read_state, status

    store = Store.open()
    found = [store.find(name) for name in args.containers]  # all or nothing
    for dirs in found:
        if status(dirs, read_state(dirs)) == "running":
            raise StepError("remove container", f"{dirs.name} is running",
                            hint="wait for it to exit, or stop its command")
    for dirs in found:
        cgroups.remove_leftover(dirs.id)  # a runtime killed before its undo left it
        store.remove_container(dirs)
        print(dirs.name or dirs.id[:12])
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from minictr.lifecycle import prune
    from minictr.store import Store

    removed = prune.prune(Store.open())
    if removed:
        print("Deleted:")
        for line in removed:
            print(line)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from minictr.show import layers, report
    from minictr.store import Store, read_state

    dirs = Store.open().find(args.container)
    lowers = [Path(p) for p in read_state(dirs).get("lower", [])]
    print(layers.render(dirs.upper, lowers, args.path, color=report.use_color(sys.stdout)),
          end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from minictr.show import demo
    from minictr.store import require_root

    require_root()
    demo.overlay_demo(Path(args.dir) if args.dir else None, pause=args.pause,
                      cleanup=args.cleanup, parts=args.part)
    return 0


def table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """Print rows in aligned columns, three spaces apart (columns in ``right`` align right)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("   ".join(cells).rstrip())


def cmd_images(args: argparse.Namespace) -> int:
    from minictr.images import catalog
    from minictr.show.report import human_size
    from minictr.store import Store

    store = Store.open()
    all_images, damaged = catalog.scan_images(store)
    rows = [("NAME", "LAYERS", "SIZE", "SHARED", "CREATED")]
    for image in all_images:
        others = {d for i in all_images if i.name != image.name for d in i.digests}
        shared = sum(catalog.layer_size(store, d) for d in image.digests if d in others)
        rows.append((image.name, str(len(image.digests)), human_size(image.size),
                     human_size(shared), ago(image.created)))
    table(rows, right=(1, 2, 3))
    for name in damaged:
        print(f"minictr: images/{name}.json is damaged: not listed; remove it: minictr rmi "
              f"{name}", file=sys.stderr)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from minictr.images import archive, catalog, recipes
    from minictr.show.report import human_size
    from minictr.store import Store

    store = Store.open()
    if getattr(args, "name", None) and args.image_verb in ("export", "inspect"):
        args.name = image_name(args.name)
    if args.image_verb == "build":
        image = recipes.build(store, args.name)
    elif args.image_verb == "import":
        image = archive.import_image(store, args.path, args.name)
    elif args.image_verb == "export":
        archive.export_image(store, args.name, args.file)
        print(f"exported {args.name} to {args.file} (an OCI image layout: "
              f"skopeo copy oci-archive:{args.file}:{args.name} ...)")
        return 0
    else:
        image = catalog.get_existing(store, args.name)
        print(json.dumps([image_record(image)], indent=2))  # a list, as `docker image inspect`
        return 0
    layers = len(image.digests)
    print(f"{image.name}: {layers} layer{'s' if layers != 1 else ''}, {human_size(image.size)}")
    return 0


def image_record(image: Image) -> dict[str, object]:
    record: dict[str, object] = {**image._asdict(), "config": image.config._asdict()}
    record["layers"] = [{"digest": d, "path": str(p)}
                        for d, p in zip(image.digests, image.layers, strict=True)]
    del record["digests"]
    return record


def cmd_rmi(args: argparse.Namespace) -> int:
    from minictr.images import catalog
    from minictr.store import Store

    store = Store.open()
    args.images = [image_name(name) for name in args.images]
    for name in args.images:
        catalog.check_exists(store, name)  # all known, or nothing is removed
    for name in args.images:
        with catalog.changing(store):
            removed = catalog.remove(store, name)
        print(f"Untagged: {name}")
        for digest in removed:
            print(f"Deleted: {digest}")
    return 0


def image_name(text: str) -> str:
    """An image as the store names it: a local name as given, a reference in its short form
    (docker.io/library/alpine:3.20 is alpine:3.20)."""
    if not any(c in text for c in ":/@"):
        return text
    from minictr.images import reference

    return reference.parse(text).familiar


def cmd_pull(args: argparse.Namespace) -> int:
    from minictr.images import pull
    from minictr.store import Store

    if args.explain:
        explain_to(sys.stderr)
    if args.platform:
        pull.parse_platform(args.platform)  # refused before anything is asked
    pull.pull(Store.open(), args.reference, platform=args.platform)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from minictr.images import push, reference
    from minictr.store import Store

    if args.explain:
        explain_to(sys.stderr)
    reference.parse(args.reference)  # refused before anything is read
    push.push(Store.open(), image_name(args.name), args.reference)
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    """As `docker login`: the user and password are checked by the registry, then kept."""
    from minictr.images import auth, registry

    if args.explain:
        explain_to(sys.stderr)
    where = registry_name(args.registry)
    user = args.username
    if not user:
        if not sys.stdin.isatty() or args.password_stdin:
            raise StepError("log in", "no user name", hint=f"minictr login -u USER {where}")
        user = input("Username: ").strip()
    if args.password_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
    else:
        raise StepError("log in", "no password: stdin is not a terminal",
                        hint=f"echo PASSWORD | minictr login -u {user} --password-stdin {where}")
    if not user or ":" in user or not password or "\n" in password:
        raise StepError("log in", "a user name (without ':') and a password of one line are "
                        "needed", hint=f"minictr login -u USER --password-stdin {where}")
    creds = auth.Credentials(user, password)
    registry.check_login(where, creds)
    path = auth.save(where, creds)
    print(f"minictr: the password is kept unencrypted in {path} (mode 0600), as docker login "
          "keeps it without a credential helper", file=sys.stderr)
    print("Login Succeeded")
    return 0


def registry_name(text: str) -> str:
    """A registry as login names it: localhost:5000, https://ghcr.io/, docker.io."""
    from minictr.images import reference

    host = text.split("://", 1)[-1].split("/", 1)[0]
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = reference.DOCKER_HUB
    if not host or not reference.REGISTRY.fullmatch(host):
        raise StepError("check input", f"invalid registry {text[:100]!r}",
                        hint="a host and maybe a port: localhost:5000, ghcr.io, docker.io")
    return host


def cmd_logout(args: argparse.Namespace) -> int:
    from minictr.images import auth

    where = registry_name(args.registry)
    if auth.remove(where):
        print(f"Removing login credentials for {where}")
    else:
        print(f"Not logged in to {where}")
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    from minictr.images import archive
    from minictr.store import Store

    if args.explain:
        explain_to(sys.stderr)
    image = archive.commit(Store.open(), args.container, args.name, pause=args.pause)
    print(f"{image.name}: {len(image.digests)} layers, the top one {image.digests[-1]}")
    return 0


def cmd_df(args: argparse.Namespace) -> int:
    from minictr.images import catalog
    from minictr.show.report import human_size
    from minictr.store import Store

    usage = catalog.disk_usage(Store.open())
    rows = [("LAYER", "SIZE", "USED BY")]
    for digest, size, users in usage.layers:
        rows.append((digest.removeprefix("sha256:")[:12], human_size(size), ", ".join(users)))
    table(rows, right=(1,))
    print()
    rows = [("CONTAINER", "IMAGE", "UPPER")]
    for name, image, upper in usage.containers:
        rows.append((name, image, human_size(upper)))
    table(rows, right=(2,))
    print()
    print(f"on disk: {human_size(usage.on_disk)} (layers once, plus uppers) · as full copies it "
          f"would be {human_size(usage.without_sharing)} · sharing saves "
          f"{human_size(usage.without_sharing - usage.on_disk)}")
    return 0


def cmd_network(args: argparse.Namespace) -> int:
    from minictr.run import network
    from minictr.store import require_root

    require_root()
    if args.network_verb == "prune":
        removed, users = network.prune()
        if removed:
            print("Deleted:")
            for line in removed:
                print(line)
        if users:
            print(f"{network.BRIDGE} kept: {users} running container"
                  f"{'s use' if users > 1 else ' uses'} it")
        return 0
    info = network.describe()
    if info["bridge"] is None:
        print(f"no bridge: {network.BRIDGE} is made by the first run with --network bridge")
        return 0
    table([("BRIDGE", "SUBNET", "GATEWAY", "NAT", "IP_FORWARD"),
           (info["bridge"], info["subnet"], info["gateway"],
            info["nat"] or "none (no default route)", "on" if info["ip_forward"] else "off")])
    print()
    rows = [("ADDRESS", "CONTAINER ID", "NAME", "VETH", "PORTS")]
    for lease in info["leases"]:
        rows.append((lease.get("address", "?").split("/")[0], lease.get("container", "")[:12],
                     lease.get("name", ""), lease.get("veth", ""),
                     ", ".join(lease.get("ports", [])) or "-"))
    table(rows)
    return 0


COMMANDS = {"run": cmd_run, "ps": cmd_ps, "diff": cmd_diff, "inspect": cmd_inspect,
            "stats": cmd_stats,
            "rm": cmd_rm, "prune": cmd_prune, "images": cmd_images, "image": cmd_image,
            "layers": cmd_layers, "demo": cmd_demo, "rmi": cmd_rmi, "commit": cmd_commit,
            "df": cmd_df, "network": cmd_network, "pull": cmd_pull, "push": cmd_push,
            "login": cmd_login, "logout": cmd_logout, "exec": cmd_exec}
