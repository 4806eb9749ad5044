"""Images as stacks of layers: stored once by digest, commit, rmi, df, image inspect, and a
Debian image from debootstrap. (Import and export, against umoci and skopeo: test_image_io.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import refused, tree_digest

pytestmark = pytest.mark.root


def inspect_image(minictr, name: str) -> dict:
    r = minictr("image", "inspect", name, check=True)
    return json.loads(r.stdout)[0]


def merged_listing(minictr, image: str, path: str = "/etc") -> list[str]:
    r = minictr("run", "--rm", image, "sh", "-c", f"cd {path} && find . | sort", check=True)
    return r.stdout.split()


def test_a_layer_is_stored_once(minictr, minictr_root):
    minictr("run", "--name", "a", "busybox", "touch", "/a", check=True)
    minictr("run", "--name", "b", "busybox", "touch", "/b", check=True)
    assert len(list((minictr_root / "layers").glob("*.json"))) == 1
    layer = Path(inspect_image(minictr, "busybox")["layers"][0]["path"])
    lowers = [json.loads(minictr("inspect", n).stdout)[0]["lower"] for n in ("a", "b")]
    assert lowers == [[str(layer)], [str(layer)]]
    assert layer.parent == minictr_root / "layers"


def test_commit_keeps_the_containers_final_view(minictr, minictr_root):
    script = ("echo hi > /root/new; rm /etc/hosts; rm -rf /home && mkdir /home && "
              "touch /home/fresh; chmod 600 /etc/passwd")
    minictr("run", "--name", "c1", "busybox", "sh", "-c", script, check=True)
    view = minictr("run", "--rm", "busybox", "true")  # (the image itself is unchanged)
    assert view.returncode == 0
    r = minictr("commit", "c1", "step1", check=True)
    assert "2 layers" in r.stdout
    info = inspect_image(minictr, "step1")
    assert len(info["layers"]) == 2
    assert info["config"]["cmd"] == ["sh", "-c", script]  # the container's command, as Docker
    out = minictr("run", "--rm", "step1", "sh", "-c",
                  "cat /root/new; ls /home; test -e /etc/hosts || echo no-hosts; "
                  "stat -c %a /etc/passwd", check=True).stdout.split()
    assert out == ["hi", "fresh", "no-hosts", "600"]
    # a container of the committed image, committed again, stacks a third layer
    minictr("run", "--name", "c2", "step1", "sh", "-c", "rm /root/new; echo 2 > /two",
            check=True)
    minictr("commit", "c2", "step2", check=True)
    info2 = inspect_image(minictr, "step2")
    assert [x["digest"] for x in info2["layers"][:2]] == [x["digest"] for x in info["layers"]]
    out = minictr("run", "--rm", "step2", "sh", "-c",
                  "ls /root; cat /two; ls /home; test -e /etc/hosts || echo no-hosts",
                  check=True).stdout.split()
    assert out == ["2", "fresh", "no-hosts"]
    # diff and the report know a file from any lower layer
    minictr("run", "--name", "c3", "step2", "sh", "-c", "echo x >> /two; rm /home/fresh",
            check=True)
    d = minictr("diff", "c3", check=True).stdout.splitlines()
    assert "C /two" in d and "D /home/fresh" in d


def test_commit_bad_input(minictr):
    minictr("run", "--name", "c1", "busybox", "true", check=True)
    refused(minictr("commit", "nosuch", "x"), "no such container")
    refused(minictr("commit", "c1", "busybox"), "already in use")
    refused(minictr("commit", "c1", "bad:name"), "invalid image name")


def test_rmi_is_refused_while_used(minictr, minictr_root):
    minictr("run", "--name", "c1", "busybox", "touch", "/x", check=True)
    minictr("commit", "c1", "child", check=True)
    refused(minictr("rmi", "busybox"), "container c1 uses busybox")
    minictr("rm", "c1", check=True)
    refused(minictr("rmi", "busybox"), "image child is built on busybox")
    refused(minictr("rmi", "nosuch"), "no such image")
    before = tree_digest(minictr_root / "layers")
    refused(minictr("rmi", "child", "nosuch"), "no such image")  # all or nothing
    assert tree_digest(minictr_root / "layers") == before
    r = minictr("rmi", "child", check=True)
    assert "Deleted: sha256:" in r.stdout  # its own top layer went; the base stays
    assert len(list((minictr_root / "layers").glob("*.json"))) == 1
    minictr("rmi", "busybox", check=True)
    assert list((minictr_root / "layers").iterdir()) == []
    assert list((minictr_root / "images").glob("*.json")) == []


def test_df_counts_each_layer_once(minictr):
    for n in range(3):
        minictr("run", "--name", f"c{n}", "busybox", "sh", "-c", "echo 12345 > /f", check=True)
    minictr("commit", "c0", "mine", check=True)
    out = minictr("df", check=True).stdout
    layer_lines = [line for line in out.splitlines() if "image busybox" in line]
    assert len(layer_lines) == 1  # the base layer: one line, used by both images, 3 containers
    assert "image mine" in layer_lines[0] and "container c2" in layer_lines[0]
    assert "sharing saves" in out


def test_image_inspect(minictr):
    minictr("image", "build", "busybox", check=True)
    info = inspect_image(minictr, "busybox")
    assert info["name"] == "busybox"
    assert info["config"]["cmd"] == ["/bin/sh"]
    assert info["layers"][0]["digest"].startswith("sha256:")
    assert Path(info["layers"][0]["path"], "bin/busybox").is_file()


@pytest.mark.slow
def test_debian_from_debootstrap(minictr):
    """Downloads ~40 MB from deb.debian.org and takes ~30 s: the only such test."""
    r = minictr("image", "build", "debian", timeout=600)
    assert r.returncode == 0, r.stderr
    r = minictr("run", "--rm", "debian", "sh", "-c", "cat /etc/debian_version; id -un",
                check=True)
    version, user = r.stdout.split()
    assert version[0].isdigit() and user == "root"
    r = minictr("run", "--rm", "debian", "sh", "-c", "apt-get --version | head -1", check=True)
    assert r.stdout.startswith("apt ")


def test_two_names_for_the_same_layers_can_both_go(minictr, minictr_root):
    """An image re-imported under another name has the same stack: neither is built on the
    other, so each can be removed; a container of one blocks only that one."""
    minictr("image", "build", "busybox", check=True)
    minictr("run", "--name", "c1", "busybox", "true", check=True)
    out = minictr_root / "bb.tar"
    minictr("image", "export", "busybox", out, check=True)
    minictr("image", "import", out, "twin", check=True)
    refused(minictr("rmi", "busybox"), "container c1 uses busybox")
    minictr("rmi", "twin", check=True)  # c1 is busybox's, not twin's
    minictr("rm", "c1", check=True)
    minictr("rmi", "busybox", check=True)
    assert list((minictr_root / "layers").iterdir()) == []
