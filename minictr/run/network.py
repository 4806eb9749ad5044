"""Networking: `--network none|bridge|host` and `-p HOSTPORT:CONTAINERPORT` (tutorial ch.9).

    none (default)  the container's own network namespace, with only `lo`, brought up
    bridge          the same, plus a veth pair: mctrXXXXXXXX on the host, plugged into the
                    bridge minictr0; eth0 inside, with an address of 10.123.0.0/24 and a
                    default route via the bridge (10.123.0.1); outbound NAT and -p by nftables
    host            the host's own network namespace: NO network isolation at all

On the host, for bridge (each line is a step that --explain prints):

    ip link add minictr0 type bridge              once, kept until `minictr network prune`
    ip addr add 10.123.0.1/24 dev minictr0        the containers' gateway
    sysctl -w net.ipv4.conf.minictr0.route_localnet=1        127.0.0.1:HOSTPORT, see below
    nft -f - <<EOF  table ip minictr {...}  EOF   NAT out of the default-route interface,
    sysctl -w net.ipv4.ip_forward=1               and the chains -p adds its DNAT rules to
    ip link add mctrXXXXXXXX type veth peer name eth0 netns PID       per container
    ip link set mctrXXXXXXXX master minictr0 up
    nsenter --net=/proc/PID/ns/net ip addr add 10.123.0.2/24 dev eth0
    nsenter --net=/proc/PID/ns/net ip link set eth0 up
    nsenter --net=/proc/PID/ns/net ip route add default via 10.123.0.1

Why these choices:
- 10.123.0.0/24 is in no range that a workshop machine is likely to use already: not
  VirtualBox's NAT (10.0.2.0/24) or host-only networks (192.168.56.0/21), not Docker's
  172.17.0.0/16 nor the pools of its other networks (172.16.0.0/12, 192.168.0.0/16: so not
  172.30.0.0/24), not podman's 10.88.0.0/16, libvirt's 192.168.122.0/24 or Kubernetes'
  10.96.0.0/12 and 10.244.0.0/16. The bridge is refused, with a hint, if a route of the host
  overlaps it anyway; MINICTR_SUBNET=10.77.0.0/24 chooses another when the bridge is made.
- Addresses are leases: /run/minictr/network/leases/ADDRESS, flock(2)-ed by the runtime for
  the container's whole life (as its own lock is). An address is free exactly when no process
  holds its file, so two containers never share one, even started at the same moment, and a
  runtime killed with SIGKILL frees it at once. They live in /run, not in MINICTR_ROOT: the
  bridge is one per host, so its addresses are too, and both vanish at reboot.
- All the links, addresses and routes go through pyroute2's netlink, imported only here and
  only for bridge (the default, none, needs only `lo` up: two ioctls). The NAT and port rules
  go through the `nft` program: its text *is* what a student reads in --explain and in
  `nft list table ip minictr`, and pyroute2's nftables support is still experimental.
- 127.0.0.1:HOSTPORT, as Docker without its userland proxy does it: a DNAT in the output
  chain (the host's own connections), the kernel told it may route a 127.0.0.1 source out of
  minictr0 (route_localnet), and a masquerade so the container answers the bridge, not its
  own lo. No proxy process: the kernel does all of it.
- The inner end of the veth is made *in* the container's namespace, named eth0 there
  (`peer name eth0 netns PID`): the host has an eth0 of its own, and no moment exists where
  the container's end sits on the host, to be left there by a crash.
- While the container runs, the runtime holds its network namespace open: when it exits,
  the runtime deletes the veth (both ends go) before the namespace can be freed, so the pair
  is gone when `minictr run` returns, not some time later, when the kernel's cleanup runs.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import re
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from minictr import libc
from minictr.errors import StepError
from minictr.explain import note, step
from minictr.run.mounts import Mount, shell
from minictr.spec import Port

if TYPE_CHECKING:  # only for type hints: pyroute2 is imported where it is used
    import subprocess

    from pyroute2 import IPRoute

MODES = ("none", "bridge", "host")
BRIDGE = "minictr0"
DEFAULT_SUBNET = "10.123.0.0/24"
TABLE = "minictr"  # nft: table ip minictr
STATE_DIR = Path("/run/minictr/network")  # the leases and the lock: host-wide, like the bridge
VETH_PREFIX = "mctr"  # + 8 hex digits of the container's id: 12 of IFNAMSIZ's 15
VETH_PATTERN = re.compile(VETH_PREFIX + r"[0-9a-f]{8}")
ETC_FILES = ("hosts", "hostname", "resolv.conf")  # written in $C, bound onto /etc/NAME
NO_NFT_HINT = "install nftables (apt-get install nftables)"


# --- bad input: refused before anything is made --------------------------------------------

PORT_PATTERN = re.compile(r"(\d{1,5}):(\d{1,5})(?:/(tcp|udp))?")


def parse_mode(value: str) -> str:
    if value not in MODES:
        raise StepError("check input", f"unknown network mode {value!r}",
                        hint="use --network none, bridge or host")
    return value


def parse_ports(values: Sequence[str], mode: str) -> tuple[Port, ...]:
    """Each -p as a Port; refused: a malformed one, port 0 or above 65535, the same host port
    twice, or -p with a mode other than bridge (host has no DNAT to do, none no way in)."""
    ports: list[Port] = []
    for value in values:
        m = PORT_PATTERN.fullmatch(value)
        numbers = (int(m[1]), int(m[2])) if m else (0, 0)
        if not m or not all(1 <= n <= 65535 for n in numbers):
            raise StepError("check input", f"invalid port {value!r}",
                            hint="use -p HOSTPORT:CONTAINERPORT, each 1-65535, with /tcp "
                            "(the default) or /udp: -p 8080:80")
        port = Port(*numbers, m[3] or "tcp")
        if any((p.host, p.protocol) == (port.host, port.protocol) for p in ports):
            raise StepError("check input", f"host port {port.host}/{port.protocol} is "
                            "given twice", hint="one -p for each host port")
        ports.append(port)
    if ports and mode != "bridge":
        raise StepError("check input", f"-p needs --network bridge, not {mode}",
                        hint="with host the container's ports are the host's already; with "
                        "none nothing can reach it")
    return tuple(ports)


# --- inside the container: lo, and the /etc files -------------------------------------------

SIOCGIFFLAGS = 0x8913  # netdevice(7): get an interface's flags...
SIOCSIFFLAGS = 0x8914  # ... and set them
IFF_UP = 0x1
IFREQ = "16sH22x"  # struct ifreq: the name, then a union of 24 bytes, here the flags (short)


def loopback_up() -> None:
    """Bring `lo` up in this network namespace: a new one has it down, and then not even
    127.0.0.1 answers.

    Two ioctls on any socket, as ifconfig(8) does, rather than pyroute2: the default mode,
    none, must not pay the ~130 ms it takes to import, for the one flag it needs.
    Shell: ip link set lo up          See: netdevice(7) SIOCGIFFLAGS, SIOCSIFFLAGS
    """
    with step("bring the loopback interface up", "ip link set lo up",
              why="a new network namespace has lo down: without it not even 127.0.0.1 "
              "answers"), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack(IFREQ, b"lo", 0)
        flags = struct.unpack(IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))


def write_files(directory: Path, mode: str, hostname: str,
                address: ipaddress.IPv4Interface | None = None) -> tuple[str, ...]:
    """The container's /etc/hosts, /etc/hostname and /etc/resolv.conf, written in its
    directory ($C), as Docker keeps them in /var/lib/docker/containers/ID/: bound onto the
    image's files, they never land in the upper, so the change report shows only what the
    command wrote. None for `none`: its /etc stays the image's.
    Shell: printf '127.0.0.1 localhost\\n10.123.0.2 NAME\\n' > $C/hosts ...
    """
    if mode == "none":
        return ()
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    hosts += f"{address.ip}\t{hostname}\n" if address else f"127.0.1.1\t{hostname}\n"
    texts = {"hosts": hosts, "hostname": f"{hostname}\n",
             "resolv.conf": resolv_conf(reachable_from_container=mode == "bridge")}
    with step("write the container's hosts, hostname and resolv.conf in its directory",
              "\n".join(f"cat > $C/{name} <<'EOF'\n{text.rstrip()}\nEOF"
                        for name, text in texts.items()),
              why="in $C, not in the image: bound over /etc by the init, they never show in "
              "the change report"):
        for name, text in texts.items():
            (directory / name).write_text(text)
            os.chmod(directory / name, 0o644)
    return ETC_FILES


def resolv_conf(*, reachable_from_container: bool) -> str:
    """The host's resolv.conf; for bridge, without the nameservers on the host's loopback
    (127.0.0.53 of systemd-resolved is the host's lo, not the container's): then the servers
    systemd-resolved itself asks, as Docker does."""
    text = _read("/etc/resolv.conf")
    if not reachable_from_container:
        return text
    for candidate in (text, _read("/run/systemd/resolve/resolv.conf")):
        kept = [line for line in candidate.splitlines() if not _loopback_server(line)]
        if any(line.startswith("nameserver") for line in kept):
            return "\n".join(kept) + "\n"
    return "# minictr: the host's nameservers are on its loopback: none a container can reach\n"


def _loopback_server(line: str) -> bool:
    words = line.split()
    if len(words) < 2 or words[0] != "nameserver":
        return False
    with suppress(ValueError):
        return ipaddress.ip_address(words[1].split("%")[0]).is_loopback
    return False


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def bind_files(source: Path, merged: Path, names: Iterable[str]) -> None:
    """Bind each of $C/hosts, hostname, resolv.conf onto merged/etc/NAME: before pivot_root,
    while $C can be reached. Only onto a regular file of the image: making a missing one would
    write it into the upper (as a change the command never made); a symlink (Debian's
    resolv.conf may be one) would be followed on the host.
    Shell: mount --bind $C/hosts $C/merged/etc/hosts       See: mount(2) MS_BIND
    """
    for name in names:
        target = merged / "etc" / name
        inside = os.path.realpath(target).startswith(os.path.realpath(merged) + "/etc/")
        if not inside or not target.is_file() or target.is_symlink():
            note(f"/etc/{name} is not a file in the image: not provided (making it would "
                 "write into the upper)")
            continue
        m = Mount(str(source / name), str(target), None, libc.MS_BIND)
        with step(f"provide /etc/{name}: bind the container's own copy over the image's",
                  shell(m), why="before pivot_root, while $C can still be reached: after it, "
                  "only the container's files can"):
            libc.mount(*m)


# --- errors: netlink's errno, kept ----------------------------------------------------------


@contextmanager
def netlink_errors() -> Iterator[None]:
    """pyroute2's NetlinkError as the OSError it is (the same errno), which `step` turns
    into a StepError with its hint: `with step(...), netlink_errors():`."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as e:
        raise OSError(e.code, os.strerror(e.code)) from e


