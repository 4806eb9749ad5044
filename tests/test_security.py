"""Security (issue 7): what root in a container can no longer do, tried for real.

Every escape attempt of tests/probe.sh is run inside a real container and must fail; the
test's id names the protection that stops it. /proc/self/status shows Docker's bounding set
and NoNewPrivs. Where runc is installed, the same probe runs under runc's default spec, and
minictr must block at least all that runc blocks. --userns runs the probe too.

The pure parts (capability names, the policy's arithmetic, --userns values, the host checks)
are tested without root at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.run import security, userns
from minictr.spec import IdMap, Image, ImageConfig, RunSpec
from tests.helpers import read_line, refused, scaled, start, tree_digest

PROBE = (Path(__file__).parent / "probe.sh").read_text()
DOCKER_CAPBND = "00000000a80425fb"  # Docker's 14, as /proc/PID/status shows them

# Each escape attempt, and what stops it in a default container.
ESCAPES = [
    ("mount", "no CAP_SYS_ADMIN"),
    ("module", "no CAP_SYS_MODULE"),
    ("hostname", "UTS namespace and no CAP_SYS_ADMIN"),
    ("sysctl", "/proc/sys read-only"),
    ("kcore", "/proc/kcore masked"),
    ("timer_list", "/proc/timer_list masked"),
    ("disk", "nodev on /, /dev and /dev/shm"),
    ("host_process", "PID namespace"),
    ("root_escape", "pivot_root and the old root detached"),
    ("setuid", "no_new_privs"),
]


def _id(name: str, protection: str) -> str:
    return f"{name}-stopped-by-" + re.sub(r"[^A-Za-z0-9_-]+", "_", protection).strip("_")


@pytest.fixture
def probe_env(tmp_path: Path) -> dict[str, str]:
    """What probe.sh needs to know about the host: its disk, a path and a process of its own."""
    marker = tmp_path / "host-only"
    marker.mkdir()
    dev = os.stat("/").st_dev
    major, minor = os.major(dev), os.minor(dev)
    if major == 0:  # / on btrfs, zfs...: not a block device of its own; take the first disk
        fields = Path("/proc/partitions").read_text().splitlines()[2].split()
        major, minor = int(fields[0]), int(fields[1])
    return {"PROBE_TMP": "/tmp", "PROBE_DISK": f"{major} {minor}",
            "PROBE_HOST_PATH": str(marker), "PROBE_HOST_PID": str(os.getpid()),
            "PROBE_HOST_COMM": Path("/proc/self/comm").read_text().strip()}


def parse_probe(stdout: str) -> dict[str, tuple[str, str]]:
    results = {}
    for line in stdout.splitlines():
        name, status, detail = [*line.split("\t"), "", ""][:3]
        results[name] = (status, detail.strip())
    return results


def run_probe(minictr, env: dict[str, str], *names: str, options: tuple[str, ...] = ()
              ) -> dict[str, tuple[str, str]]:
    flags = [f for k, v in env.items() for f in ("-e", f"{k}={v}")]
    r = minictr("run", "--rm", *options, *flags, "busybox", "sh", "-c", PROBE, "probe", *names)
    assert r.returncode == 0, r.stderr
    return parse_probe(r.stdout)


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


# --- the escape attempts ---------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize(("name", "protection"),
                         [pytest.param(n, p, id=_id(n, p)) for n, p in ESCAPES])
def test_escape_attempt_fails(minictr, probe_env, name, protection):
    """Inside a default container, the attempt fails; the id says what stopped it."""
    hostname = socket.gethostname()
    status, detail = run_probe(minictr, probe_env, name)[name]
    assert socket.gethostname() == hostname  # whatever happened inside, the host's is intact
    if status == "n/a":  # only where the machine lacks the thing itself
        if name == "module":  # a kernel built without modules: the capability is gone anyway
            assert not Path("/proc/modules").exists(), detail
            r = minictr("run", "--rm", "busybox", "grep", "CapBnd", "/proc/self/status")
            assert not int(r.stdout.split()[1], 16) & (1 << 16), "cap_sys_module is kept"
            return
        if name == "kcore":  # no /proc/kcore on the host: the mask is tested on timer_list
            assert not Path("/proc/kcore").exists(), detail
            return
    assert status == "blocked", f"{name}: {status}: {detail}"


@pytest.mark.root
def test_status_shows_docker_capabilities_and_no_new_privs(minictr):
    r = minictr("run", "--rm", "busybox", "cat", "/proc/self/status")
    fields = status_fields(r.stdout)
    assert security.bounding_set_hex(security.DEFAULT_CAPABILITIES) == DOCKER_CAPBND
    assert fields["CapBnd"] == DOCKER_CAPBND
    assert fields["CapPrm"] == fields["CapEff"] == DOCKER_CAPBND
    assert fields["CapInh"] == fields["CapAmb"] == "0000000000000000"
    assert fields["NoNewPrivs"] == "1"


@pytest.mark.root
def test_report_and_inspect_say_what_was_dropped(minictr):
    r = minictr("run", "--name", "guarded", "busybox", "true")
    assert r.returncode == 0, r.stderr
    lines = security_lines(r.stderr)
    dropped = len(security.kernel_capabilities()) - 14
    assert lines[0].startswith(f"14 capabilities kept, {dropped} dropped (cap_sys_admin, ")
    assert lines[1].startswith("no_new_privs: ")
    state = json.loads(minictr("inspect", "guarded").stdout)[0]["security"]
    assert state["capabilities"]["kept"] == sorted(security.DEFAULT_CAPABILITIES,
                                                   key=security.number)
    assert "cap_sys_admin" in state["capabilities"]["dropped"]
    assert "/proc/sys" in state["read_only_paths"]
    assert state["no_new_privs"] is True and state["privileged"] is False


# "4 paths masked (7 absent on this kernel), 4 read-only (1 absent)"; no "(...)" if none is
SECURITY_PATHS = re.compile(r"^(\d+) paths? masked(?: \((\d+) absent on this "
                            r"kernel\))?, (\d+) read-only(?: \((\d+) absent\))?$")
INDENT = " " * len("security: ")


def security_lines(stderr: str) -> list[str]:
    """The report's security lines, without "security: " and the indent of the later ones.
    Each fits an 80-column projector."""
    lines = stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("security: "))
    block = [lines[first]]
    block += itertools.takewhile(lambda line: line.startswith(INDENT), lines[first + 1 :])
    assert all(len(line) <= 80 for line in block), block
    return [line[len(INDENT) :] for line in block]


@pytest.mark.root
def test_security_line_and_inspect_count_what_was_mounted(minictr):
    """Issue 11.8: the numbers are those of the container's own mount table, not of the
    list asked for; inspect names only the paths mounted over, and the absent ones apart."""
    r = minictr("run", "--name", "counted", "busybox", "cat", "/proc/1/mountinfo")
    assert r.returncode == 0, r.stderr
    points = {line.split()[4] for line in r.stdout.splitlines()}
    masked = [p for p in security.MASKED_PATHS if p in points]
    read_only = [p for p in security.READ_ONLY_PATHS if p in points]
    masked_absent = [p for p in security.MASKED_PATHS if p not in points]
    read_only_absent = [p for p in security.READ_ONLY_PATHS if p not in points]
    # The container's /proc and /sys are this kernel's: what is absent is what the host lacks
    assert masked_absent == [p for p in security.MASKED_PATHS if not os.path.lexists(p)]
    assert read_only_absent == [p for p in security.READ_ONLY_PATHS if not os.path.lexists(p)]
    line = security_lines(r.stderr)[2]
    m = SECURITY_PATHS.search(line)
    assert m, line
    assert int(m[1]) == len(masked) and int(m[2] or 0) == len(masked_absent), line
    assert int(m[3]) == len(read_only) and int(m[4] or 0) == len(read_only_absent), line
    state = json.loads(minictr("inspect", "counted").stdout)[0]["security"]
    assert state["masked_paths"] == masked
    assert state["masked_paths_absent"] == masked_absent
    assert state["read_only_paths"] == read_only
    assert state["read_only_paths_absent"] == read_only_absent
    if not os.path.lexists("/proc/kcore"):  # as on the kernel of issue 11.8
        assert "/proc/kcore" not in state["masked_paths"]
        assert "/proc/kcore" in state["masked_paths_absent"]


@pytest.mark.root
def test_masks_and_read_only_paths_are_mounts(minictr):
    """What the container sees in its mount table: each mask and read-only path a mount."""
    r = minictr("run", "--rm", "busybox", "cat", "/proc/self/mountinfo")
    options = {line.split()[4]: line.split()[5] for line in r.stdout.splitlines()}
    for path in security.MASKED_PATHS:
        assert (path in options) == os.path.lexists(path), path
    for path in security.READ_ONLY_PATHS:
        if os.path.lexists(path):
            assert options[path].startswith("ro,"), (path, options[path])
    assert options["/sys"].startswith("ro,")
    assert "nodev" in options["/"] and "nodev" in options["/dev"]


# --- --cap-add, --cap-drop, --privileged ------------------------------------------------------


@pytest.mark.root
def test_cap_add_and_cap_drop(minictr):
    r = minictr("run", "--rm", "--cap-add", "NET_ADMIN", "--cap-drop", "cap_chown", "busybox",
                "sh", "-c", "grep CapBnd /proc/self/status; ip link set lo up && echo net-ok; "
                "touch /tmp/f; chown 1 /tmp/f || echo chown-refused")
    kept = [c for c in security.DEFAULT_CAPABILITIES if c != "cap_chown"] + ["cap_net_admin"]
    assert f"CapBnd:\t{security.bounding_set_hex(kept)}" in r.stdout
    assert "net-ok" in r.stdout and "chown-refused" in r.stdout
    r = minictr("run", "--rm", "--cap-drop", "ALL", "busybox", "grep", "Cap", "/proc/self/status")
    assert all(line.endswith("0000000000000000") for line in r.stdout.splitlines()), r.stdout


@pytest.mark.root
def test_privileged_keeps_all_capabilities_and_masks_nothing(minictr, probe_env):
    r = minictr("run", "--rm", "--privileged", "busybox", "sh", "-c",
                "cat /proc/self/status; cut -d' ' -f5 /proc/self/mountinfo")
    fields = status_fields(r.stdout)
    assert fields["CapBnd"] == security.bounding_set_hex(sorted(security.own_bounding_set(),
                                                                key=security.number))
    assert fields["NoNewPrivs"] == "1"  # still
    points = r.stdout.split()
    assert not set(security.MASKED_PATHS + security.READ_ONLY_PATHS) & set(points)
    # Docker's --privileged gives every host device; minictr's does not: the disk stays shut.
    assert run_probe(minictr, probe_env, "disk", options=("--privileged",))["disk"][0] == \
        "blocked"


def test_unknown_capability_is_refused(minictr, minictr_root):
    refused(minictr("run", "--cap-add", "sys_admn", "busybox", "true"),
            "unknown capability", "sys_admn", "capabilities(7)")
    assert not (minictr_root / "containers").exists() or \
        list((minictr_root / "containers").iterdir()) == []


@pytest.mark.root
def test_cap_add_of_what_minictr_lacks_is_refused(minictr_root):
    """minictr run under a bounding set without cap_sys_time cannot grant it."""
    r = subprocess.run(["setpriv", "--bounding-set", "-sys_time", sys.executable, "-m",
                        "minictr", "run", "--rm", "--cap-add", "SYS_TIME", "busybox", "true"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=scaled(60),
                       env={**os.environ, "MINICTR_ROOT": str(minictr_root)})
    refused(r, "cap_sys_time", "cannot be granted", "capsh --print")
    assert list((minictr_root / "containers").iterdir()) == []


# --- runc, side by side ---------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_minictr_blocks_at_least_what_runc_blocks(minictr, probe_env, tmp_path):
    """The same probe under `runc spec`'s defaults (on the busybox image's layer, read-only,
    with a tmpfs at /tmp for the probe's files) and under minictr's defaults."""
    minictr("image", "build", "busybox", check=True)
    layer = Path(json.loads(minictr("image", "inspect", "busybox").stdout)[0]
                 ["layers"][0]["path"])
    before = tree_digest(layer)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["path"] = str(layer)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", PROBE, "probe"]
    config["process"]["env"] += [f"{k}={v}" for k, v in probe_env.items()]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                             "options": ["mode=1777", "size=16m"]})
    (bundle / "config.json").write_text(json.dumps(config))
    r = subprocess.run(["runc", "run", "--bundle", str(bundle), f"minictr-probe-{os.getpid()}"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=scaled(60))
    assert r.returncode == 0, r.stderr
    theirs = parse_probe(r.stdout)
    ours = run_probe(minictr, probe_env)
    table = "\n".join(f"{name:13} runc: {theirs[name][0]:8} minictr: {ours[name][0]:8} "
                      f"{ours[name][1]}" for name in theirs)
    print(table)
    assert set(theirs) == set(ours) == {name for name, _ in ESCAPES}, table
    for name, (status, _) in theirs.items():
        if status == "blocked":
            assert ours[name][0] == "blocked", table
    assert "ALLOWED" not in {status for status, _ in ours.values()}, table
    assert tree_digest(layer) == before  # runc mounted the layer read-only


# --- --userns -------------------------------------------------------------------------------


@pytest.mark.root
def test_userns_root_is_an_unprivileged_host_uid(minictr_root):
    proc = start("run", "--name", "mapped", "-i", "--userns", "100000:65536", "busybox", "sh",
                 "-c", "id -u; cat /proc/self/uid_map; echo ready; read line")
    assert read_line(proc) == "0"
    assert read_line(proc).split() == ["0", "100000", "65536"]
    assert read_line(proc) == "ready"
    pid = json.loads((minictr_root / "names" / "mapped" / "state.json").read_text())["pid"]
    uids = status_fields(Path(f"/proc/{pid}/status").read_text())["Uid"].split()
    assert uids == ["100000"] * 4  # root inside, uid 100000 to the host
    proc.communicate("\n", timeout=scaled(30))
    assert proc.returncode == 0


@pytest.mark.root
def test_userns_overlay_writes_user_xattrs_that_the_report_reads(minictr):
    r = minictr("run", "--name", "mapped", "--userns", "100000:65536", "busybox", "sh", "-c",
                "echo x >> /etc/passwd; rm /etc/hosts; rm -rf /usr && mkdir /usr; "
                "ls -ln /etc/passwd")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[2:4] == ["0", "0"]  # the image's files are root's, inside
    upper = Path(json.loads(minictr("inspect", "mapped").stdout)[0]["upper"])
    assert os.getxattr(upper / "usr", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(upper / "usr")
    assert (upper / "etc/passwd").stat().st_uid == 0  # stored with the image's owners
    assert "opaque" in r.stderr and "root is host uid 100000" in r.stderr
    assert minictr("diff", "mapped").stdout.splitlines() == [
        "C /etc", "D /etc/hosts", "C /etc/passwd", "C /usr", "D /usr/bin", "D /usr/sbin"]


@pytest.mark.root
def test_userns_explain_shows_its_steps_in_order(minictr):
    r = minictr("run", "--rm", "--explain", "--userns", "100000:65536", "busybox", "true")
    assert r.returncode == 0, r.stderr
    where = [line.rsplit("[", 1)[1].rstrip("]").split(": ")[-1]  # [init: where]
             for line in r.stderr.splitlines() if line.startswith("minictr: => ")]
    order = ["minictr.run." + name for name in (
        "userns.create", "userns.idmapped_mounts", "userns.enter", "namespaces.unshare_namespaces",
        "userns.attach", "overlay.mount_overlay", "security.mask_paths", "rootfs.pivot_into",
        "security.drop_capabilities", "security.set_no_new_privs", "container.exec_command")]
    assert [w for w in where if w in order] == order, where
    assert "echo '0 100000 65536' > /proc/$!/uid_map" in r.stderr
    assert "userxattr,redirect_dir=nofollow" in r.stderr


@pytest.mark.root
def test_userns_blocks_at_least_what_the_default_blocks(minictr, probe_env):
    default = run_probe(minictr, probe_env)
    mapped = run_probe(minictr, probe_env, options=("--userns", "100000:65536"))
    for name, (status, _) in default.items():
        if status == "blocked":
            assert mapped[name][0] == "blocked", (name, mapped[name])


@pytest.mark.root
def test_userns_with_a_single_uid(minictr):
    r = minictr("run", "--rm", "--userns", "300000", "busybox", "sh", "-c",
                "cat /proc/self/uid_map; touch /tmp/x && echo wrote")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "300000", "1", "wrote"]


@pytest.mark.root
def test_userns_on_a_host_that_forbids_it_is_refused_with_the_fix(minictr_root, tmp_path):
    """user.max_user_namespaces = 0, seen only by this minictr: in a mount namespace of its
    own, a file that says 0 is bound over /proc/sys/user/max_user_namespaces."""
    zero = tmp_path / "zero"
    zero.write_text("0\n")
    script = (f"mount --bind {zero} /proc/sys/user/max_user_namespaces && "
              f"exec {sys.executable} -m minictr run --rm --userns 100000:65536 busybox true")
    r = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=scaled(60),
                       env={**os.environ, "MINICTR_ROOT": str(minictr_root)})
    refused(r, "user.max_user_namespaces = 0", "sudo sysctl -w user.max_user_namespaces=")
    assert list((minictr_root / "containers").iterdir()) == []


@pytest.mark.root
def test_userns_refuses_an_image_whose_upper_layer_has_an_opaque_dir(tmp_path):
    """Its trusted.overlay.opaque would be ignored with userxattr: the image shown wrong."""
    bottom, top = tmp_path / "bottom", tmp_path / "top"
    (bottom / "etc").mkdir(parents=True)
    (top / "etc").mkdir(parents=True)
    os.setxattr(top / "etc", "trusted.overlay.opaque", b"y")
    image = Image("two", ("sha256:1", "sha256:2"), (bottom, top), ImageConfig(), 0, 0.0, "test")
    with pytest.raises(StepError, match="layer 2 of two makes /etc opaque"):
        userns.check_layers(image)
    userns.check_layers(Image("one", ("sha256:2",), (top,), ImageConfig(), 0, 0.0, "test"))


@pytest.mark.parametrize("value", ["0:65536", "abc", "100000:0", "4294967295:2", "-5"])
def test_invalid_userns_is_refused(minictr, value):
    refused(minictr("run", "--userns", value, "busybox", "true"), "--userns", "/etc/subuid")


# --- pure: no root ------------------------------------------------------------------------


def test_capability_table_matches_the_kernel_headers():
    """Our names by number against python-prctl's constants (from <linux/capability.h>)."""
    import prctl

    for number, name in enumerate(security.CAPABILITIES[:38]):
        assert getattr(prctl, name.upper()) == number, name
    assert security.bounding_set_hex(security.DEFAULT_CAPABILITIES) == DOCKER_CAPBND


