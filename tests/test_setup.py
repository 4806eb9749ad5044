"""The setup a workshop depends on: scripts/setup.sh, .ci/run, the Makefile, the Vagrantfile.

Cheap checks that fail when setup breaks: the scripts lint and parse, make knows its targets,
the Vagrantfile parses and says what the README promises, and setup refuses without root and
changes nothing the second time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import scaled

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = [REPO / "scripts" / "setup.sh", REPO / ".ci" / "run"]


def need(tool: str) -> str:
    """The tool's path; without it, skip, or in CI (where setup installs it) fail."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is missing, and scripts/setup.sh should have installed it")
        pytest.skip(f"{tool} is not installed (sudo make setup installs it)")
    return path


def run(*argv: str | os.PathLike[str], **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("cwd", REPO)
    return subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=scaled(120),
        **kwargs,
    )


def test_shellcheck_passes() -> None:
    result = run(need("shellcheck"), *SCRIPTS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_script_parses(script: Path) -> None:
    result = run("bash", "-n", script)
    assert result.returncode == 0, result.stderr


def test_ci_run_is_executable() -> None:
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_make_knows_the_readme_commands() -> None:
    result = run(need("make"), "-n", "setup", "run", "test")
    assert result.returncode == 0, result.stderr
    for command in (
        "scripts/setup.sh",
        ".venv/bin/minictr run --rm busybox",
        ".venv/bin/ruff check",
        "shellcheck scripts/*.sh .ci/run",
        ".venv/bin/pytest",
    ):
        assert command in result.stdout, f"make -n does not run {command!r}:\n{result.stdout}"


def test_vagrantfile_parses() -> None:
    result = run(need("ruby"), "-c", "Vagrantfile")
    assert result.returncode == 0, result.stderr


# No vagrant here: a stand-in Vagrant.configure runs the Vagrantfile and prints each setting
# it makes, as JSON: ["config.vm.box=", ["bento/ubuntu-24.04"], {}].
RECORD_VAGRANTFILE = r"""
require "json"
class Recorder
  def initialize(path)
    @path = path
  end

  def method_missing(name, *args, **kwargs, &block)
    path = "#{@path}.#{name}"
    puts JSON.generate([path, args, kwargs]) unless args.empty? && kwargs.empty?
    # provider "libvirt" do |lv, override|: lv is the provider's settings, override the config
    if block
      block.call(*[Recorder.new("#{path}[#{args.first}]"), Recorder.new("config")]
        .first([block.arity.abs, 1].max))
    end
    Recorder.new(path)
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  def self.configure(_version)
    yield Recorder.new("config")
  end
end

load ARGV[0]
"""


def vagrant_settings() -> list[tuple[str, list, dict]]:
    result = run(need("ruby"), "-e", RECORD_VAGRANTFILE, REPO / "Vagrantfile")
    assert result.returncode == 0, result.stderr
    return [tuple(json.loads(line)) for line in result.stdout.splitlines()]


def test_vagrantfile_gives_the_workshop_machine() -> None:
    settings = vagrant_settings()
    assert ("config.vm.box=", ["bento/ubuntu-24.04"], {}) in settings
    for provider in ("virtualbox", "libvirt"):
        assert (f"config.vm.provider[{provider}].cpus=", [2], {}) in settings
        assert (f"config.vm.provider[{provider}].memory=", [2048], {}) in settings
    synced = [args for name, args, _ in settings if name == "config.vm.synced_folder"]
    assert [".", "/home/vagrant/minictr"] in synced


def test_vagrantfile_provisions_with_setup_sh() -> None:
    provisions = [kw for name, _, kw in vagrant_settings() if name == "config.vm.provision"]
    assert len(provisions) == 1
    command = provisions[0]["inline"].split()
    # The script runs from the synced folder, so it must be the repo's own scripts/setup.sh.
    assert command == ["bash", "/home/vagrant/minictr/scripts/setup.sh"]
    assert (REPO / "scripts" / "setup.sh").is_file()


def test_setup_refuses_without_root() -> None:
    script = (REPO / "scripts" / "setup.sh").read_text()
    if os.geteuid() == 0:  # become nobody; the script comes on stdin, the repo may be 0700
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-s"]
    else:
        argv = ["bash", "-s"]
    result = subprocess.run(
        argv, input=script, capture_output=True, text=True, cwd="/", timeout=scaled(30)
    )
    assert result.returncode == 1
    assert "run: sudo make setup" in result.stderr
    assert result.stdout == ""  # it did nothing


@pytest.mark.root
def test_setup_again_changes_nothing() -> None:
    """make test ran setup just before: a second run, from anywhere, is a quick no-op."""
    started = time.monotonic()
    result = run(REPO / "scripts" / "setup.sh", cwd="/")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "setup: nothing to do, nothing changed", (
        f"setup did something (run sudo make setup first?):\n{result.stdout}"
    )
    assert elapsed < 10, f"a setup with nothing to do took {elapsed:.1f} s"


def test_ci_runs_the_suite_with_a_shared_root() -> None:
    """The users' hosts run systemd, whose / is shared: so does CI (.ci/run, unshare), and
    on the cgroup v2 VM systemd itself. A suite run only under a private / passed while a
    --userns run deleted the image on every user's box (issue 17)."""
    from tests.conftest import root_propagation

    if os.environ.get("CI") != "true":
        pytest.skip("outside CI, the suite runs in whatever namespace it was started in")
    assert root_propagation() == "shared", "run the suite as .ci/run does: unshare --mount " \
        "--propagation shared make test"
