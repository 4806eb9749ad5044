"""Bad input gets one clear line on stderr, exit 125, and changes nothing in MINICTR_ROOT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import refused, tree_digest

pytestmark = pytest.mark.root


@pytest.fixture
def built(minictr, minictr_root):
    """A store with the busybox image and one exited container called `taken`."""
    minictr("run", "--name", "taken", "busybox", "true", check=True)
    return minictr_root


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "nosuchimage"], ["no such image", "minictr images"]),
        (["run", "../etc", "true"], ["invalid image name"]),
        (["run", "busy,box", "true"], ["invalid image name"]),
        (["run", "--name", "../escape", "busybox"], ["invalid container name"]),
        (["run", "--name", "a,b", "busybox"], ["invalid container name"]),
        (["run", "--name", "a:b", "busybox"], ["invalid container name"]),
        (["run", "--name=-dash", "busybox"], ["invalid container name"]),
        (["run", "--name", "", "busybox"], ["invalid container name"]),
        (["run", "--name", "x" * 64, "busybox"], ["invalid container name"]),
        (["run", "--name", "taken", "busybox"], ["already in use", "minictr rm taken"]),
        (["run", "--hostname", "bad host", "busybox"], ["invalid hostname"]),
        (["run", "-e", "=value", "busybox"], ["invalid environment variable"]),
        (["run", "-e", "A=1\nB=2", "busybox"], ["a line break", "its own -e"]),
        (["run", "--userns", "1:4294967294", "busybox"], ["holds ids of this host's accounts",
                                                          "user daemon (1)"]),
        (["run", "--bogus", "busybox"], ["unrecognized arguments"]),
        (["run"], ["required"]),
        (["frobnicate"], ["invalid choice"]),
        (["image", "build", "nosuch"], ["invalid choice"]),
        (["diff", "nosuch"], ["no such container", "minictr ps -a"]),
        (["inspect", "taken", "nosuch"], ["no such container"]),
        (["rm", "taken", "nosuch"], ["no such container"]),
    ],
)
def test_refused_and_nothing_changed(minictr, built, args, words):
    before = tree_digest(built)
    refused(minictr(*args), *words)
    assert tree_digest(built) == before


# As a user without root, `minictr run busybox`. The interpreter starts as root and loads all
# of minictr first, then becomes nobody: an attendee who cloned as root has the checkout (and
# its .venv) under /root, mode 700, where nobody could not even start python.
AS_NOBODY = """
import importlib, os, pkgutil, sys
import minictr
for module in pkgutil.walk_packages(minictr.__path__, "minictr."):
    if module.name != "minictr.__main__":  # that one runs minictr
        importlib.import_module(module.name)
os.chdir("/")
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
from minictr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_not_root(minictr_root):
    env = {**os.environ, "MINICTR_ROOT": str(minictr_root / "store")}
    result = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, "run", "busybox"],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
    )
    refused(result, "must run as root", "try sudo minictr run busybox")
    assert not (minictr_root / "store").exists()


def test_upper_on_overlayfs_is_refused(minictr, tmp_path_factory):
    base = Path(tmp_path_factory.mktemp("ovl", numbered=True))
    for d in ("lower", "upper", "work", "merged"):
        (base / d).mkdir()
    merged = base / "merged"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work", merged],
                   check=True)
    try:
        result = minictr("run", "busybox", "true", env={"MINICTR_ROOT": str(merged / "state")})
        refused(result, "overlay cannot use", "MINICTR_ROOT")
        assert list((merged / "state" / "containers").iterdir()) == []
        assert list((merged / "state" / "layers").iterdir()) == []  # checked before building
    finally:
        subprocess.run(["umount", merged], check=True)


def test_unusable_state_directory(minictr):
    refused(minictr("ps", env={"MINICTR_ROOT": "relative/path"}), "MINICTR_ROOT")
    refused(minictr("ps", env={"MINICTR_ROOT": "/var/tmp/a,b"}), "MINICTR_ROOT")
    refused(minictr("ps", env={"MINICTR_ROOT": "/var/tmp/a\\b"}), "MINICTR_ROOT")
    assert not os.path.exists("/var/tmp/a\\b")
    assert not Path("/var/tmp/a,b").exists()
