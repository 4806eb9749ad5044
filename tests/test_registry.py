"""pull, push, login and logout against real registries on 127.0.0.1 (tests/registries.py).

One set of registries for the module, filled once with skopeo from images made here: busybox
and two commits on it (a whiteout, an opaque directory, random bytes), as OCI with gzip
layers, as Docker schema 2, with zstd layers; an index of the test's own (this machine's
platform, another one, and an attestation); the same in a registry with htpasswd Basic auth
and in one with token auth. Every test pulls into its own fresh store.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minictr.images.oci import machine_arch
from tests.helpers import refused, scaled
from tests.registries import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    DockerRegistry,
    Image,
    TokenServer,
    canonical,
    layer_tar,
    manifest_digest,
    sha256,
    store_is_empty,
    upload,
)

pytestmark = pytest.mark.root
PASSWORD = "correct horse battery staple"
OTHER_ARCH = "amd64" if machine_arch() == "arm64" else "arm64"
OTHER = f"linux/{OTHER_ARCH}" + ("/v8" if OTHER_ARCH == "arm64" else "")
VIEW = "cat /one /three; ls /home; test -e /etc/hosts || echo gone"


@dataclass
class World:
    base: Path
    plain: DockerRegistry
    basic: DockerRegistry
    bearer: DockerRegistry
    tokens: TokenServer
    three: list[str]  # the layers of image `three`, as its maker's store has them
    solo: list[str]
    source: Path  # that store


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", *args], check=True,
                   capture_output=True, timeout=scaled(120))


def make_images(store: Path, base: Path) -> tuple[list[str], list[str]]:
    env = {**os.environ, "MINICTR_ROOT": str(store)}

    def mt(*args: str | Path) -> str:
        return subprocess.run([sys.executable, "-m", "minictr", *map(str, args)], env=env,
                              check=True, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=scaled(120)).stdout

    mt("image", "build", "busybox")
    mt("run", "--name", "c1", "busybox", "sh", "-c",
       "echo one > /one; rm /etc/hosts; rm -rf /home; mkdir /home; touch /home/fresh")
    mt("commit", "c1", "two")
    mt("run", "--name", "c2", "two", "sh", "-c",
       "echo three > /three; head -c 300000 /dev/urandom > /noise")
    mt("commit", "c2", "three")
    mt("run", "--name", "c3", "busybox", "sh", "-c", "head -c 200000 /dev/urandom > /solo")
    mt("commit", "c3", "solo")
    for name in ("three", "solo"):
        mt("image", "export", name, base / f"{name}.tar")

    def layers(name: str) -> list[str]:
        return [x["digest"] for x in json.loads(mt("image", "inspect", name))[0]["layers"]]

    return layers("three"), layers("solo")


def fill_index(plain: DockerRegistry, three: Path) -> None:
    """test/multi:1, an OCI index: this machine's platform (three), another one (a layer of
    its own), and an attestation that describes the first, as BuildKit adds one."""
    skopeo(f"oci-archive:{three}:three", f"docker://{plain.host}/test/multi:native")
    native = manifest_digest(plain.host, "test/multi", "native")
    native_size = len(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false",
         f"docker://{plain.host}/test/multi:native"], capture_output=True, check=True).stdout)
    other = Image([layer_tar({"etc": None, "etc/arch": OTHER_ARCH.encode()})],
                  architecture=OTHER_ARCH)
    upload(plain.host, "test/multi", list(other.blobs.values()), other.manifest, "other")
    statement = canonical({"_type": "https://in-toto.io/Statement/v0.1", "subject": []})
    config = canonical({"architecture": "unknown", "os": "unknown", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [sha256(statement)]}})
    attestation = canonical({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": sha256(statement),
                    "size": len(statement)}]})
    upload(plain.host, "test/multi", [config, statement], attestation, "attestation")
    arm = {"variant": "v8"} if OTHER_ARCH == "arm64" else {}
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": native, "size": native_size,
         "platform": {"architecture": machine_arch(), "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": sha256(other.manifest), "size": len(other.manifest),
         "platform": {"architecture": OTHER_ARCH, "os": "linux", **arm}},
        {"mediaType": OCI_MANIFEST, "digest": sha256(attestation), "size": len(attestation),
         "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                         "vnd.docker.reference.digest": native}}]})
    upload(plain.host, "test/multi", [], index, "1", OCI_INDEX)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    base = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="minictr-test-registries-"))
    started: list[DockerRegistry | TokenServer] = []
    try:
        plain = DockerRegistry(base / "plain")
        started.append(plain)
        basic = DockerRegistry(base / "basic", auth="htpasswd", users={"alice": PASSWORD})
        started.append(basic)
        tokens = TokenServer(base / "tokens", {"alice": PASSWORD})
        started.append(tokens)
        bearer = DockerRegistry(base / "bearer", auth="token", token_server=tokens)
        started.append(bearer)
        three, solo = make_images(base / "store", base)
        src = f"oci-archive:{base / 'three.tar'}:three"
        skopeo(src, f"docker://{plain.host}/test/three:1")
        skopeo("--format", "v2s2", src, f"docker://{plain.host}/test/three:v2s2")
        skopeo("--dest-compress-format", "zstd", "--dest-compress", src,
               f"docker://{plain.host}/test/three-zstd:1")
        skopeo(f"oci-archive:{base / 'solo.tar'}:solo", f"docker://{plain.host}/test/tamper:1")
        fill_index(plain, base / "three.tar")
        creds = ["--dest-creds", f"alice:{PASSWORD}"]
        skopeo(*creds, src, f"docker://{basic.host}/test/three:1")
        skopeo(*creds, src, f"docker://{bearer.host}/public/three:1")
        skopeo(*creds, src, f"docker://{bearer.host}/private/three:1")
        yield World(base, plain, basic, bearer, tokens, three, solo, base / "store")
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(base)


@pytest.fixture(autouse=True)
def _own_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Credentials in a directory of the test's own, never the machine's ~/.docker."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("MINICTR_REGISTRY_MIRROR", raising=False)
    return tmp_path / "docker"


def layers_of(minictr, name: str) -> list[str]:
    r = minictr("image", "inspect", name, check=True)
    return [x["digest"] for x in json.loads(r.stdout)[0]["layers"]]


def blob_gets(registry: DockerRegistry, since: int) -> list[str]:
    return [path for method, path, _ in registry.requests()[since:]
            if method == "GET" and "/blobs/" in path]


# --- pull ------------------------------------------------------------------------------------


def test_pull_by_tag_stores_the_same_layers_and_runs(minictr, world):
    ref = f"{world.plain.host}/test/three:1"
    r = minictr("pull", ref, check=True)
    assert r.stdout.startswith(f"pulling {ref} (linux/{machine_arch()})")
    assert r.stdout.count("downloaded and stored") == 3
    assert f"pulled {ref}: 3 layers" in r.stdout
    assert layers_of(minictr, ref) == world.three  # byte for byte the layers it was made of
    out = minictr("run", "--rm", ref, "sh", "-c", VIEW, check=True).stdout
    assert out == "one\nthree\nfresh\ngone\n"
    assert ref in minictr("images", check=True).stdout


def test_a_second_pull_downloads_nothing(minictr, world):
    ref = f"{world.plain.host}/test/three:1"
    minictr("pull", ref, check=True)
    before = len(world.plain.requests())
    r = minictr("pull", ref, check=True)
    digest = manifest_digest(world.plain.host, "test/three", "1")
    assert r.stdout == f"{ref}: up to date ({digest[:19]}…): downloaded nothing\n"
    assert blob_gets(world.plain, before) == []
    # the same manifest by its digest: a new name, the same layers, nothing downloaded
    before = len(world.plain.requests())
    r = minictr("pull", f"{world.plain.host}/test/three@{digest}", check=True)
    assert "stored already as" in r.stdout and blob_gets(world.plain, before) == []
    assert layers_of(minictr, f"{world.plain.host}/test/three@{digest}") == world.three
    # Docker's schema 2 of it: another manifest and config, the same layer tars: the config
    before = len(world.plain.requests())
    r = minictr("pull", f"{world.plain.host}/test/three:v2s2", check=True)
    assert r.stdout.count("stored already") == 3
    assert len(blob_gets(world.plain, before)) == 1
    assert len(list((Path(os.environ["MINICTR_ROOT"]) / "layers").glob("*.json"))) == 3


def test_zstd_and_docker_schema2_layers(minictr, world):
    for tag in ("three-zstd:1", "three:v2s2"):
        ref = f"{world.plain.host}/test/{tag}"
        r = minictr("pull", ref, check=True)
        assert r.stdout.count("downloaded and stored") == 3, r.stdout
        assert ("zstd" in r.stdout) == ("zstd" in tag)
        assert layers_of(minictr, ref) == world.three
        minictr("rmi", ref, check=True)
    assert store_is_empty(Path(os.environ["MINICTR_ROOT"])) == []


def test_an_index_is_resolved_to_this_platform_skipping_the_attestation(minictr, world):
    ref = f"{world.plain.host}/test/multi:1"
    r = minictr("pull", "--explain", ref, check=True)
    assert layers_of(minictr, ref) == world.three
    assert f"linux/{machine_arch()}: sha256:" in r.stderr
    attestation = manifest_digest(world.plain.host, "test/multi", "attestation")
    assert f"/manifests/{attestation}" not in r.stderr  # never fetched
    r = minictr("pull", "--platform", OTHER, ref, check=True)  # the tag, for that platform
    (layer,) = layers_of(minictr, ref)
    root = Path(os.environ["MINICTR_ROOT"])
    assert (root / "layers" / layer.removeprefix("sha256:") / "etc/arch").read_text() == \
        OTHER_ARCH
    assert len(list((root / "layers").glob("*.json"))) == 1  # the old tag's layers went
    r = minictr("pull", "--platform", "linux/s390x", ref)
    refused(r, "has no image for linux/s390x", f"linux/{machine_arch()}", OTHER)
    assert "unknown" not in r.stderr
    refused(minictr("pull", "--platform", "windows/amd64", ref), "not Linux images")
    refused(minictr("pull", "--platform", "linux", ref), "invalid platform")


def test_a_single_manifest_for_another_platform_is_refused(minictr, world):
    digest = manifest_digest(world.plain.host, "test/multi", "other")
    ref = f"{world.plain.host}/test/multi@{digest}"
    refused(minictr("pull", ref), f"for {OTHER.rsplit('/v8', 1)[0]} only", "--platform")
    minictr("pull", "--platform", OTHER, ref, check=True)


def test_pull_by_digest_and_run_it(minictr, world):
    digest = manifest_digest(world.plain.host, "test/three", "1")
    ref = f"{world.plain.host}/test/three@{digest}"
    r = minictr("run", "--rm", ref, "sh", "-c", VIEW, check=True)
    assert r.stdout == "one\nthree\nfresh\ngone\n"
    assert f"{ref} is not in the store: pulling it" in r.stderr
    r = minictr("run", "--rm", ref, "cat", "/three", check=True)  # now it is
    assert "pulling" not in r.stderr and r.stdout == "three\n"
    refused(minictr("pull", f"{world.plain.host}/test/three@sha256:{'0' * 64}"), "not found")


def test_a_tampered_blob_is_refused_and_nothing_is_left(minictr, world):
    blob = world.plain.blob_path(json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false",
         f"docker://{world.plain.host}/test/tamper:1"], capture_output=True, check=True,
    ).stdout)["layers"][-1]["digest"])
    good = blob.read_bytes()
    try:
        blob.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])  # one bit, same size
        r = minictr("pull", f"{world.plain.host}/test/tamper:1")
        assert r.returncode == 125
        last = r.stderr.strip().splitlines()
        assert len(last) == 1 and "digest mismatch for layer 2 of 2" in last[0], r.stderr
        assert store_is_empty(Path(os.environ["MINICTR_ROOT"])) == []
    finally:
        blob.write_bytes(good)
    minictr("pull", f"{world.plain.host}/test/tamper:1", check=True)  # a re-run works
    assert layers_of(minictr, f"{world.plain.host}/test/tamper:1") == world.solo


def test_mirror_for_docker_hub(minictr, world):
    mirror = {"MINICTR_REGISTRY_MIRROR": f"http://{world.plain.host}"}
    r = minictr("pull", "test/three:1", env=mirror, check=True)
    assert f"from http://{world.plain.host}" in r.stdout
    assert layers_of(minictr, "test/three:1") == world.three
    assert layers_of(minictr, "docker.io/test/three:1") == world.three  # the same name


# --- credentials -----------------------------------------------------------------------------


def test_basic_auth_login_and_logout(minictr, world, _own_docker_config):
    host = world.basic.host
    ref = f"{host}/test/three:1"
    refused(minictr("pull", ref), "denied anonymously", f"minictr login {host}")
    refused(minictr("login", "-u", "alice", "--password-stdin", host, input="wrong\n"),
            "refused alice's password")
    assert not (_own_docker_config / "config.json").exists()
    r = minictr("login", "-u", "alice", "--password-stdin", host, input=PASSWORD + "\n",
                check=True)
    assert r.stdout == "Login Succeeded\n"
    config = _own_docker_config / "config.json"
    assert config.stat().st_mode & 0o777 == 0o600
    entry = json.loads(config.read_text())["auths"][host]["auth"]
    assert base64.b64decode(entry).decode() == f"alice:{PASSWORD}"  # docker login's format
    r = minictr("pull", "--explain", ref, check=True)
    assert layers_of(minictr, ref) == world.three
    for secret in (PASSWORD, entry):
        assert secret not in r.stdout + r.stderr
    assert '-u alice:"$PASSWORD"' in r.stderr
    assert minictr("logout", host, check=True).stdout == \
        f"Removing login credentials for {host}\n"
    assert json.loads(config.read_text())["auths"] == {}
    assert minictr("logout", host, check=True).stdout == f"Not logged in to {host}\n"
    refused(minictr("pull", ref), "denied anonymously")


def test_a_docker_login_is_a_minictr_login(minictr, world, _own_docker_config):
    """Written by `docker login` (its key with a scheme, other keys around it): read."""
    _own_docker_config.mkdir()
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    (_own_docker_config / "config.json").write_text(json.dumps({
        "auths": {f"https://{world.basic.host}": {"auth": auth}, "ghcr.io": {"auth": "eA=="}},
        "psFormat": "table"}))
    minictr("pull", f"{world.basic.host}/test/three:1", check=True)
    minictr("logout", world.basic.host, check=True)
    kept = json.loads((_own_docker_config / "config.json").read_text())
    assert kept == {"auths": {"ghcr.io": {"auth": "eA=="}}, "psFormat": "table"}


def test_token_auth(minictr, world):
    host = world.bearer.host
    r = minictr("pull", "--explain", f"{host}/public/three:1", check=True)
    assert f"curl -s '{world.tokens.url}/token?service=" in r.stderr
    assert '-H "Authorization: Bearer $TOKEN"' in r.stderr
    assert ("", "repository:public/three:pull") in world.tokens.issued
    assert "eyJ" not in r.stderr + r.stdout  # no JWT is ever printed
    refused(minictr("pull", f"{host}/private/three:1"), "denied anonymously",
            f"minictr login {host}")
    minictr("image", "build", "busybox", check=True)
    refused(minictr("push", "busybox", f"{host}/private/mine:1"), "denied anonymously")
    minictr("login", "-u", "alice", "--password-stdin", host, input=PASSWORD, check=True)
    r = minictr("push", "--explain", "busybox", f"{host}/private/mine:1", check=True)
    assert ("alice", "repository:private/mine:pull,push") in world.tokens.issued
    assert PASSWORD not in r.stdout + r.stderr and "eyJ" not in r.stderr
    minictr("pull", f"{host}/private/three:1", check=True)


# --- push ------------------------------------------------------------------------------------


def test_push_then_pull_back_the_same_digests(minictr, minictr_root, world, tmp_path):
    host = world.plain.host
    minictr("run", "--name", "c", "busybox", "sh", "-c", "echo pushed > /pushed; rm /etc/group",
            check=True)
    minictr("commit", "c", "app", check=True)
    local = layers_of(minictr, "app")
    before = len(world.plain.requests())
    r = minictr("push", "app", f"{host}/team/app:1", check=True)
    digest = r.stdout.splitlines()[-1].removeprefix("digest: ")
    assert "3 blobs uploaded" in r.stdout  # two layers and the config
    inspect = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                         f"docker://{host}/team/app:1"], capture_output=True,
                                        check=True).stdout)
    assert inspect["Digest"] == digest
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", "--tls-verify=false",
                                        f"docker://{host}/team/app:1"], capture_output=True,
                                       check=True).stdout)
    assert config["rootfs"]["diff_ids"] == local  # the layers' digests are their diff_ids
    assert config["config"]["Cmd"] == ["sh", "-c", "echo pushed > /pushed; rm /etc/group"]
    uploads = [m for m, p, _ in world.plain.requests()[before:] if m in ("PUT", "PATCH")]
    assert uploads.count("PATCH") == 0 and uploads.count("PUT") == 4  # 3 blobs, 1 manifest
    # again: HEAD finds every blob, the manifest is the same
    before = len(world.plain.requests())
    r = minictr("push", "app", f"{host}/team/app:1", check=True)
    assert "0 blobs uploaded" in r.stdout and r.stdout.endswith(f"digest: {digest}\n")
    assert [m for m, p, _ in world.plain.requests()[before:] if m == "POST"] == []
    # in chunks, to another repository (where no blob is yet): the same manifest
    before = len(world.plain.requests())
    r = minictr("push", "app", f"{host}/team/chunked:1",
                env={"MINICTR_PUSH_CHUNK_SIZE": "65536"}, check=True)
    assert r.stdout.endswith(f"digest: {digest}\n")
    assert [m for m, p, _ in world.plain.requests()[before:]].count("PATCH") > 10
    # into another store: the very layers
    other = tmp_path / "other-store"
    other.mkdir()
    minictr("pull", f"{host}/team/chunked:1", env={"MINICTR_ROOT": str(other)}, check=True)
    r = minictr("image", "inspect", f"{host}/team/chunked:1", env={"MINICTR_ROOT": str(other)},
                check=True)
    assert [x["digest"] for x in json.loads(r.stdout)[0]["layers"]] == local
    out = minictr("run", "--rm", f"{host}/team/chunked:1", "sh", "-c",
                  "cat /pushed; test -e /etc/group || echo gone",
                  env={"MINICTR_ROOT": str(other)}, check=True).stdout
    assert out == "pushed\ngone\n"
    refused(minictr("push", "app", f"{host}/team/app@sha256:{'a' * 64}"), "push to a tag")
    refused(minictr("push", "nothing", f"{host}/team/app:1"), "no such image: nothing")


# --- names -----------------------------------------------------------------------------------


def test_local_names_and_references_are_never_confused(minictr, world):
    minictr("image", "build", "busybox", check=True)
    refused(minictr("run", "alpine"), "no such image: alpine", "alpine:latest")
    ref = f"{world.plain.host}/test/three:1"
    minictr("pull", ref, check=True)
    names = [line.split()[0] for line in minictr("images").stdout.splitlines()[1:]]
    assert sorted(names) == sorted(["busybox", ref])
    r = minictr("run", "--rm", "busybox", "true", check=True)  # the recipe's, never pulled
    assert "pull" not in r.stderr
    root = Path(os.environ["MINICTR_ROOT"])
    files = sorted(p.name for p in (root / "images").glob("*.json"))
    assert files == sorted(["busybox.json",
                            ref.replace(":", "%3A").replace("/", "%2F") + ".json"])
    assert minictr("rmi", ref, check=True).stdout.startswith(f"Untagged: {ref}")
    for bad in ("team/UPPER:1", "a/../b:1", "x:tag with space", "x:$(reboot)", "x\x1b]0;t\a:1",
                "ex/a:" + "t" * 129, "registry.example/" + "a" * 300):
        r = minictr("pull", bad)
        refused(r, "invalid reference")
        assert "\x1b" not in r.stderr and "\a" not in r.stderr
    with contextlib.suppress(FileNotFoundError):
        assert not any((root / "images").glob("*..*"))