def test_capability_names_as_docker_takes_them():
    assert security.parse_capabilities(["NET_ADMIN", "cap_sys_time", "Chown", "all"]) == (
        "cap_net_admin", "cap_sys_time", "cap_chown", "ALL")
    with pytest.raises(StepError, match="unknown capability 'net_admn'"):
        security.parse_capabilities(["net_admn"])


def test_policy_arithmetic(monkeypatch):
    monkeypatch.setattr(security, "kernel_capabilities", lambda: security.CAPABILITIES)
    monkeypatch.setattr(security, "own_bounding_set", lambda: frozenset(security.CAPABILITIES))
    default = security.policy(RunSpec("busybox"))
    assert len(default.kept) == 14 and len(default.dropped) == 27
    assert "cap_sys_admin" in default.dropped and default.masked and default.sys_read_only
    spec = RunSpec("busybox", cap_add=("cap_sys_admin",), cap_drop=("ALL",))
    assert security.policy(spec).kept == ("cap_sys_admin",)
    privileged = security.policy(RunSpec("busybox", privileged=True, cap_drop=("cap_bpf",)))
    assert len(privileged.kept) == 40 and privileged.dropped == ("cap_bpf",)
    assert privileged.masked == () and privileged.read_only == () and not privileged.sys_read_only
    monkeypatch.setattr(security, "own_bounding_set",
                        lambda: frozenset(security.CAPABILITIES) - {"cap_sys_time"})
    with pytest.raises(StepError, match="cap_sys_time: cannot be granted"):
        security.policy(RunSpec("busybox", cap_add=("cap_sys_time",)))
    assert "cap_sys_time" not in security.policy(RunSpec("busybox", cap_add=("ALL",))).kept


