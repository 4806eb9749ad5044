#!/bin/sh
# Escape attempts, made from inside a container as its root: busybox sh, no other tools.
#
#   sh -c "$(cat tests/probe.sh)" probe [NAME...]        (no NAME: all of them)
#
# One line each:  NAME <tab> blocked | ALLOWED | n/a <tab> what happened
#   blocked: the kernel refused; ALLOWED: the attempt worked; n/a: it could not be tried here
#   (the kernel has no such thing, or the container could not even set the attempt up).
# tests/test_security.py runs it under minictr and under runc's default spec. Inputs:
#   PROBE_TMP        a writable directory where executables and setuid bits work (/tmp)
#   PROBE_DISK       "MAJOR MINOR" of the host's disk (the block device of the host's /)
#   PROBE_HOST_PATH  a path that exists on the host only
#   PROBE_HOST_PID   the pid, on the host, of a host process, and PROBE_HOST_COMM its name
T=${PROBE_TMP:-/tmp}

say() { printf '%s\t%s\t%s\n' "$1" "$2" "$(echo "$3" | tr '\n\t' '  ')"; }

probe_mount() {  # needs CAP_SYS_ADMIN
    mkdir -p "$T/probe-mnt"
    if out=$(mount -t tmpfs probe "$T/probe-mnt" 2>&1); then
        umount "$T/probe-mnt"
        say mount ALLOWED "mounted a tmpfs"
    else
        say mount blocked "$out"
    fi
}

probe_module() {  # needs CAP_SYS_MODULE; the file is no module, so the kernel reads and rejects it
    printf 'not a module' > "$T/probe.ko"
    out=$(insmod "$T/probe.ko" 2>&1)
    case $out in
        *"not permitted"*) say module blocked "$out" ;;
        *"not implemented"*|*"does not support"*) say module n/a "this kernel cannot load modules at all: $out" ;;
        *) say module ALLOWED "the kernel took the file and read it: $out" ;;
    esac
}

probe_hostname() {  # needs CAP_SYS_ADMIN, and reaches only the container's UTS namespace
    before=$(hostname)
    if out=$(hostname probe-escape 2>&1); then
        hostname "$before"
        say hostname ALLOWED "changed the hostname of its own UTS namespace"
    else
        say hostname blocked "$out"
    fi
}

probe_sysctl() {  # /proc/sys is the whole machine's: read-only
    f=/proc/sys/kernel/printk_ratelimit
    value=$(cat $f)
    if out=$( { echo "$value" > $f; } 2>&1); then
        say sysctl ALLOWED "wrote $f (its own value back)"
    else
        say sysctl blocked "$out"
    fi
}

read_kernel_file() {  # NAME FILE: masked (empty), or refused
    if [ ! -e "$2" ]; then
        say "$1" n/a "this kernel has no $2"
        return
    fi
    n=$(head -c 64 "$2" 2>"$T/probe-err" | wc -c)
    if [ "$n" -gt 0 ]; then
        say "$1" ALLOWED "read $n bytes of $2"
    else
        say "$1" blocked "read 0 bytes of $2 $(cat "$T/probe-err")"
    fi
}

probe_kcore() { read_kernel_file kcore /proc/kcore; }
probe_timer_list() { read_kernel_file timer_list /proc/timer_list; }

probe_disk() {  # mknod needs CAP_MKNOD; opening the node needs a mount without nodev
    major=${PROBE_DISK% *}
    minor=${PROBE_DISK#* }
    status=blocked
    detail=""
    for d in /dev "$T" /dev/shm; do
        node="$d/probe-disk"
        if ! err=$(mknod "$node" b "$major" "$minor" 2>&1); then
            detail="$detail $d: mknod: ${err##*: };"
            continue
        fi
        n=$(head -c 512 "$node" 2>"$T/probe-err" | wc -c)
        if [ "$n" -gt 0 ]; then
            status=ALLOWED
            detail="$detail $d: read $n bytes of the host's disk;"
        else
            detail="$detail $d: mknod ok, open: $(sed 's/.*: //' "$T/probe-err");"
        fi
        rm -f "$node"
    done
    say disk "$status" "$detail"
}

probe_host_process() {  # the PID namespace
    p=/proc/$PROBE_HOST_PID
    if [ -r "$p/comm" ] && [ "$(cat "$p/comm")" = "$PROBE_HOST_COMM" ]; then
        say host_process ALLOWED "sees the host's $PROBE_HOST_COMM as $p"
    else
        set -- /proc/[0-9]*
        say host_process blocked "no $p ($PROBE_HOST_COMM) here, only its own: $*"
    fi
}

probe_root_escape() {  # pivot_root, then the host's old root detached
    for p in "/..$PROBE_HOST_PATH" "/../../..$PROBE_HOST_PATH" "/proc/1/root$PROBE_HOST_PATH" \
             "/proc/1/root/../..$PROBE_HOST_PATH" "/proc/self/root/..$PROBE_HOST_PATH" \
             "/proc/1/cwd/../../..$PROBE_HOST_PATH"; do
        if [ -e "$p" ]; then
            say root_escape ALLOWED "reached the host's $PROBE_HOST_PATH as $p"
            return
        fi
    done
    say root_escape blocked "no path leads to the host's $PROBE_HOST_PATH: not .., not /proc/1/root"
}

probe_setuid() {  # no_new_privs: nobody runs a setuid-root copy of busybox's su
    dir="$T/probe-suid"
    if ! out=$(mkdir -p "$dir" && cp /bin/busybox "$dir/busybox" && ln -sf busybox "$dir/su" \
               && chmod 4755 "$dir/busybox" && chmod 755 "$dir" 2>&1); then
        say setuid n/a "could not make a setuid binary: $out"
        return
    fi
    # busybox su refuses with "must be suid" when its euid is not 0: the setuid bit gave nothing.
    # With euid 0 it asks for root's password (and, reading /dev/null, gets it wrong).
    out=$(su -s /bin/sh nobody -c "$dir/su -c id root" </dev/null 2>&1)
    case $out in
        *"must be suid"*) say setuid blocked "as nobody, the setuid-root su did not run as root: $out" ;;
        *[Pp]assword*) say setuid ALLOWED "as nobody, the setuid-root su ran as root: $out" ;;
        *) say setuid n/a "could not become nobody to try: $out" ;;
    esac
    rm -rf "$dir"
}

if [ $# -eq 0 ]; then
    set -- mount module hostname sysctl kcore timer_list disk host_process root_escape setuid
fi
for name in "$@"; do
    "probe_$name"
done
