"""A registry that lies, breaks off, loops or floods: one line, exit 125, nothing left.

The registry here is tests/registries.py's FakeRegistry, in this process: it serves a small
image from memory, and each test makes it misbehave in one way. After every refusal the store
must hold no image, no layer and no temporary directory.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import refused, scaled, start
from tests.registries import (
    OCI_LAYER_GZIP,
    FakeRegistry,
    Image,
    canonical,
    layer_tar,
    send,
    sha256,
    store_is_empty,
)

pytestmark = pytest.mark.root
LAYER = layer_tar({"etc": None, "etc/hello": b"hello from the fake registry\n"})


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    registry = FakeRegistry()
    registry.add("x/img", "1", Image([LAYER]))
    yield registry
    registry.stop()


def failed(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """As helpers.refused, but stdout may have the lines of the layers the pull started."""
    refused(subprocess.CompletedProcess(result.args, result.returncode, "", result.stderr),
            *words)
    assert all(line.startswith(("pulling ", "layer ")) for line in result.stdout.splitlines())


def nothing_left(root: Path) -> None:
    assert store_is_empty(root) == []


def blob_route(digest: str, answer):
    def route(h) -> bool:
        if h.path.endswith(f"/blobs/{digest}"):
            answer(h)
            return True
        return False
    return route


def test_the_fake_image_pulls(minictr, minictr_root, fake):
    r = minictr("pull", f"{fake.host}/x/img:1", check=True)
    assert "downloaded and stored" in r.stdout
    (layer,) = (minictr_root / "layers").glob("*/etc/hello")
    assert layer.read_text() == "hello from the fake registry\n"


def test_blob_redirect_to_a_cdn_gets_no_authorization(minictr, minictr_root, tmp_path,
                                                      monkeypatch):
    registry = FakeRegistry(basic=("bob", "pw"))
    cdn = FakeRegistry()
    try:
        image = Image([LAYER])
        registry.add("x/img", "1", image)
        layer = image.layer_digests[0]
        cdn.blobs["signed"] = image.blobs[layer]
        cdn.routes.append(lambda h: h.path.startswith("/signed?") and (
            send(h, 200, image.blobs[layer]) or True))
        registry.routes.append(blob_route(layer, lambda h: send(
            h, 307, b"", {"Location": f"http://{cdn.host}/signed?sig=abc"})))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        (tmp_path / "config.json").write_text(json.dumps({"auths": {registry.host: {
            "auth": base64.b64encode(b"bob:pw").decode()}}}))
        r = minictr("pull", "--explain", f"{registry.host}/x/img:1", check=True)
        assert "Location: http://" in r.stderr
        (got,) = [headers for method, path, headers in cdn.seen if path.startswith("/signed")]
        assert "Authorization" not in got  # the registry's credentials stay with it
        assert any(h.get("Authorization") for _, p, h in registry.seen if "/blobs/" in p)
    finally:
        registry.stop()
        cdn.stop()


def test_a_redirect_loop(minictr, minictr_root, fake):
    fake.routes.append(lambda h: "/blobs/" in h.path and (
        send(h, 302, b"", {"Location": h.path}) or True))
    failed(minictr("pull", f"{fake.host}/x/img:1"), "more than 5 redirects", "loop")
    nothing_left(minictr_root)


def test_a_10_gb_content_length(minictr, minictr_root, fake):
    image = Image([LAYER])
    fake.routes.append(blob_route(image.layer_digests[0], lambda h: send(
        h, 200, b"", {"Content-Length": str(10 << 30)})))
    failed(minictr("pull", f"{fake.host}/x/img:1"), f"offers {10 << 30} bytes", "descriptor")
    nothing_left(minictr_root)


def test_an_endless_blob(minictr, minictr_root, fake):
    """No Content-Length, and bytes for ever: read no further than the descriptor's size."""
    image = Image([LAYER])

    def endless(h) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for _ in range(10_000):  # 640 MB at most: the test must end either way
                h.wfile.write(b"\0" * 65536)
        except OSError:
            pass
        h.close_connection = True

    fake.routes.append(blob_route(image.layer_digests[0], endless))
    failed(minictr("pull", f"{fake.host}/x/img:1"), "size mismatch for layer 1 of 1",
           "more than the")
    nothing_left(minictr_root)