def test_the_security_line_says_what_was_mounted():
    """Before the init's report the line promises nothing; after it, it counts what the init
    mounted, and the paths asked for that it did not mount are absent."""
    plan = security.Policy(("cap_chown",), ("cap_sys_admin",), security.MASKED_PATHS,
                           security.READ_ONLY_PATHS, sys_read_only=True, privileged=False)
    assert plan.summary().splitlines()[2] == ("11 paths to mask, 5 to make read-only "
                                              "(not mounted yet)")
    assert plan.as_dict()["masked_paths"] is None
    done = plan.with_mounted(["/proc/keys", "/proc/timer_list", "/proc/acpi", "/sys/firmware",
                              "/not/asked"],
                             ["/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"])
    assert done.summary().splitlines()[1:] == [
        "no_new_privs: setuid bits and file capabilities grant nothing",
        "4 paths masked (7 absent on this kernel), 4 read-only (1 absent)"]
    state = done.as_dict()
    assert state["masked_paths"] == ["/proc/keys", "/proc/timer_list", "/proc/acpi",
                                     "/sys/firmware"]
    assert "/proc/kcore" in state["masked_paths_absent"] and len(state["masked_paths_absent"]) == 7
    assert state["read_only_paths_absent"] == ["/proc/sysrq-trigger"]
    everything = plan.with_mounted(security.MASKED_PATHS, security.READ_ONLY_PATHS)
    assert everything.summary().endswith("\n11 paths masked, 5 read-only")