@contextmanager
def tolerating(*errnos: int) -> Iterator[None]:
    """Teardown: what is already gone is fine (ENODEV, ENOENT: deleted by someone else, or
    by the kernel with its namespace). Anything else is still an error."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as e:
        if e.code not in errnos:
            raise OSError(e.code, os.strerror(e.code)) from e
    except OSError as e:
        if e.errno not in errnos:
            raise


def run_nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    """nft ARGS, its output captured; a missing nft is one clear line. (subprocess is imported
    here: `minictr run` without networking must not pay for it.)"""
    import subprocess

    try:
        return subprocess.run(["nft", *args], input=script, capture_output=True, text=True,
                              check=False)
    except FileNotFoundError as e:
        raise StepError("run nft", "nft not found", errno=errno.ENOENT, hint=NO_NFT_HINT) from e


def nft(script: str) -> str:
    """Run an nft script as one transaction (all of it, or none of it); return its output.
    Shell: nft -f - <<'EOF' ... EOF          See: nft(8)"""
    done = run_nft("-f", "-", script=script)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("Error")]
        raise StepError("run nft", (lines or [done.stderr.strip() or "failed"])[0],
                        hint=f"the script was: {' '.join(script.split())[:200]}")
    return done.stdout


# --- the bridge, once per host ----------------------------------------------------------------


def _link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def bridge_address(ipr: IPRoute) -> ipaddress.IPv4Interface | None:
    """The bridge's address (10.123.0.1/24: the gateway, and the subnet), or None."""
    index = _link_index(ipr, BRIDGE)
    if index is None:
        return None
    for a in ipr.get_addr(index=index, family=socket.AF_INET):
        return ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    return None


