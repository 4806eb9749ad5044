"""What root in a container may still do: capabilities, no_new_privs, masked and read-only paths.

Root in a container is uid 0, the same uid 0 as on the host (unless --userns). Namespaces and
pivot_root take away the paths out; what takes away root's *powers* is this module, with the
same defaults as Docker's:

    protection                  what it stops                                     function
    capability bounding set     mount, insmod, raw I/O, ptrace, settimeofday...   drop_capabilities
      (Docker's 14 kept)        27 capabilities no container needs
    no_new_privs                a setuid binary or file capability raising a      set_no_new_privs
                                process back to what was dropped
    masked paths                reading /proc/kcore (kernel memory), /proc/keys,  mask_paths
                                /sys/firmware ...: /dev/null or an empty tmpfs
                                is mounted over them
    read-only paths             writing /proc/sys (the whole machine's sysctls),  make_read_only
                                /proc/sysrq-trigger (crash or reboot the host)
    nodev root, /dev, /dev/shm  opening a disk through a node made with mknod     overlay, rootfs
                                (CAP_MKNOD is one of the 14: the node can be
                                made, never opened. Docker uses its device
                                cgroup for that; a nodev mount is the simple way)

The order, in container.init_container, and why:
  1. masks and read-only paths: once /proc and /sys are mounted (before, there is nothing to
     mask), and before pivot_root, while all of the container's mounts are made under merged/;
  2. capabilities: last of all the privileged steps, just before exec. Every step before
     needs them: mount needs CAP_SYS_ADMIN, and shrinking the bounding set needs CAP_SETPCAP;
  3. no_new_privs: right before exec. It needs no privilege, and it is what makes the drop
     stick: from the exec on, no setuid bit can give back what was dropped.

See: capabilities(7), prctl(2) PR_CAPBSET_DROP and PR_SET_NO_NEW_PRIVS, proc(5),
     https://github.com/moby/moby/blob/master/oci/caps/defaults.go and oci/defaults.go
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import prctl

from minictr import libc
from minictr.errors import StepError
from minictr.explain import note, step
from minictr.run.mounts import Mount, shell
from minictr.spec import IdMap, RunSpec

# Every capability, by its number (<linux/capability.h>; capsh --print names them the same).
CAPABILITIES = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid",
    "cap_kill", "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable",
    "cap_net_bind_service", "cap_net_broadcast", "cap_net_admin", "cap_net_raw",
    "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot",
    "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
    "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
    "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override", "cap_mac_admin",
    "cap_syslog", "cap_wake_alarm", "cap_block_suspend", "cap_audit_read", "cap_perfmon",
    "cap_bpf", "cap_checkpoint_restore",
)

# Docker's default 14: what an ordinary program run as root needs (chown its files, bind port
# 80, ping, chroot, mknod...), and nothing that reaches the kernel or other containers.
DEFAULT_CAPABILITIES = (
    "cap_chown", "cap_dac_override", "cap_fowner", "cap_fsetid", "cap_kill", "cap_setgid",
    "cap_setuid", "cap_setpcap", "cap_net_bind_service", "cap_net_raw", "cap_sys_chroot",
    "cap_mknod", "cap_audit_write", "cap_setfcap",
)

# The dropped ones the one-line report names first: what a student has heard of.
NOTABLE = ("cap_sys_admin", "cap_sys_module", "cap_sys_ptrace", "cap_net_admin", "cap_sys_rawio",
           "cap_sys_time", "cap_sys_boot")

# Docker's masked paths (moby oci/defaults.go), files first. A file is hidden by /dev/null
# mounted over it, a directory by an empty read-only tmpfs; what the machine lacks is skipped.
MASKED_PATHS = (
    "/proc/kcore",  # the kernel's memory, as an ELF core file
    "/proc/keys",  # the keys of every keyring the kernel holds
    "/proc/timer_list",  # every timer of every CPU, with the addresses of kernel functions
    "/proc/sched_debug",  # every task of the host, by name (before Linux 5.13)
    "/proc/latency_stats",  # kernel stack traces
    "/proc/timer_stats",  # who sets timers, by pid (before Linux 4.11)
    "/proc/acpi",  # ACPI's controls
    "/proc/asound",  # the sound cards
    "/proc/scsi",  # SCSI's controls: add or remove disks
    "/sys/firmware",  # the firmware's tables (ACPI, EFI variables)
    "/sys/devices/virtual/powercap",  # the CPUs' energy counters (the PLATYPUS attack)
)

# Docker's read-only paths: readable, as programs expect, but not writable even by root.
READ_ONLY_PATHS = (
    "/proc/sys",  # sysctls: most are the whole machine's, not the container's
    "/proc/sysrq-trigger",  # "echo b >" reboots the host at once
    "/proc/irq",  # which CPU takes which interrupt
    "/proc/bus",  # PCI devices' configuration space
    "/proc/fs",  # filesystem drivers' settings
)

# Mount flags that a remount must keep: dropping one the mount has fails with EPERM when the
# mount is locked (made in a more privileged namespace). statvfs(3) ST_* have the same values.
_KEPT_FLAGS = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


# The report's security lines fit 80 columns after "security: " (cli.print_report).
SUMMARY_WIDTH = 80 - len("security: ")


class Mounted(NamedTuple):
    """What the init did of a policy's paths, as it told the runtime: those it mounted over,
    and those this kernel does not have (nothing to hide there, nothing was mounted)."""

    masked: tuple[str, ...]
    masked_absent: tuple[str, ...]
    read_only: tuple[str, ...]
    read_only_absent: tuple[str, ...]


class Policy(NamedTuple):
    """What one container is allowed: the capabilities it keeps, the paths hidden from it."""

    kept: tuple[str, ...]  # capabilities in its bounding set, by number
    dropped: tuple[str, ...]  # the others this kernel has
    masked: tuple[str, ...]  # paths to hide, whether this kernel has them or not
    read_only: tuple[str, ...]  # paths to make read-only, likewise
    sys_read_only: bool  # /sys mounted read-only
    privileged: bool  # --privileged
    userns: IdMap | None = None  # --userns
    no_new_privs: bool = True
    mounted: Mounted | None = None  # what the init did of masked and read_only; None until then

    def with_mounted(self, masked: Sequence[str], read_only: Sequence[str]) -> Policy:
        """The policy, with what the init reports it mounted (its message {"mounted": ...}).
        Of the paths asked for, those it did not mount are those this kernel lacks: a mount
        that fails stops the start instead. A name not asked for is ignored."""
        return self._replace(mounted=Mounted(
            tuple(p for p in self.masked if p in masked),
            tuple(p for p in self.masked if p not in masked),
            tuple(p for p in self.read_only if p in read_only),
            tuple(p for p in self.read_only if p not in read_only)))

    def summary(self) -> str:
        """The report's lines, one fact each: what was done, not what was asked. At most
        SUMMARY_WIDTH columns each, so that after "security: " they fit an 80-column
        projector; cli.print_report indents the second and later lines under the first.

            14 capabilities kept, 27 dropped (cap_sys_admin, cap_sys_module, ...)
            no_new_privs: setuid bits and file capabilities grant nothing
            4 paths masked (7 absent on this kernel), 4 read-only (1 absent)
        """
        if self.privileged:
            lines = [f"--privileged: all {len(self.kept)} capabilities minictr has",
                     "nothing masked or read-only, /sys writable",
                     "still no_new_privs, and only the safe devices (unlike Docker)"]
        else:
            lines = [self._capabilities_line(),
                     "no_new_privs: setuid bits and file capabilities grant nothing"]
            if (m := self.mounted) is None:  # the init has not said yet
                lines.append(f"{len(self.masked)} paths to mask, {len(self.read_only)} to make "
                             "read-only (not mounted yet)")
            else:
                plural = "" if len(m.masked) == 1 else "s"
                lines.append(f"{len(m.masked)} path{plural} masked"
                             + (f" ({len(m.masked_absent)} absent on this kernel)"
                                if m.masked_absent else "")
                             + f", {len(m.read_only)} read-only"
                             + (f" ({len(m.read_only_absent)} absent)" if m.read_only_absent
                                else ""))
        if self.userns:
            lines.append(f"--userns: root is host uid {self.userns.host}, "
                         f"{self.userns.size} ids from there")
        return "\n".join(lines)

    def _capabilities_line(self) -> str:
        """"14 capabilities kept, 27 dropped (cap_sys_admin, cap_sys_module, ...)": the
        notable dropped ones first, as many as fit (one at least)."""
        kept = f"{len(self.kept)} capabilities kept"
        if not self.dropped:
            return f"{kept}, none dropped"
        named = [c for c in NOTABLE if c in self.dropped]
        named += [c for c in self.dropped if c not in NOTABLE]
        line = f"{kept}, {len(self.dropped)} dropped ({named[0]}"
        for i, name in enumerate(named[1:], start=1):
            more = ", ...)" if i + 1 < len(named) else ")"
            if len(f"{line}, {name}{more}") > SUMMARY_WIDTH:
                return f"{line}, ...)"
            line += f", {name}"
        return f"{line})"

    def as_dict(self) -> dict[str, object]:
        """For state.json, and so `minictr inspect`: the paths masked and made read-only are
        those the init mounted, and the absent ones are apart (all null until it has said)."""
        m = self.mounted
        return {"capabilities": {"kept": list(self.kept), "dropped": list(self.dropped)},
                "no_new_privs": self.no_new_privs,
                "masked_paths": None if m is None else list(m.masked),
                "masked_paths_absent": None if m is None else list(m.masked_absent),
                "read_only_paths": None if m is None else list(m.read_only),
                "read_only_paths_absent": None if m is None else list(m.read_only_absent),
                "sys_read_only": self.sys_read_only,
                "privileged": self.privileged, "nodev": ["/", "/dev", "/dev/shm"],
                "userns": None if self.userns is None else
                {"uid_map": self.userns.line, "gid_map": self.userns.line}}


# --- on the host, before anything is made --------------------------------------------------


def parse_capabilities(names: Sequence[str]) -> tuple[str, ...]:
    """--cap-add/--cap-drop names as Docker takes them (NET_ADMIN, CAP_NET_ADMIN, net_admin,
    ALL), as capsh names them: cap_net_admin. An unknown name is bad input."""
    parsed = []
    for name in names:
        canonical = name.strip().lower()
        if canonical == "all":
            parsed.append("ALL")
            continue
        if not canonical.startswith("cap_"):
            canonical = "cap_" + canonical
        if canonical not in CAPABILITIES:
            raise StepError("check input", f"unknown capability {name!r}",
                            hint="use a name from capabilities(7), such as NET_ADMIN or "
                            "cap_net_admin, or ALL (capsh --print lists this machine's)")
        parsed.append(canonical)
    return tuple(parsed)


def kernel_capabilities() -> tuple[str, ...]:
    """The capabilities this kernel has, by number. One newer than this table is named by its
    number, "cap_41": never kept, unless --cap-add ALL. Shell: cat /proc/sys/kernel/cap_last_cap
    """
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return CAPABILITIES[: last + 1] + tuple(f"cap_{n}" for n in range(len(CAPABILITIES), last + 1))


def number(cap: str) -> int:
    """cap_sys_admin → 21; cap_41 → 41."""
    return CAPABILITIES.index(cap) if cap in CAPABILITIES else int(cap.removeprefix("cap_"))


def own_bounding_set() -> frozenset[str]:
    """The capabilities minictr itself may still have: no process can give more.
    Shell: grep CapBnd /proc/self/status; capsh --decode=HEX"""
    return frozenset(c for n, c in enumerate(kernel_capabilities()) if prctl.capbset_read(n))


def policy(spec: RunSpec) -> Policy:
    """The capabilities to keep, as Docker computes them: its 14 (all of them with
    --privileged), minus --cap-drop (ALL: all), plus --cap-add (ALL: all). What minictr
    itself lacks cannot be granted: asked for by --cap-add, that is an error."""
    known = kernel_capabilities()
    adds = set(known) if "ALL" in spec.cap_add else set(spec.cap_add)
    drops = set(known) if "ALL" in spec.cap_drop else set(spec.cap_drop)
    base = set(known) if spec.privileged else set(DEFAULT_CAPABILITIES)
    wanted = (base - drops) | adds
    own = own_bounding_set()
    asked = set() if "ALL" in spec.cap_add else adds  # ALL: all that can be had
    if missing := sorted(asked - own, key=number):
        cap = missing[0]
        why = ("this kernel does not have it" if cap not in known else
               "minictr itself lacks it (its bounding set: does it run under capsh --drop, "
               "or in a container?), and no process can give what it does not have")
        raise StepError("check input", f"--cap-add {cap}: cannot be granted: {why}",
                        hint=f"leave out --cap-add {cap}, or run minictr where it has it "
                        "(capsh --print: Bounding set)")
    kept = tuple(c for c in known if c in wanted and c in own)
    dropped = tuple(c for c in known if c not in kept)
    if spec.privileged:
        return Policy(kept, dropped, (), (), sys_read_only=False, privileged=True,
                      userns=spec.userns)
    return Policy(kept, dropped, MASKED_PATHS, READ_ONLY_PATHS, sys_read_only=True,
                  privileged=False, userns=spec.userns)


def bounding_set_hex(caps: Sequence[str]) -> str:
    """As /proc/PID/status shows CapBnd: Docker's 14 are 00000000a80425fb."""
    return f"{sum(1 << number(c) for c in caps):016x}"