def test_the_security_lines_fit_an_80_column_projector():
    """Every line, "security: " and the indent included, in 80 columns: the default, all
    dropped, none dropped, --privileged, and the largest --userns."""
    caps = tuple(security.CAPABILITIES)
    default = security.Policy(security.DEFAULT_CAPABILITIES,
                              tuple(c for c in caps if c not in security.DEFAULT_CAPABILITIES),
                              security.MASKED_PATHS, security.READ_ONLY_PATHS,
                              sys_read_only=True, privileged=False)
    policies = [
        default, default.with_mounted(["/proc/keys"], []),
        default._replace(kept=(), dropped=caps), default._replace(kept=caps, dropped=()),
        default._replace(kept=caps, dropped=(), privileged=True),
        default._replace(userns=IdMap(4294901760, 65536)),
        default._replace(dropped=("cap_checkpoint_restore", "cap_block_suspend", "cap_bpf")),
    ]
    for policy in policies:
        lines = policy.summary().splitlines()
        assert 3 <= len(lines) <= 4, lines
        assert all(len("security: " + line) <= 80 for line in lines), lines
    assert default.summary().splitlines()[0] == (
        "14 capabilities kept, 27 dropped (cap_sys_admin, cap_sys_module, ...)")


def test_userns_ranges_that_hold_host_accounts_are_refused():
    accounts = {0: "user root", 1: "user daemon", 1000: "user vagrant", 65534: "user nobody"}
    for idmap in (IdMap(1, 4294967294), IdMap(999, 2), IdMap(60000, 10000)):
        with pytest.raises(StepError, match="holds ids of this host's accounts"):
            userns.check_free(idmap, accounts)
    userns.check_free(IdMap(100000, 65536), accounts)
    userns.check_free(IdMap(1001, 1), accounts)