def wanted_subnet() -> ipaddress.IPv4Network:
    value = os.environ.get("MINICTR_SUBNET") or DEFAULT_SUBNET
    try:
        subnet = ipaddress.IPv4Network(value)
    except ValueError as e:
        raise StepError("check input", f"invalid MINICTR_SUBNET {value!r}",
                        hint="a private IPv4 network, as 10.123.0.0/24") from e
    if subnet.num_addresses < 4 or not subnet.is_private:
        raise StepError("check input", f"MINICTR_SUBNET {value} is unusable",
                        hint="a private IPv4 network of at least 4 addresses (/30)")
    return subnet


def default_route_interface(ipr: IPRoute) -> str | None:
    """The interface of the host's IPv4 default route: where outbound NAT goes. None when
    there is no default route (or only a multipath one)."""
    for route in ipr.get_default_routes(family=socket.AF_INET, table=254):
        if (oif := route.get_attr("RTA_OIF")) is not None:
            for link in ipr.get_links(oif):
                return str(link.get_attr("IFLA_IFNAME"))
    return None


def ensure_bridge(ipr: IPRoute) -> ipaddress.IPv4Interface:
    """minictr0 with its address, up, and the nft table: made if missing; the gateway.

    Called under the network lock: two runs never make it at once.
    """
    gateway = bridge_address(ipr)
    wanted = wanted_subnet()
    if gateway is not None and os.environ.get("MINICTR_SUBNET") and gateway.network != wanted:
        raise StepError("check input", f"{BRIDGE} exists with {gateway.network}, not "
                        f"MINICTR_SUBNET {wanted}",
                        hint="MINICTR_SUBNET counts when the bridge is made: minictr network "
                        "prune removes it, once no container uses it")
    if gateway is None:
        gateway = ipaddress.IPv4Interface(f"{next(wanted.hosts())}/{wanted.prefixlen}")
        make_bridge(ipr, gateway)
    if _table_exists():
        return gateway
    outside = default_route_interface(ipr)
    if outside is None:
        note("the host has no IPv4 default route: containers reach the host and each other, "
             "nothing beyond (no outbound NAT)")
    with step("make the NAT rules, and the chain where -p puts its port rules",
              f"nft -f - <<'EOF'\n{nat_table(gateway.network, outside)}EOF",
              {errno.ENOENT: NO_NFT_HINT}, why="once, with the bridge: the containers' "
              "packets leave with the host's address, and -p has a chain to add to"):
        nft(nat_table(gateway.network, outside))
    if outside is not None:
        enable_forwarding()
    return gateway