# --- in the container's init, before pivot_root -------------------------------------------


def mask_paths(merged: Path, paths: Sequence[str]) -> tuple[str, ...]:
    """Hide what a container must not read: /dev/null over a file, an empty read-only tmpfs
    over a directory, as runc does. Paths this machine lacks are skipped. Returns the paths
    masked, for the init to report (the report's security line and inspect list only those).
    Shell: mount --bind /dev/null merged/proc/kcore
           mount -t tmpfs -o ro,nosuid,nodev,noexec,mode=555 tmpfs merged/sys/firmware
    """
    present = tuple(p for p in paths if os.path.lexists(f"{merged}{p}"))
    masks = [mask_mount(f"{merged}{p}") for p in present]  # decided once: shown, then done
    if masks:
        with step("mask paths that show the host's kernel: /dev/null or an empty tmpfs over "
                  "them", "\n".join(shell(m) for m in masks),
                  why="once /proc and /sys are there to mask, and before pivot_root, while "
                  "every mount of the container is made under merged/"):
            for m in masks:
                libc.mount(*m)
    if missing := [p for p in paths if p not in present]:
        note(f"not on this machine, nothing to mask: {' '.join(missing)}")
    return present


def mask_mount(target: str) -> Mount:
    """The mount(2) call that hides ``target``: an empty read-only tmpfs over a directory
    (mode 555: nothing can be made in it), /dev/null bound over anything else (it reads as
    empty, and writes vanish). Shell: as mask_paths shows"""
    if os.path.isdir(target):
        return Mount("tmpfs", target, "tmpfs", libc.MS_RDONLY | _KEPT_FLAGS, "mode=555")
    return Mount("/dev/null", target, None, libc.MS_BIND)