def test_userns_values():
    assert userns.parse("100000:65536") == IdMap(100000, 65536)
    assert userns.parse("1000") == IdMap(1000, 1)
    assert IdMap(100000, 65536).line == "0 100000 65536"


@pytest.mark.parametrize(("sysctls", "euid", "words"), [
    ({"user/max_user_namespaces": "0"}, 0, "user.max_user_namespaces=15000"),
    ({"kernel/apparmor_restrict_unprivileged_userns": "1"}, 1000,
     "kernel.apparmor_restrict_unprivileged_userns=0"),
    ({"kernel/unprivileged_userns_clone": "0"}, 1000, "kernel.unprivileged_userns_clone=1"),
])
def test_hosts_that_forbid_user_namespaces(sysctls, euid, words):
    forbidden = userns.why_forbidden(sysctls.get, euid)
    assert forbidden is not None and words in forbidden[1]


def test_root_is_not_stopped_by_the_unprivileged_restrictions():
    """AppArmor's restriction (Ubuntu 24.04) and Debian's old switch apply to processes
    without CAP_SYS_ADMIN: `sudo minictr run --userns` works with them on."""
    sysctls = {"user/max_user_namespaces": "15000", "kernel/unprivileged_userns_clone": "0",
               "kernel/apparmor_restrict_unprivileged_userns": "1"}
    assert userns.why_forbidden(sysctls.get, 0) is None