def make_bridge(ipr: IPRoute, gateway: ipaddress.IPv4Interface) -> None:
    """ip link add minictr0 type bridge; ip addr add 10.123.0.1/24 dev minictr0; up"""
    check_subnet_is_free(ipr, gateway.network)
    with step(f"make the bridge {BRIDGE}: a switch the containers' veths plug into",
              f"ip link add {BRIDGE} type bridge", why="once, by the first container on "
              "the bridge: the others plug into it"), netlink_errors():
        ipr.link("add", ifname=BRIDGE, kind="bridge")
    index = _link_index(ipr, BRIDGE)
    with step("give the bridge the subnet's first address: the containers' gateway",
              f"ip addr add {gateway} dev {BRIDGE}", why="the containers' default route "
              "goes to it: the host's side of their subnet"), netlink_errors():
        ipr.addr("add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
    with step("bring the bridge up", f"ip link set {BRIDGE} up",
              why="a new link is down: no packet crosses it until it is up"), netlink_errors():
        ipr.link("set", index=index, state="up")
    with step("let the kernel route 127.0.0.1 out of the bridge (for -p to 127.0.0.1:HOSTPORT)",
              f"sysctl -w net.ipv4.conf.{BRIDGE}.route_localnet=1",
              why="the kernel drops packets to 127.0.0.0/8 that would leave the host's lo: "
              "without this, -p would not answer at 127.0.0.1"):
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1")


def check_subnet_is_free(ipr: IPRoute, subnet: ipaddress.IPv4Network) -> None:
    """Refuse a subnet that overlaps a route of the host: the host would lose that network
    (a LAN, a VPN, another runtime's bridge) to the containers, or they to it."""
    for route in ipr.route("dump", family=socket.AF_INET, table=254):
        if route["dst_len"] == 0 or route.get_attr("RTA_DST") is None:
            continue  # the default route overlaps everything
        routed = ipaddress.IPv4Network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}")
        if routed.overlaps(subnet):
            raise StepError("make the bridge", f"{subnet} overlaps {routed}, a network the "
                            "host routes already", hint="choose another with MINICTR_SUBNET, "
                            "as MINICTR_SUBNET=10.77.0.0/24")


def nat_table(subnet: ipaddress.IPv4Network, outside: str | None) -> str:
    """The nft table: NAT out of the host's default-route interface (if any), and the chains
    -p publishes ports in. Comments are part of the rules: `nft list table ip minictr`."""
    out = (f'        ip saddr {subnet} oifname "{outside}" masquerade comment "outbound NAT: '
           'containers leave with the host\'s address"\n') if outside else ""
    return (
        f"table ip {TABLE} {{\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f"{out}"
        f'        ip saddr 127.0.0.0/8 oifname "{BRIDGE}" masquerade comment "from '
        '127.0.0.1:HOSTPORT: answered to the bridge, not the container\'s lo"\n'
        f'        ip saddr {subnet} oifname "{BRIDGE}" ct status dnat masquerade comment '
        '"a container at a published port: answered through the host"\n'
        "    }\n"
        "    chain prerouting {\n"
        "        type nat hook prerouting priority dstnat; policy accept;\n"
        '        fib daddr type local jump published comment "to this host: a published '
        'port?"\n'
        "    }\n"
        "    chain output {\n"
        "        type nat hook output priority -100; policy accept;\n"
        '        fib daddr type local jump published comment "from this host to itself, '
        '127.0.0.1 too"\n'
        "    }\n"
        "    chain published {\n"
        "    }\n"
        "}\n"
    )


