"""minictr.run.network on its own: parsing (no root), then the real bridge, veths, leases and nft
rules, against network namespaces the tests make themselves (`unshare --net`).

Packets go only to loopback and to the test namespaces' own addresses: never beyond this
machine. Outbound NAT is checked by its rule (`nft list`), not by traffic. Every root test
ends with `network.prune()`, so the bridge, the nft table and ip_forward are as before, and
the leak check finds no link.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.run import network
from minictr.run.network import Port
from tests.helpers import refused, scaled

# A server for a test namespace: answers each connection with the address it came from.
SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen()
print("ready", flush=True)
while True:
    c, (peer, _) = s.accept()
    c.sendall(f"hello {peer}\\n".encode())
    c.close()
"""
SLEEPER = "print('ready', flush=True); import time; time.sleep(600)"
CID_A, CID_B = "a1" * 32, "b2" * 32


# --- no root: what is refused, what is written ----------------------------------------------


def test_ports_parse() -> None:
    assert network.parse_ports(["8080:80", "53:5353/udp", "8080:81/udp"], "bridge") == (
        Port(8080, 80), Port(53, 5353, "udp"), Port(8080, 81, "udp"))
    assert str(Port(8080, 80)) == "8080:80/tcp"


@pytest.mark.parametrize("value", ["80", "x:80", "0:80", "8080:0", "70000:80", "8080:80/sctp",
                                   ":80", "8080:", "-1:80", " 8080:80"])
def test_malformed_ports_are_refused(value: str) -> None:
    with pytest.raises(StepError, match="invalid port"):
        network.parse_ports([value], "bridge")


def test_a_host_port_twice_is_refused() -> None:
    with pytest.raises(StepError, match="given twice"):
        network.parse_ports(["8080:80", "8080:81"], "bridge")


@pytest.mark.parametrize("mode", ["none", "host"])
def test_ports_need_the_bridge(mode: str) -> None:
    with pytest.raises(StepError, match="needs --network bridge"):
        network.parse_ports(["8080:80"], mode)
    assert network.parse_ports([], mode) == ()


def test_unknown_mode() -> None:
    with pytest.raises(StepError, match="unknown network mode 'nat'"):
        network.parse_mode("nat")
    assert [network.parse_mode(m) for m in ("none", "bridge", "host")] == ["none", "bridge", "host"]


def test_nat_table_masquerades_out_of_the_given_interface_only() -> None:
    subnet = ipaddress.IPv4Network("10.123.0.0/24")
    with_nat = network.nat_table(subnet, "wlan0")
    assert 'ip saddr 10.123.0.0/24 oifname "wlan0" masquerade' in with_nat
    without = network.nat_table(subnet, None)
    assert "oifname \"wlan0\"" not in without and "outbound" not in without
    assert "chain published" in without  # -p works without a default route too


def test_resolv_conf_drops_the_hosts_loopback_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"/etc/resolv.conf": "nameserver 127.0.0.53\noptions edns0\n",
             "/run/systemd/resolve/resolv.conf": "nameserver 192.0.2.53\nnameserver ::1\n"}
    monkeypatch.setattr(network, "_read", lambda path: files.get(path, ""))
    assert network.resolv_conf(reachable_from_container=True) == "nameserver 192.0.2.53\n"
    assert network.resolv_conf(reachable_from_container=False) == files["/etc/resolv.conf"]
    files.pop("/run/systemd/resolve/resolv.conf")
    assert network.resolv_conf(reachable_from_container=True).startswith("# minictr:")


def test_files_for_each_mode(tmp_path: Path) -> None:
    assert network.write_files(tmp_path, "none", "web") == ()
    assert list(tmp_path.iterdir()) == []
    address = ipaddress.IPv4Interface("10.123.0.7/24")
    assert network.write_files(tmp_path, "bridge", "web", address) == network.ETC_FILES
    assert "10.123.0.7\tweb\n" in (tmp_path / "hosts").read_text()
    assert (tmp_path / "hostname").read_text() == "web\n"
    network.write_files(tmp_path, "host", "web")
    assert "127.0.1.1\tweb\n" in (tmp_path / "hosts").read_text()


def test_published_rules_round_trip_through_their_comment() -> None:
    script = network.publish_script(CID_A, "web", ipaddress.IPv4Interface("10.123.0.2/24"),
                                    [Port(8080, 80)])
    assert script == ("add rule ip minictr published tcp dport 8080 dnat to 10.123.0.2:80 "
                      f'comment "{CID_A[:12]} 8080:80/tcp web"\n')