def test_a_manifest_naming_a_huge_layer(minictr, minictr_root, fake):
    image = Image([LAYER])
    doc = image.manifest_doc
    doc["layers"][0]["size"] = 1 << 40  # a terabyte
    fake.manifests["x/img/1"] = (doc["mediaType"], canonical(doc))
    failed(minictr("pull", f"{fake.host}/x/img:1"), "the layers to download are 1024.0 GiB")
    assert not [p for m, p, _ in fake.seen if p.endswith(image.layer_digests[0])]
    nothing_left(minictr_root)


def test_a_truncated_download_then_a_rerun(minictr, minictr_root, fake):
    image = Image([layer_tar({"big": os.urandom(1 << 20)})])
    fake.add("x/big", "1", image)
    layer = image.layer_digests[0]
    blob = image.blobs[layer]

    def cut(h) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(blob)))
        h.end_headers()
        h.wfile.write(blob[: len(blob) // 2])
        h.close_connection = True

    route = blob_route(layer, cut)
    fake.routes.append(route)
    failed(minictr("pull", f"{fake.host}/x/big:1"), "was cut short after", "pull again")
    nothing_left(minictr_root)
    fake.routes.remove(route)
    minictr("pull", f"{fake.host}/x/big:1", check=True)


def test_ctrl_c_mid_pull_leaves_nothing(minictr_root, fake):
    image = Image([layer_tar({"big": os.urandom(2 << 20)})])
    fake.add("x/slow", "1", image)
    layer = image.layer_digests[0]
    blob = image.blobs[layer]
    sent, release = threading.Event(), threading.Event()

    def slow(h) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(blob)))
        h.end_headers()
        h.wfile.write(blob[: len(blob) // 2])
        h.wfile.flush()
        sent.set()
        release.wait(scaled(30))

    fake.routes.append(blob_route(layer, slow))
    proc = start("pull", f"{fake.host}/x/slow:1", env={"MINICTR_ROOT": str(minictr_root)})
    try:
        assert sent.wait(scaled(30)), "minictr never asked for the blob"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=scaled(30))
    finally:
        release.set()
    assert proc.returncode == 130 and err.strip().endswith("minictr: interrupted"), err
    nothing_left(minictr_root)


def test_layers_that_reach_outside_or_hold_a_device(minictr, minictr_root, fake):
    up = tarfile.TarInfo("../../etc/evil")
    device = tarfile.TarInfo("dev/sda")
    device.type, device.devmajor, device.devminor = tarfile.BLKTYPE, 8, 0
    link = tarfile.TarInfo("etc/link")
    link.type, link.linkname = tarfile.LNKTYPE, "/etc/shadow"
    for member, words in ((up, "'..' in the name"), (device, "block device 8:0"),
                          (link, "outside the layer")):
        fake.add("x/evil", "1", Image([layer_tar({"etc": None}, extra=[member])]))
        failed(minictr("pull", f"{fake.host}/x/evil:1"), words, "refused")
        nothing_left(minictr_root)


def test_diff_ids_that_do_not_match(minictr, minictr_root, fake):
    fake.add("x/ids", "1", Image([LAYER], diff_ids=[sha256(b"another tar")]))
    failed(minictr("pull", f"{fake.host}/x/ids:1"), "digest mismatch", "diff_id")
    nothing_left(minictr_root)
    fake.add("x/count", "1", Image([LAYER], diff_ids=[]))
    before = len(fake.seen)
    refused(minictr("pull", f"{fake.host}/x/count:1"), "lists 0 layer diff_ids", "names 1")
    assert [p for _, p, _ in fake.seen[before:] if "/blobs/" in p] == [  # the config only
        f"/v2/x/count/blobs/{Image([LAYER], diff_ids=[]).manifest_doc['config']['digest']}"]


def test_a_blob_whose_digest_is_wrong(minictr, minictr_root, fake):
    image = Image([LAYER])
    blob = bytearray(image.blobs[image.layer_digests[0]])
    blob[-9] ^= 1  # the gzip trailer's CRC: the same size, another digest
    fake.routes.append(blob_route(image.layer_digests[0], lambda h: send(h, 200, bytes(blob))))
    r = minictr("pull", f"{fake.host}/x/img:1")
    failed(r, "digest mismatch for layer 1 of 1", "the registry's copy")
    nothing_left(minictr_root)


def test_schema_1_windows_and_foreign_layers(minictr, minictr_root, fake):
    fake.manifests["x/old/1"] = ("application/vnd.docker.distribution.manifest.v1+prettyjws",
                                 b'{"schemaVersion": 1, "fsLayers": []}')
    refused(minictr("pull", f"{fake.host}/x/old:1"), "schema 1", "push the image again")
    fake.add("x/win", "1", Image([LAYER], os_name="windows"))
    refused(minictr("pull", f"{fake.host}/x/win:1"), "windows image, not a Linux one")
    fake.add("x/foreign", "1", Image(
        [LAYER], layer_type="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"))
    refused(minictr("pull", f"{fake.host}/x/foreign:1"), "foreign layer")
    fake.add("x/art", "1", Image([LAYER], layer_type="application/vnd.cncf.helm.chart.v1"))
    refused(minictr("pull", f"{fake.host}/x/art:1"), "not a layer tar")
    nothing_left(minictr_root)


def test_uncompressed_and_unlabelled_layers(minictr, minictr_root, fake):
    fake.add("x/tar", "1", Image([LAYER], compress=lambda t: t,
                                 layer_type="application/vnd.oci.image.layer.v1.tar"))
    minictr("pull", f"{fake.host}/x/tar:1", check=True)
    fake.add("x/octet", "1", Image([layer_tar({"octet": b"1"})],
                                   layer_type="application/octet-stream"))  # gzip, by magic
    minictr("pull", f"{fake.host}/x/octet:1", check=True)
    assert OCI_LAYER_GZIP


def test_not_found_denied_rate_limited(minictr, minictr_root, fake):
    refused(minictr("pull", f"{fake.host}/x/none:1"), "not found", "NAME_UNKNOWN",
            "tags/list")
    fake.routes.append(lambda h: "/manifests/limited" in h.path and (send(
        h, 429, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
        {"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "0;w=21600",
         "Retry-After": "60"}) or True))
    refused(minictr("pull", f"{fake.host}/x/img:limited"), "too many requests (429)",
            "0 of 100 pulls left in 6 h", "MINICTR_REGISTRY_MIRROR", "wait 60 s")
    fake.routes.append(lambda h: "/manifests/denied" in h.path and (send(
        h, 403, b'{"errors":[{"code":"DENIED","message":"\\u001b]0;pwned\\u0007 no"}]}') or True))
    r = minictr("pull", f"{fake.host}/x/img:denied")
    refused(r, "denied anonymously", "403")
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "\\x1b]0;pwned" in r.stderr
    nothing_left(minictr_root)


def test_a_password_the_registry_echoes_is_not_printed(minictr, minictr_root, tmp_path,
                                                       monkeypatch):
    registry = FakeRegistry(basic=("bob", "hunter2"))
    try:
        registry.routes.append(lambda h: "/manifests/" in h.path and (send(
            h, 404, b'{"errors":[{"code":"X","message":"no hunter2 here"}]}') or True))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        (tmp_path / "config.json").write_text(json.dumps({"auths": {registry.host: {
            "auth": base64.b64encode(b"bob:hunter2").decode()}}}))
        r = minictr("pull", "--explain", f"{registry.host}/x/img:1")
        assert r.returncode == 125 and "no *** here" in r.stderr
        assert "hunter2" not in r.stderr + r.stdout
    finally:
        registry.stop()


def test_manifest_checks(minictr, minictr_root, fake):
    digest = sha256(fake.manifests["x/img/1"][1])
    other = "sha256:" + "1" * 64
    fake.manifests[f"x/img/{other}"] = fake.manifests["x/img/1"]  # served under a false name
    refused(minictr("pull", f"{fake.host}/x/img@{other}"), "hashes to", "not to the")
    fake.routes.append(lambda h: "/manifests/lying" in h.path and (send(
        h, 200, fake.manifests["x/img/1"][1], {"Docker-Content-Digest": other,
                                                "Content-Type": "application/json"}) or True))
    refused(minictr("pull", f"{fake.host}/x/img:lying"), "the registry says the manifest is")
    fake.manifests["x/img/huge"] = ("application/json", b" " * (5 << 20))
    refused(minictr("pull", f"{fake.host}/x/img:huge"), "at most 4194304")
    assert digest
    nothing_left(minictr_root)


def test_down_plain_http_and_bad_tls(minictr, minictr_root, fake, tmp_path, monkeypatch):
    port = fake.host.rsplit(":", 1)[1]
    fake.stop()
    refused(minictr("pull", f"127.0.0.1:{port}/x/img:1"), "cannot reach", "Connection refused")
    elsewhere = FakeRegistry("127.0.0.2")  # plain HTTP, and not localhost: refused
    try:
        elsewhere.add("x/img", "1", Image([LAYER]))
        refused(minictr("pull", f"{elsewhere.host}/x/img:1"), "TLS with", "failed",
                f"MINICTR_INSECURE_REGISTRIES={elsewhere.host}")
        minictr("pull", f"{elsewhere.host}/x/img:1", check=True,
                env={"MINICTR_INSECURE_REGISTRIES": elsewhere.host})
    finally:
        elsewhere.stop()
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    selfsigned = FakeRegistry(tls=(cert, key))
    try:
        selfsigned.add("x/img", "2", Image([layer_tar({"tls": b"yes"})]))
        refused(minictr("pull", f"{selfsigned.host}/x/img:2"), "certificate is not trusted",
                "update-ca-certificates")
        minictr("pull", f"{selfsigned.host}/x/img:2", check=True,
                env={"SSL_CERT_FILE": str(cert)})  # trusted: verified TLS, no fallback
    finally:
        selfsigned.stop()


def test_bad_input_before_any_request(minictr, minictr_root):
    refused(minictr("pull", "x:tag with space"), "invalid reference")
    refused(minictr("pull", "-"), "invalid reference")
    refused(minictr("run", "a/b:$(id)"), "invalid image name", "its tag")
    refused(minictr("push", "busybox", "x\n:1"), "invalid reference")
    refused(minictr("login", "-u", "a", "--password-stdin", "bad host!"), "invalid registry")
    refused(minictr("login", "--password-stdin", "localhost:1"), "no user name")
    nothing_left(minictr_root)


def test_tokens_only_where_they_may_go(minictr, minictr_root, fake):
    """A realm over plain HTTP to another host, a realm that is no URL, a 401 for ever."""
    challenge = {"/v2/": 'Bearer realm="http://203.0.113.9/token",service="x"'}
    fake.routes.append(lambda h: h.path in challenge and (send(
        h, 401, b"{}", {"WWW-Authenticate": challenge[h.path]}) or True))
    before = len(fake.seen)
    refused(minictr("pull", f"{fake.host}/x/img:1"), "plain HTTP to 203.0.113.9")
    assert len(fake.seen) == before + 1  # nothing sent there, nor anything more here
    challenge["/v2/"] = 'Bearer realm="file:///etc/passwd"'
    refused(minictr("pull", f"{fake.host}/x/img:1"), "no usable token realm")
    fake.routes.insert(0, lambda h: "/manifests/" in h.path and (send(
        h, 401, b"{}", {"WWW-Authenticate": 'Basic realm="x"'}) or True))
    challenge.clear()
    refused(minictr("pull", f"{fake.host}/x/img:1"), "denied anonymously", "401")
    nothing_left(minictr_root)


def test_too_many_layers_and_a_stalled_registry(minictr, minictr_root, fake):
    fake.add("x/tall", "1", Image([layer_tar({f"f{n}": b"x"}) for n in range(80)]))
    before = len(fake.seen)
    refused(minictr("pull", f"{fake.host}/x/tall:1"), "80 layers are too many for one mount")
    assert not [p for _, p, _ in fake.seen[before:] if "/blobs/" in p]
    stalled = threading.Event()
    fake.routes.append(lambda h: "/manifests/" in h.path and (stalled.wait(scaled(20)) or True))
    try:
        refused(minictr("pull", f"{fake.host}/x/img:1", env={"MINICTR_REGISTRY_TIMEOUT": "1"}),
                "did not answer within 1 s")
    finally:
        stalled.set()
    nothing_left(minictr_root)
