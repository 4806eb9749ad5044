#!/usr/bin/env bash
# Install what minictr needs, and only what is missing, on Ubuntu 24.04 or Debian 12.
#
#   sudo make setup            (make run and make test do it first)
#   sudo scripts/setup.sh      (the same; any cwd: the repo is found from this file's place)
#
# The Vagrantfile provisions the workshop box with this same script. Run it as often as you
# like: when everything is there it changes nothing, says so, and takes well under a second.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup: needs root (it installs packages and links /usr/local/bin/minictr)" >&2
    echo "run: sudo make setup" >&2
    exit 1
fi

# This file is <repo>/scripts/setup.sh. Vagrant must run it from the synced folder, not
# through `provision path:`, which uploads a lone copy to /tmp.
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
if [[ ! -f $repo/pyproject.toml ]]; then
    echo "setup: $repo has no pyproject.toml: run scripts/setup.sh from inside the repo" >&2
    exit 1
fi
venv=$repo/.venv
stamp=$venv/.minictr-installed  # touched after pip install; older than pyproject.toml = redo
python=/usr/bin/python3          # the distribution's Python (3.12 on Ubuntu 24.04, 3.11 on Debian 12)
changed=()                       # what this run did, for the last line

say() { printf '=> %s\n' "$*"; }

# --- Debian/Ubuntu packages -----------------------------------------------------------------
# Each package, and why:
#   the busybox image is made of its one static binary     busybox-static
#   python-prctl (pyproject.toml) builds in the venv       libcap-dev python3-dev gcc
#   /usr/bin/python3 -m venv                               python3-venv
#   sudo make run, sudo make test                          make
#   the comparison in bench/                               runc
#   make test lints scripts/*.sh and .ci/run               shellcheck
#   make test checks the Vagrantfile parses (ruby -c)      ruby (about 40 MB)
#   the tutorial's tree, ip, nsenter, unshare, findmnt     tree iproute2 util-linux
#   minictr image build debian                             debootstrap debian-archive-keyring
#   the image tests' other side (OCI layouts, archives)    umoci skopeo
#   --network bridge: outbound NAT and -p (nft rules)      nftables
#   the security chapter decodes CapBnd with capsh         libcap2-bin
#   pull/push tests, chapter 11: a real registry on 127.0.0.1   docker-registry
#   its Basic auth: htpasswd -B (it reads bcrypt only)     apache2-utils
#   chapter 11 looks at a registry by hand                 curl
#   the token-auth test signs its JWTs, makes certificates openssl
#   run --init binds its static /usr/bin/tini-static       tini
packages=(busybox-static libcap-dev libcap2-bin python3-venv python3-dev gcc make runc shellcheck
          ruby tree iproute2 util-linux debootstrap debian-archive-keyring umoci skopeo nftables
          docker-registry apache2-utils curl openssl tini)
missing=()
for pkg in "${packages[@]}"; do
    # Status, not mere presence: a removed package whose config files remain is not installed.
    if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) != installed ]]; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    say "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
    changed+=("packages: ${missing[*]}")
    # docker-registry's package starts a registry on :5000 as a service. minictr's tests and
    # chapter 11 start their own (on 127.0.0.1, in a directory of theirs): not this one.
    if [[ " ${missing[*]} " == *" docker-registry "* ]] && [[ -d /run/systemd/system ]]; then
        systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
    fi
else
    say "packages: all ${#packages[@]} installed"
fi

# --- the venv -------------------------------------------------------------------------------
# Made by the distribution's Python: a venv made on the host (the repo is a synced folder in
# the Vagrant box) or by another Python cannot run here, so it is made again.
want=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
have=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
if [[ $have != "$want" ]] || ! grep -qx 'home = /usr/bin' "$venv/pyvenv.cfg" 2>/dev/null; then
    if [[ -e $venv ]]; then
        say "venv: .venv was not made by $python ($want), making it again"
    else
        say "venv: making .venv with $python ($want)"
    fi
    "$python" -m venv --clear "$venv"
    changed+=("venv")
fi
# Editable: minictr finds the repo's images/ recipes relative to its own source. The "compat"
# mode is a plain .pth path entry; the default mode installs an import hook that costs every
# `minictr run` about 10 ms at start-up (see bench/README.md). compileall writes the bytecode
# now, so the first run does not pay for compiling.
if [[ ! -e $stamp || $repo/pyproject.toml -nt $stamp || ! -x $venv/bin/minictr ]]; then
    say "venv: pip install -e '.[test]' (editable_mode=compat)"
    "$venv/bin/pip" install -q --disable-pip-version-check -e "${repo}[test]" \
        --config-settings editable_mode=compat
    "$venv/bin/python" -m compileall -q "$repo/minictr"
    touch "$stamp"
    changed+=("pip install")
else
    say "venv: minictr installed, pyproject.toml unchanged"
fi

# --- sudo minictr ---------------------------------------------------------------------------
# sudo's secure_path has /usr/local/bin, not the venv.
link=/usr/local/bin/minictr
target=$venv/bin/minictr
if [[ $(readlink "$link" || true) == "$target" ]]; then
    say "link: $link -> $target"
elif [[ -e $link && ! -L $link ]]; then
    say "link: $link exists and is not a link; left alone (use $target)"
else
    ln -sfn "$target" "$link"
    say "link: made $link -> $target"
    changed+=("link")
fi

# --- the kernel -----------------------------------------------------------------------------
if grep -qw overlay /proc/filesystems; then
    say "overlay: in the kernel"
elif command -v modprobe >/dev/null && modprobe overlay; then
    say "overlay: loaded the module"
    changed+=("modprobe overlay")
else
    echo "setup: this kernel has no overlay filesystem and modprobe overlay failed" >&2
    exit 1
fi

# --- where containers live ------------------------------------------------------------------
# MINICTR_ROOT holds the upper and work directories. Overlay cannot use a network or shared
# folder (vboxsf, nfs, 9p, ...) or another overlay as upperdir: it needs xattrs and whiteouts.
# So it must be on this machine's own disk, never in the repo when the repo is a synced folder.
state=${MINICTR_ROOT:-/var/lib/minictr}
probe=$state
while [[ ! -e $probe ]]; do probe=$(dirname -- "$probe"); done
fstype=$(findmnt -n -o FSTYPE --target "$probe")
case $fstype in
    vboxsf | nfs* | 9p | virtiofs | cifs | smb3 | fuse* | overlay)
        echo "setup: MINICTR_ROOT=$state is on $fstype, which overlay cannot use as upperdir" >&2
        echo "hint: leave MINICTR_ROOT unset (/var/lib/minictr) or put it on a local disk" >&2
        exit 1
        ;;
esac
say "state: $state on $fstype"

if ((${#changed[@]})); then
    printf -v summary '%s; ' "${changed[@]}"
    echo "setup: done (${summary%; })"
else
    echo "setup: nothing to do, nothing changed"
fi