# --- root: real namespaces, links, rules and packets ----------------------------------------


@contextmanager
def in_new_netns(code: str) -> Iterator[subprocess.Popen[str]]:
    """Python code in a network namespace of its own; yields once it has printed "ready"
    (then its namespace surely exists: unshare(1) made it before exec)."""
    proc = subprocess.Popen(["unshare", "--net", sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def ask(host: str, port: int = 80) -> str:
    """Connect, read the server's one line."""
    with socket.create_connection((host, port), timeout=scaled(5)) as s:
        return s.makefile().readline().strip()


def run_in(pid: int, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=scaled(30))


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def nft_table() -> str:
    return subprocess.run(["nft", "list", "table", "ip", "minictr"], capture_output=True,
                          text=True).stdout


@pytest.fixture
def bridge() -> Iterator[None]:
    """After the test, network prune: no bridge, no table, ip_forward as it was."""
    forward = network.IP_FORWARD.read_text()
    yield
    _, users = network.prune()
    assert users == 0, "a lease is still held"
    assert "minictr0" not in links()
    assert nft_table() == ""
    assert network.IP_FORWARD.read_text() == forward


@pytest.mark.root
def test_loopback_up_in_a_new_namespace() -> None:
    code = ("import subprocess; from minictr.run import network;"
            "print(subprocess.run(['ip', '-o', 'link', 'show', 'lo'], capture_output=True,"
            " text=True).stdout); network.loopback_up();"
            "print(subprocess.run(['ip', '-o', 'link', 'show', 'lo'], capture_output=True,"
            " text=True).stdout)")
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout.split("\n\n")
    assert "state DOWN" in out[0] and "<LOOPBACK>" in out[0]
    assert "LOOPBACK,UP" in out[1]


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_a_namespace_on_the_bridge_is_reached_from_the_host(tmp_path: Path) -> None:
    before = links()
    with in_new_netns(SERVER) as server, \
            network.attached("bridge", [Port(18080, 80)], CID_A, "web", "web", tmp_path) as att:
        att.connect(server.pid)
        assert att.lease is not None
        ip = str(att.lease.address.ip)
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(network.DEFAULT_SUBNET)
        assert links() - before == {"minictr0", f"mctr{CID_A[:8]}"}
        # the host reaches it directly, from the bridge's address
        assert ask(ip) == "hello 10.123.0.1"
        # the published port: at the bridge's address, and at 127.0.0.1 (route_localnet and
        # a masquerade: the container sees the bridge, not a 127.0.0.1 it would answer itself)
        assert ask("10.123.0.1", 18080) == "hello 10.123.0.1"
        assert ask("127.0.0.1", 18080) == "hello 10.123.0.1"
        table = nft_table()
        assert f'tcp dport 18080 dnat to {ip}:80 comment "{CID_A[:12]} 18080:80/tcp web"' in table
        if outside := default_interface():  # outbound NAT: by its rule, never by traffic
            assert f'ip saddr 10.123.0.0/24 oifname "{outside}" masquerade' in table
            assert network.IP_FORWARD.read_text().strip() == "1"
        assert f"{ip}\tweb" in (tmp_path / "hosts").read_text()
        state = att.as_dict()
        assert state["address"] == f"{ip}/24" and state["ports"] == ["18080:80/tcp"]
        assert state["veth"] == {"host": f"mctr{CID_A[:8]}", "container": "eth0"}
        inside = run_in(server.pid, "import socket; print(socket.if_nameindex())").stdout
        assert "'eth0'" in inside
    # gone with the container: veth, rule, lease; the bridge stays until network prune
    assert links() - before == {"minictr0"}
    assert "dport 18080" not in nft_table()
    assert list((network.STATE_DIR / "leases").iterdir()) == []


def default_interface() -> str | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return network.default_route_interface(ipr)


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_two_namespaces_talk_over_the_bridge(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with in_new_netns(SERVER) as a, in_new_netns(SLEEPER) as b, \
            network.attached("bridge", [], CID_A, "a", "a", tmp_path / "a") as att_a, \
            network.attached("bridge", [], CID_B, "b", "b", tmp_path / "b") as att_b:
        att_a.connect(a.pid)
        att_b.connect(b.pid)
        assert att_a.lease and att_b.lease and att_a.lease.address != att_b.lease.address
        got = run_in(b.pid, "import socket; s = socket.create_connection("
                     f"('{att_a.lease.address.ip}', 80), timeout=5);"
                     "print(s.makefile().readline().strip())")
        assert got.stdout.strip() == f"hello {att_b.lease.address.ip}", got.stderr


@pytest.mark.root
def test_a_namespace_without_a_veth_cannot_reach_the_bridge(tmp_path: Path) -> None:
    with in_new_netns(SLEEPER) as alone:
        got = run_in(alone.pid, "import socket; socket.create_connection(('10.123.0.1', 80),"
                     " timeout=5)")
    assert "Network is unreachable" in got.stderr


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_ten_at_once_get_ten_addresses(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from minictr.run import network\n"
            "with network.attached('bridge', [], sys.argv[1] * 64, 'c' + sys.argv[1], 'c',"
            " Path(sys.argv[2])) as att:\n"
            "    print(att.lease.address.ip, flush=True); sys.stdin.read()\n")
    procs = []
    for n in range(10):
        (tmp_path / str(n)).mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(n), tmp_path / str(n)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    try:
        addresses = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.communicate("")
    assert all(addresses) and len(set(addresses)) == 10, addresses
    assert all(p.returncode == 0 for p in procs)
    assert list((network.STATE_DIR / "leases").iterdir()) == []


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_a_full_subnet_is_refused_and_leaves_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    network.prune()  # MINICTR_SUBNET counts when the bridge is made
    monkeypatch.setenv("MINICTR_SUBNET", "10.123.0.0/30")  # .1 the bridge, .2 the only one
    (tmp_path / "a").mkdir()
    with network.attached("bridge", [], CID_A, "a", "a", tmp_path / "a") as att:
        assert att.lease is not None and str(att.lease.address) == "10.123.0.2/30"
        rules = nft_table()
        with pytest.raises(StepError, match=r"no free address in 10.123.0.0/30"), \
                network.attached("bridge", [Port(18081, 80)], CID_B, "b", "b", tmp_path):
            pass
        assert nft_table() == rules
        assert os.listdir(network.STATE_DIR / "leases") == ["10.123.0.2"]
        assert not (tmp_path / "hosts").exists()


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_taken_ports_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with socket.socket() as listener, \
            network.attached("bridge", [Port(18082, 80)], CID_A, "web", "a", tmp_path / "a"):
        listener.bind(("127.0.0.1", 18083))
        listener.listen()
        rules = nft_table()
        with pytest.raises(StepError, match="18082/tcp is already published by web"), \
                network.attached("bridge", [Port(18082, 80)], CID_B, "b", "b", tmp_path):
            pass
        with pytest.raises(StepError, match="18083/tcp is in use by a program of the host"), \
                network.attached("bridge", [Port(18084, 80), Port(18083, 80)], CID_B, "b", "b",
                                 tmp_path):
            pass
        assert nft_table() == rules  # 18084 was not published either: all or nothing
        assert len(os.listdir(network.STATE_DIR / "leases")) == 1
    # the same port, UDP, is another port
    with network.attached("bridge", [Port(18082, 80, "udp")], CID_B, "b", "b", tmp_path):
        assert "udp dport 18082" in nft_table()


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_what_a_killed_runtime_left_is_forgotten(tmp_path: Path) -> None:
    """A runtime killed with SIGKILL undoes nothing: its lease is freed by the kernel (flock),
    its veth and rule stay until prune (or the next run) forgets them."""
    before = links()
    code = ("import sys; from pathlib import Path; from minictr.run import network\n"
            "held = network.attached('bridge', [network.Port(18085, 80)], 'c' * 64, 'dead',"
            " 'dead', Path(sys.argv[2])); held.__enter__().connect(int(sys.argv[1]))\n"
            "print('ready', flush=True); sys.stdin.read()\n")
    with in_new_netns(SLEEPER) as sleeper:
        runtime = subprocess.Popen([sys.executable, "-c", code, str(sleeper.pid), tmp_path],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert runtime.stdout is not None and runtime.stdout.readline() == "ready\n"
        runtime.kill()
        runtime.communicate()
        assert "mctrcccccccc" in links() and "dport 18085" in nft_table()
        removed, users = network.prune()
    assert users == 0
    assert "mctrcccccccc  (veth of a dead container)" in removed
    assert "port 18085:80/tcp  (rule of a dead container)" in removed
    assert links() == before


# --- root: through `minictr run`, as a user would -------------------------------------------

# A web server in a busybox container; "ready" once httpd listens (it forks into the
# background after binding); the container lives until its stdin closes.
WEB = ("mkdir /www && echo hello from $(hostname) > /www/index.html && httpd -p 80 -h /www "
       "&& echo ready && exec cat")


@contextmanager
def web_container(minictr_root: Path, name: str, *args: str) -> Iterator[str]:
    """A running web container on the bridge; yields its address."""
    from tests.helpers import read_line, start

    env = {"MINICTR_ROOT": str(minictr_root)}
    proc = start("run", "--rm", "-i", "--network", "bridge", "--name", name, *args, "busybox",
                 "sh", "-c", WEB, env=env)
    try:
        assert read_line(proc) == "ready", proc.stderr.read() if proc.stderr else ""
        state = json.loads(subprocess.run([sys.executable, "-m", "minictr", "inspect", name],
                                          capture_output=True, text=True, check=True,
                                          env={**os.environ, **env}).stdout)[0]
        yield state["network"]["address"].split("/")[0]
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=scaled(30))


def fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=scaled(5)) as response:
        return response.read().decode().strip()


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_containers_talk_and_the_host_reaches_them(minictr, minictr_root: Path) -> None:
    minictr("image", "build", "busybox", check=True)
    with web_container(minictr_root, "web", "-p", "18090:80") as address:
        assert ipaddress.ip_address(address) in ipaddress.ip_network(network.DEFAULT_SUBNET)
        # another container, over the bridge
        r = minictr("run", "--rm", "--network", "bridge", "busybox", "wget", "-q", "-O", "-",
                    f"http://{address}/", check=True)
        assert r.stdout == "hello from web\n"
        # the host: the container's address, the published port, 127.0.0.1 included
        assert fetch(f"http://{address}/") == "hello from web"
        assert fetch("http://10.123.0.1:18090/") == "hello from web"
        assert fetch("http://127.0.0.1:18090/") == "hello from web"
        # what inspect and network ls say
        state = json.loads(minictr("inspect", "web", check=True).stdout)[0]["network"]
        assert state["mode"] == "bridge" and state["bridge"] == "minictr0"
        assert state["ports"] == ["18090:80/tcp"] and state["veth"]["container"] == "eth0"
        ls = minictr("network", "ls", check=True).stdout
        assert "minictr0   10.123.0.0/24   10.123.0.1" in ls
        assert re.search(rf"{re.escape(address)} +[0-9a-f]{{12}} +web +mctr[0-9a-f]{{8}} +"
                         r"18090:80/tcp", ls), ls
        # a container without a network: only lo, up, and no way to the bridge
        # (no wget -T: Debian's busybox lacks it and crashes, which would pass for a failure)
        r = minictr("run", "--rm", "busybox", "sh", "-c",
                    f"ip -o link; wget -q -O - http://{address}/")
        assert r.returncode == 1
        assert "Network is unreachable" in r.stderr
        assert "lo: <LOOPBACK,UP,LOWER_UP>" in r.stdout and "eth0" not in r.stdout
        # the published port is taken while web runs: one line, exit 125, nothing made
        before = os.listdir(network.STATE_DIR / "leases")
        r = minictr("run", "--rm", "--network", "bridge", "-p", "18090:80", "busybox", "true")
        refused(r, "18090/tcp is already published by web")
        assert os.listdir(network.STATE_DIR / "leases") == before
        assert minictr("ps", "-a", check=True).stdout.count("\n") == 2  # header and web
    assert "dport 18090" not in nft_table()
    assert list((network.STATE_DIR / "leases").iterdir()) == []


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_ten_containers_started_at_once_get_ten_addresses(minictr, minictr_root: Path) -> None:
    from tests.helpers import read_line, start

    minictr("image", "build", "busybox", check=True)
    show = "ip -o -4 addr show eth0 | sed 's/.* inet \\([0-9.]*\\).*/\\1/'; exec cat"
    procs = [start("run", "--rm", "-i", "--network", "bridge", "busybox", "sh", "-c", show,
                   env={"MINICTR_ROOT": str(minictr_root)}) for _ in range(10)]
    try:
        addresses = [read_line(p) for p in procs]
    finally:
        for p in procs:
            p.communicate("", timeout=scaled(30))
    assert len(set(addresses)) == 10, addresses
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.123.0.0/24")
               for a in addresses)
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_a_full_subnet_refuses_the_next_container(minictr, minictr_root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    minictr("image", "build", "busybox", check=True)
    network.prune()
    monkeypatch.setenv("MINICTR_SUBNET", "10.123.0.0/30")  # one address: 10.123.0.2
    with web_container(minictr_root, "only") as address:
        assert address == "10.123.0.2"
        r = minictr("run", "--rm", "--network", "bridge", "-p", "18091:80", "busybox", "true",
                    env={"MINICTR_SUBNET": "10.123.0.0/30"})
        refused(r, "no free address in 10.123.0.0/30")
        assert "18091" not in nft_table()


@pytest.mark.root
@pytest.mark.parametrize(("args", "words"), [
    (["--network", "nat"], ["unknown network mode 'nat'"]),
    (["--network", "bridge", "-p", "80"], ["invalid port '80'"]),
    (["--network", "bridge", "-p", "99999:80"], ["invalid port"]),
    (["-p", "8080:80"], ["-p needs --network bridge, not none"]),
])
def test_bad_network_input_is_one_line(minictr, args: list[str], words: list[str]) -> None:
    r = minictr("run", *args, "busybox", "true")
    refused(r, *words)
    assert "minictr0" not in links()


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_a_host_port_in_use_is_refused(minictr) -> None:
    minictr("image", "build", "busybox", check=True)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 18092))
        listener.listen()
        r = minictr("run", "--rm", "--network", "bridge", "-p", "18092:80", "busybox", "true")
    refused(r, "18092/tcp is in use by a program of the host", "ss -lnp")