def make_read_only(merged: Path, paths: Sequence[str]) -> tuple[str, ...]:
    """Make kernel paths read-only: a bind mount of each onto itself, then a remount of that
    bind with MS_RDONLY. The remount keeps the nosuid, nodev and noexec the path has (from
    statvfs): a remount that would clear a locked flag fails with EPERM. Paths this machine
    lacks are skipped. Returns the paths made read-only, for the init to report.
    Shell: mount --rbind P P && mount -o remount,bind,ro,nosuid,nodev,noexec P
    See: mount(2) "Creating a bind mount", "Remounting an existing mount"
    """
    present = tuple(p for p in paths if os.path.lexists(f"{merged}{p}"))
    name = "make kernel paths read-only: /proc/sys and others"
    try:
        pairs = [read_only_mounts(f"{merged}{p}") for p in present]
    except OSError as e:  # statvfs: the path went away (it cannot: nothing else runs yet)
        raise StepError.from_os_error(name, e) from e
    if pairs:
        with step(name, "\n".join(f"{shell(bind)} && {shell(remount)}" for bind, remount in pairs),
                  why="writing them changes the whole machine, not the container; before "
                  "pivot_root, as the masks are"):
            for bind, remount in pairs:
                libc.mount(*bind)
                libc.mount(*remount)
    if missing := [p for p in paths if p not in present]:
        note(f"not on this machine, nothing to make read-only: {' '.join(missing)}")
    return present