def _table_exists() -> bool:
    return run_nft("list", "table", "ip", TABLE).returncode == 0


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
FORWARD_BEFORE = STATE_DIR / "ip_forward.before"  # what to restore at network prune


def enable_forwarding() -> None:
    """Outbound NAT and -p from other machines need the host to forward packets, as Docker
    has it. What it was is kept, and `minictr network prune` puts it back."""
    before = IP_FORWARD.read_text().strip()
    if before == "1":
        return
    with step("let the host forward the containers' packets (network prune restores it)",
              "sysctl -w net.ipv4.ip_forward=1", why="the containers' packets cross the "
              "host, from the bridge to its outside interface: the host must route them"):
        FORWARD_BEFORE.write_text(before + "\n")
        IP_FORWARD.write_text("1")


# --- leases: one address per live container --------------------------------------------------


@contextmanager
def locked() -> Iterator[None]:
    """The network lock: making the bridge, leasing, publishing, pruning, one run at a time.
    Held for milliseconds, never for a container's life. Shell: flock LOCKFILE ..."""
    STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    (STATE_DIR / "leases").mkdir(exist_ok=True, mode=0o700)
    fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Lease(NamedTuple):
    """An address, held: ``fd`` is the flock-ed lease file, closed when the container goes."""

    address: ipaddress.IPv4Interface  # 10.123.0.2/24
    gateway: ipaddress.IPv4Address  # 10.123.0.1
    fd: int
    path: Path