@pytest.mark.root
def test_host_network_is_the_hosts(minictr) -> None:
    minictr("image", "build", "busybox", check=True)
    r = minictr("run", "--rm", "--network", "host", "busybox", "readlink", "/proc/self/ns/net",
                check=True)
    assert r.stdout.strip() == os.readlink("/proc/self/ns/net")
    state_none = minictr("run", "--rm", "busybox", "readlink", "/proc/self/ns/net", check=True)
    assert state_none.stdout.strip() != os.readlink("/proc/self/ns/net")


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_explain_shows_the_ip_and_nft_equivalents(minictr) -> None:
    minictr("image", "build", "busybox", check=True)
    r = minictr("run", "--rm", "--explain", "--network", "bridge", "-p", "18093:80", "busybox",
                "true", check=True)
    for shell in ("ip link add minictr0 type bridge", "ip addr add 10.123.0.1/24 dev minictr0",
                  "table ip minictr {", "dnat to 10.123.0.", "type veth peer name eth0 netns",
                  "master minictr0 up", "ip route add default via 10.123.0.1",
                  "ip link set lo up", "ip link del mctr"):
        assert f"$ {shell}" in r.stderr or shell in r.stderr, shell
    # the runtime configures eth0 while the init waits: no init step comes before it
    assert r.stderr.index("ip route add default") < r.stderr.index("mount --make-rprivate")


@pytest.mark.root
@pytest.mark.usefixtures("bridge")
def test_prune_after_a_killed_runtime(minictr, minictr_root: Path) -> None:
    from tests.helpers import read_line, start, wait_for_exit_of

    minictr("image", "build", "busybox", check=True)
    proc = start("run", "-i", "--network", "bridge", "--name", "killed", "-p", "18094:80",
                 "busybox", "sh", "-c", "echo ready; exec cat",
                 env={"MINICTR_ROOT": str(minictr_root)})
    assert read_line(proc) == "ready"
    pid = json.loads(minictr("inspect", "killed", check=True).stdout)[0]["pid"]
    proc.kill()  # SIGKILL: no undo runs
    proc.communicate()
    wait_for_exit_of(pid)
    assert "dport 18094" in nft_table()
    out = minictr("prune", check=True).stdout
    # The leases are host-wide: a `minictr prune` of another MINICTR_ROOT, run meanwhile,
    # may have forgotten them first. Either way, they are gone now.
    assert "killed  (dead)" in out
    assert "dport 18094" not in nft_table()
    assert not [n for n in links() if network.VETH_PATTERN.fullmatch(n)]