def read_only_mounts(target: str) -> tuple[Mount, Mount]:
    """The two mount(2) calls that make ``target`` read-only: a bind of it onto itself, then
    a remount of that bind, read-only, keeping the nosuid, nodev and noexec it has.

    The flags are read before the bind: a bind mount copies the flags of the mount its source
    is on (mount(2)), so they are the same after it, and the shell line can show them.
    Shell: mount --rbind T T && mount -o remount,bind,ro,KEPT T       See: statvfs(3)
    """
    kept = os.statvfs(target).f_flag & _KEPT_FLAGS
    return (Mount(target, target, None, libc.MS_BIND | libc.MS_REC),
            Mount(target, target, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | kept))


# --- in the container's init, the last steps before exec ----------------------------------


def drop_capabilities(kept: Sequence[str], dropped: Sequence[str]) -> None:
    """Cut the bounding set to ``kept``, clear the inheritable set, and so the ambient one.

    The bounding set is what matters: when root execs a program, its permitted and effective
    sets become exactly the bounding set (capabilities(7), "Transformation of capabilities
    during execve()"), so the command starts with ``kept`` and can never gain another, by
    any means. Permitted and effective are cut now too, so that this process itself holds
    nothing more for its last step. The ambient set needs no call of its own: a capability
    removed from the inheritable set is removed from the ambient set too (capabilities(7)),
    which python-prctl has no call for anyway.
    Shell: capsh --drop=CAP,CAP... --inh= --noamb     See: prctl(2) PR_CAPBSET_DROP
    """
    numbers = [number(c) for c in dropped]
    settable = set(prctl.ALL_CAPS)  # those python-prctl knows; the bounding set takes any
    line = (f"capsh --drop={','.join(dropped)} --inh= --noamb" if dropped
            else "capsh --inh= --noamb")
    with step(f"drop capabilities: keep {len(kept)}, drop {len(dropped)}; clear inheritable "
              "and ambient", line, why="last of the privileged steps: every one above "
              "needs root's full powers (mount: CAP_SYS_ADMIN), and this one CAP_SETPCAP"):
        for n in numbers:  # needs CAP_SETPCAP, so before the effective set loses it
            prctl.capbset_drop(n)
        prctl.set_caps(([n for n in numbers if n in settable],
                        [prctl.CAP_EFFECTIVE, prctl.CAP_PERMITTED], False),
                       (sorted(settable), prctl.CAP_INHERITABLE, False))


def set_no_new_privs() -> None:
    """From the exec on, no setuid bit and no file capability can raise this process or its
    children: what was dropped stays dropped. It can never be unset.
    Shell: setpriv --no-new-privs     See: prctl(2) PR_SET_NO_NEW_PRIVS
    """
    with step("set no_new_privs: a setuid binary will not run as its owner",
              "setpriv --no-new-privs", why="right before the exec: from it on, no setuid "
              "binary or file capability gives back what was dropped"):
        prctl.set_no_new_privs(1)