def _try_lock(path: Path) -> int | None:
    """The lease file, flock-ed, or None when a live runtime holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _record_of(fd_or_path: int | Path) -> dict[str, Any]:
    try:
        if isinstance(fd_or_path, int):
            text = os.pread(fd_or_path, 65536, 0).decode()
        else:
            text = fd_or_path.read_text()
        return json.loads(text)
    except (OSError, ValueError):
        return {}


def allocate(gateway: ipaddress.IPv4Interface, record: dict[str, Any]) -> Lease:
    """The first free address after the gateway's, its lease file flock-ed and ``record``
    written in it. Under the network lock (for the ports), though flock alone would do."""
    subnet = gateway.network
    for ip in subnet.hosts():
        if ip == gateway.ip:
            continue
        path = STATE_DIR / "leases" / str(ip)
        fd = _try_lock(path)
        if fd is None:
            continue
        address = ipaddress.IPv4Interface(f"{ip}/{subnet.prefixlen}")
        data = json.dumps({"address": str(address), **record}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return Lease(address, gateway.ip, fd, path)
    raise StepError("allocate an address", f"no free address in {subnet}: every one is "
                    "held by a running container", hint="stop one; or, once none runs, make "
                    "the bridge anew with a larger MINICTR_SUBNET (minictr network prune)")


def held_leases() -> list[dict[str, Any]]:
    """The records of the leases a live runtime holds (call under the network lock)."""
    held = []
    for path in sorted((STATE_DIR / "leases").glob("*")):
        fd = _try_lock(path)
        if fd is None:
            held.append(_record_of(path))
        else:
            os.close(fd)
    return held


# --- published ports ------------------------------------------------------------------------


class Rule(NamedTuple):
    """A DNAT rule of the published chain, as `nft -j` lists it."""

    handle: int
    owner: str  # the first word of its comment: the container's id, 12 hex digits
    port: Port | None


def published_rules() -> list[Rule]:
    """The rules of the published chain (none when there is no table yet).
    Shell: nft -j list chain ip minictr published"""
    done = run_nft("-j", "list", "chain", "ip", TABLE, "published")
    if done.returncode != 0:
        return []
    rules = []
    for item in json.loads(done.stdout)["nftables"]:
        if "rule" in item:  # its comment: "<id, 12 hex> <port> <name>", as publish_script has it
            words = [*str(item["rule"].get("comment", "")).split(), "", ""]
            m = PORT_PATTERN.fullmatch(words[1])
            port = Port(int(m[1]), int(m[2]), m[3] or "tcp") if m else None
            rules.append(Rule(int(item["rule"]["handle"]), words[0], port))
    return rules


def check_host_port(port: Port, owners: dict[str, str]) -> None:
    """Refuse a host port minictr has published already, or that a host program listens on:
    DNAT would take its traffic away from it without a word."""
    for rule in published_rules():
        if rule.port and (rule.port.host, rule.port.protocol) == (port.host, port.protocol):
            who = owners.get(rule.owner, f"container {rule.owner} (dead: minictr prune)")
            raise StepError("publish a port", f"host port {port.host}/{port.protocol} is "
                            f"already published by {who}", hint="choose another HOSTPORT")
    kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT is no owner
        try:
            s.bind(("0.0.0.0", port.host))
        except OSError as e:
            raise StepError("publish a port", f"host port {port.host}/{port.protocol} is in "
                            "use by a program of the host", errno=e.errno,
                            hint=f"see which: ss -lnp '( sport = :{port.host} )'; or choose "
                            "another HOSTPORT") from e


def publish_script(cid: str, name: str, address: ipaddress.IPv4Interface,
                   ports: Sequence[Port]) -> str:
    return "".join(f"add rule ip {TABLE} published {p.protocol} dport {p.host} dnat to "
                   f'{address.ip}:{p.container} comment "{cid[:12]} {p} {name}"\n'
                   for p in ports)


def unpublish(owner: str) -> list[Rule]:
    """Delete every rule of the published chain whose comment starts with ``owner``."""
    rules = [r for r in published_rules() if r.owner == owner]
    if rules:
        script = "".join(f"delete rule ip {TABLE} published handle {r.handle}\n" for r in rules)
        with step(f"remove the port rules of {owner}", f"nft -f - <<'EOF'\n{script}EOF",
                  why="before its address is freed: the next container to get it must not "
                  "receive this one's ports"):
            nft(script)
    return rules


# --- one container on the bridge ------------------------------------------------------------


class Attachment:
    """A container's network: what was made for it, so that exactly that is undone."""

    def __init__(self, mode: str, *, cid: str = "", name: str = "",
                 ports: tuple[Port, ...] = ()) -> None:
        self.mode = mode
        self.cid = cid
        self.name = name
        self.ports = ports
        self.files: tuple[str, ...] = ()  # in $C, bound onto /etc/NAME by the init
        self.lease: Lease | None = None
        self.veth: str | None = None  # the host's end, once made
        self.netns_fd: int | None = None  # the container's namespace, held until veth is gone
        self.published = False
        self.mac: str | None = None  # eth0's, as the kernel chose it

    @property
    def waits_for_ready(self) -> bool:
        """The runtime configures eth0 before it tells the init {"ready": true} (bridge)."""
        return self.mode == "bridge"

    def as_dict(self) -> dict[str, Any]:
        """For state.json and `minictr inspect`."""
        d: dict[str, Any] = {"mode": self.mode}
        if self.mode == "host":
            d["note"] = "the host's network namespace: no network isolation"
        if self.lease is not None:
            d |= {"bridge": BRIDGE, "address": str(self.lease.address),
                  "gateway": str(self.lease.gateway), "mac": self.mac,
                  "veth": {"host": veth_name(self.cid), "container": "eth0"},
                  "ports": [str(p) for p in self.ports]}
        if self.files:
            d["etc_files"] = [f"/etc/{n}" for n in self.files]
        return d

    def connect(self, pid: int) -> None:
        """Give the container, whose init is ``pid``, its eth0: the veth pair, the address,
        the default route. The runtime does it from outside, while the init waits."""
        import pyroute2
        from pyroute2 import IPRoute

        assert self.lease is not None
        veth, lease = veth_name(self.cid), self.lease
        ns = f"/proc/{pid}/ns/net"
        with step("hold the container's network namespace until its veth is deleted",
                  f"exec {{fd}}<{ns}", why="first: the init could die meanwhile, and its "
                  "pid be reused; the fd names this namespace, whatever happens"):
            self.netns_fd = os.open(ns, os.O_RDONLY | os.O_CLOEXEC)
        if os.fstat(self.netns_fd).st_ino == os.stat("/proc/self/ns/net").st_ino:
            raise StepError("connect the container", f"process {pid} is in the host's network "
                            "namespace", hint="it must have unshared CLONE_NEWNET first")
        with IPRoute() as ipr:
            bridge = _link_index(ipr, BRIDGE)
            with step("make a veth pair: one end on the host, the other eth0 in the container",
                      f"ip link add {veth} type veth peer name eth0 netns {pid}",
                      why="by the runtime, from outside: the init, in its own network "
                      "namespace, cannot reach the host's"), \
                    netlink_errors():
                ipr.link("add", ifname=veth, kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": self.netns_fd})
            self.veth = veth
            with step("plug the host's end into the bridge, and bring it up",
                      f"ip link set {veth} master {BRIDGE} up", why="plugged in, the "
                      "container reaches the bridge and, through it, the others"), \
                    netlink_errors():
                ipr.link("set", index=_link_index(ipr, veth), master=bridge, state="up")
        # pyroute2 makes a socket in the namespace in a forked child. That child must not run
        # the runtime's own signal handlers (container.passing_signals_to: pyroute2 ends it
        # with SIGTERM, which they would pass on to the container's init): the defaults.
        pyroute2.config.disable_mp_signal = True
        with IPRoute(netns=ns, flags=0) as inside:  # flags=0: never create a namespace
            eth0 = _link_index(inside, "eth0")
            with step("give eth0 the container's address",
                      f"nsenter --net={ns} ip addr add {lease.address} dev eth0",
                      why="the address leased for it, so that no two containers share "
                      "one"), \
                    netlink_errors():
                inside.addr("add", index=eth0, address=str(lease.address.ip),
                            prefixlen=lease.address.network.prefixlen)
            with step("bring eth0 up", f"nsenter --net={ns} ip link set eth0 up",
                      why="a new link is down; the route below needs it up"), \
                    netlink_errors():
                inside.link("set", index=eth0, state="up")
            with step("send everything else to the bridge: the default route",
                      f"nsenter --net={ns} ip route add default via {lease.gateway}",
                      why="the subnet is on eth0; everything beyond it goes through the "
                      "host"), \
                    netlink_errors():
                inside.route("add", dst="0.0.0.0/0", gateway=str(lease.gateway))
            for link in inside.get_links(eth0):
                self.mac = link.get_attr("IFLA_ADDRESS")

    def detach(self) -> None:
        """Undo, in reverse: the port rules, the veth (both ends), the lease; tolerating what
        is gone already. Then let go of the namespace: the kernel frees it with only lo."""
        from pyroute2 import IPRoute

        try:
            if self.lease is None:
                return
            with locked():
                if self.published:
                    unpublish(self.cid[:12])
                if self.veth is not None:
                    with IPRoute() as ipr, step("delete the veth pair (its other end, eth0, "
                                                "goes with it)", f"ip link del {self.veth}",
                                                why="before the address is freed: no one "
                                                "else may get it while this link has it"), \
                            tolerating(errno.ENODEV, errno.ENOENT):
                        ipr.link("del", ifname=self.veth)
                with step(f"free the address {self.lease.address.ip}",
                          f"rm {self.lease.path}", why="last: the next container may "
                          "take the address"), tolerating(errno.ENOENT):
                    self.lease.path.unlink()
                os.close(self.lease.fd)
        finally:
            if self.netns_fd is not None:
                os.close(self.netns_fd)
                self.netns_fd = None


def veth_name(cid: str) -> str:
    return f"{VETH_PREFIX}{cid[:8]}"


@contextmanager
def attached(mode: str, ports: Sequence[Port], cid: str, name: str, hostname: str,
             directory: Path) -> Iterator[Attachment]:
    """A container's network, from before its shim starts to after it exits.

    none: nothing here (the init brings lo up). host: the /etc files only. bridge: under the
    network lock, the bridge (made once), an address, the port rules; all refused, with
    nothing left made, for a taken port or a full subnet. `Attachment.connect(pid)` then
    makes eth0; leaving the block undoes it all.
    """
    att = Attachment(mode, cid=cid, name=name, ports=tuple(ports))
    if mode != "bridge":
        att.files = write_files(directory, mode, hostname)
        yield att
        return
    from pyroute2 import IPRoute

    try:
        with locked(), IPRoute() as ipr:
            forget_stale(ipr)
            gateway = ensure_bridge(ipr)
            with step("lease an address: the first file of the subnet no runtime flock-s",
                      f"flock -n {STATE_DIR}/leases/ADDRESS ...", why="before the shim "
                      "exists: a full subnet is refused with nothing started"):
                att.lease = allocate(gateway, {"container": cid, "name": name,
                                               "veth": veth_name(cid),
                                               "ports": [str(p) for p in ports],
                                               "root": os.environ.get("MINICTR_ROOT", "")})
            note(f"the container's address: {att.lease.address.ip}")
            if ports:
                owners = {r.get("container", "")[:12]: r.get("name", "?")
                          for r in held_leases()}
                for port in ports:
                    check_host_port(port, owners)
                script = publish_script(cid, name, att.lease.address, ports)
                with step("publish the ports: DNAT from the host's port to the container's",
                          f"nft -f - <<'EOF'\n{script}EOF", why="before the shim exists: "
                          "a port another container has is refused first"):
                    nft(script)
                att.published = True
        att.files = write_files(directory, mode, hostname, att.lease.address)
        yield att
    finally:
        att.detach()


# --- what is there, and what is left --------------------------------------------------------


def forget_stale(ipr: IPRoute) -> list[str]:
    """Remove what dead containers left (a runtime killed with SIGKILL undoes nothing): the
    lease files no one holds, the port rules and veths of no live lease. Under the lock."""
    removed = []
    leases = STATE_DIR / "leases"
    for path in sorted(leases.glob("*")) if leases.is_dir() else []:
        fd = _try_lock(path)
        if fd is None:
            continue  # held: its container runs
        record = _record_of(fd)
        path.unlink()
        os.close(fd)
        if record:
            removed.append(f"{path.name}  {record.get('name', '-')}  (address of a dead "
                           "container)")
    live = held_leases()
    owners = {r.get("container", "")[:12] for r in live}
    for rule in published_rules():
        if rule.owner not in owners:
            unpublish(rule.owner)
            removed.append(f"port {rule.port or rule.handle}  (rule of a dead container)")
    veths = {r.get("veth") for r in live}
    for link in ipr.get_links():
        ifname = str(link.get_attr("IFLA_IFNAME"))
        if VETH_PATTERN.fullmatch(ifname) and ifname not in veths:
            with step("delete a dead container's veth", f"ip link del {ifname}",
                      why="its runtime was killed and undid nothing; its address may be "
                      "leased again"), \
                    tolerating(errno.ENODEV, errno.ENOENT):
                ipr.link("del", ifname=ifname)
            removed.append(f"{ifname}  (veth of a dead container)")
    return removed


def stale_leftovers() -> list[str]:
    """For `minictr prune`: forget_stale, under the lock, only if a lease or a veth is there
    at all (else no pyroute2 import)."""
    leases = STATE_DIR / "leases"
    veths = [n for n in os.listdir("/sys/class/net") if VETH_PATTERN.fullmatch(n)]
    if not veths and not (leases.is_dir() and any(leases.iterdir())):
        return []
    from pyroute2 import IPRoute

    with locked(), IPRoute() as ipr:
        return forget_stale(ipr)


def describe() -> dict[str, Any]:
    """`minictr network ls`: the bridge, its subnet, NAT, and the addresses in use."""
    from pyroute2 import IPRoute

    with locked(), IPRoute() as ipr:
        gateway = bridge_address(ipr)
        outside = default_route_interface(ipr)
        table = _table_exists()
        leases = held_leases()
    return {"bridge": BRIDGE if gateway else None,
            "subnet": str(gateway.network) if gateway else None,
            "gateway": str(gateway.ip) if gateway else None,
            "nat": f"masquerade out of {outside}" if table and outside else None,
            "ip_forward": IP_FORWARD.read_text().strip() == "1",
            "leases": leases}


def prune() -> tuple[list[str], int]:
    """`minictr network prune`: what dead containers left, then the bridge and the nft table
    if no container uses them (and ip_forward as it was). Returns what was removed, and how
    many running containers keep the bridge."""
    from pyroute2 import IPRoute

    with locked(), IPRoute() as ipr:
        removed = forget_stale(ipr)
        users = len(held_leases())
        if users:
            return removed, users
        if _table_exists():
            with step("remove the NAT and port rules", f"nft delete table ip {TABLE}",
                      why="no container uses the bridge any more"):
                nft(f"delete table ip {TABLE}\n")
            removed.append(f"table ip {TABLE}  (nft)")
        if _link_index(ipr, BRIDGE) is not None:
            with step(f"remove the bridge {BRIDGE}", f"ip link del {BRIDGE}",
                      why="after its rules: nothing refers to it any more"), \
                    tolerating(errno.ENODEV, errno.ENOENT):
                ipr.link("del", ifname=BRIDGE)
            removed.append(BRIDGE)
        if FORWARD_BEFORE.exists():
            before = FORWARD_BEFORE.read_text().strip()
            with step("put ip_forward back as it was", f"sysctl -w net.ipv4.ip_forward={before}",
                      why="minictr turned it on for its containers; none is left"):
                IP_FORWARD.write_text(before)
                FORWARD_BEFORE.unlink()
            removed.append(f"net.ipv4.ip_forward={before}  (restored)")
    return removed, 0
