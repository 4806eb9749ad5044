"""The pure parts of pull and push, without root or a registry: references as Docker reads
them, the names they are stored under, platforms, challenges, credentials, rate limits."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from minictr.errors import StepError
from minictr.images import auth, reference, registry
from minictr.images.pull import Platform, choose_platform, parse_platform
from minictr.store import NAME_PATTERN, default_name

HEX = "a" * 64


@pytest.mark.parametrize(("text", "canonical", "familiar"), [
    ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("alpine:3.20", "docker.io/library/alpine:3.20", "alpine:3.20"),
    ("library/alpine:3.20", "docker.io/library/alpine:3.20", "alpine:3.20"),
    ("docker.io/library/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("index.docker.io/library/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("bitnami/redis:7", "docker.io/bitnami/redis:7", "bitnami/redis:7"),
    (f"alpine@sha256:{HEX}", f"docker.io/library/alpine@sha256:{HEX}", f"alpine@sha256:{HEX}"),
    (f"alpine:3.20@sha256:{HEX}", f"docker.io/library/alpine@sha256:{HEX}",
     f"alpine@sha256:{HEX}"),  # the digest wins, as in Docker
    ("localhost:5000/team/app:1", "localhost:5000/team/app:1", "localhost:5000/team/app:1"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("ghcr.io/org/x:tag", "ghcr.io/org/x:tag", "ghcr.io/org/x:tag"),
    ("127.0.0.1:5000/a/b/c:v1.2-rc_3", "127.0.0.1:5000/a/b/c:v1.2-rc_3",
     "127.0.0.1:5000/a/b/c:v1.2-rc_3"),
    ("[::1]:5000/app:1", "[::1]:5000/app:1", "[::1]:5000/app:1"),
    ("my-registry.example.com/a__b/c--d.e:X", "my-registry.example.com/a__b/c--d.e:X",
     "my-registry.example.com/a__b/c--d.e:X"),
])
def test_docker_normalisation(text: str, canonical: str, familiar: str) -> None:
    ref = reference.parse(text)
    assert ref.canonical == canonical
    assert ref.familiar == familiar
    assert reference.parse(familiar) == ref  # the short form reads back the same
    assert reference.check_stored_name(familiar) == familiar


@pytest.mark.parametrize(("text", "why"), [
    ("", "not a reference"),
    ("team/Alpine", "lower case"),
    ("a/../b", "a repository is"),
    ("a//b", "a repository is"),
    ("-a", "a repository is"),
    ("a:", "its tag"),
    ("a:.x", "its tag"),
    ("a:" + "t" * 129, "its tag"),
    ("a@sha256:abc", "its digest"),
    ("a@md5:" + "0" * 32, "its digest"),
    ("a b", "not a reference"),
    ("a:$(reboot)", "its tag"),
    ("a;rm -rf /", "not a reference"),
    ("x\x1b]0;title\x07:1", "not a reference"),
    ("x\n:1", "not a reference"),
    ("caf\u00e9:1", "not a reference"),
    (HEX, "an image id"),
    ("r.example/" + "a" * 300, "longer than 255"),
    ("exa_mple.com/a", "not a registry host"),  # a '.': a host, and '_' has no place in one
])
def test_malformed_references(text: str, why: str) -> None:
    with pytest.raises(StepError) as e:
        reference.parse(text)
    assert why in e.value.message, e.value.message
    line = str(e.value)
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line


def test_a_local_name_is_never_a_reference() -> None:
    for name in ("busybox", "debian", "my_image-1.0", "a.b"):
        assert NAME_PATTERN.fullmatch(name) and not reference.looks_like_reference(name)
    for ref in ("alpine:3.20", "team/app", "x@sha256:" + HEX):
        assert reference.looks_like_reference(ref) and not NAME_PATTERN.fullmatch(ref)


@pytest.mark.parametrize("name", ["alpine:3.20", "localhost:5000/team/app:1",
                                  f"alpine@sha256:{HEX}", "[::1]:5000/app:1", "a/b.c/d_e:f"])
def test_stored_file_names(name: str) -> None:
    stem = reference.file_stem(name)
    assert "/" not in stem and ".." not in stem and not stem.startswith(".")
    assert "%" in stem and not NAME_PATTERN.fullmatch(stem)  # never a local name
    assert reference.name_of_file(stem) == name
    assert len(f".{stem}.json.tmp") <= 255


def test_a_long_reference_is_refused_for_the_store() -> None:
    name = "r.example/" + "/".join(["abcdefghij"] * 22) + ":t"
    reference.parse(name)
    with pytest.raises(StepError, match="too long to be stored"):
        reference.check_stored_name(name)


def test_stored_name_must_be_the_short_form() -> None:
    with pytest.raises(StepError, match="short form"):
        reference.check_stored_name("docker.io/library/alpine:3.20")


def test_container_default_names() -> None:
    assert default_name("busybox") == "busybox"
    assert default_name("localhost:5000/team/app:1") == "app-1"
    assert default_name(f"alpine@sha256:{HEX}") == "alpine"
    assert default_name("a/b:v1_2") == "b-v1-2"


# --- platforms -------------------------------------------------------------------------------


def test_platform_parsing() -> None:
    assert parse_platform("linux/arm64") == Platform("linux", "arm64")
    assert parse_platform("linux/arm/v7") == Platform("linux", "arm", "v7")
    assert Platform("linux", "arm64").normal() == Platform("linux", "arm64", "v8")
    assert Platform("linux", "amd64", "v1").normal() == Platform("linux", "amd64")
    for bad in ("linux", "linux/", "Linux/amd64", "linux/amd64/v3/x", "windows/amd64"):
        with pytest.raises(StepError):
            parse_platform(bad)


def _entry(arch: str, os_name: str = "linux", variant: str = "", n: int = 0,
           **annotations: str) -> dict:
    platform = {"architecture": arch, "os": os_name, **({"variant": variant} if variant else {})}
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{n:064x}", "size": 100, "platform": platform,
            "annotations": annotations}


def test_choosing_a_platform() -> None:
    index = {"manifests": [
        _entry("amd64", n=1), _entry("arm64", variant="v8", n=2), _entry("arm", variant="v7", n=3),
        _entry("unknown", "unknown", n=4, **{"vnd.docker.reference.type": "attestation-manifest"}),
        _entry("amd64", "windows", n=5)]}
    pick = lambda p: choose_platform(index, parse_platform(p), "x").digest[-1]  # noqa: E731
    assert pick("linux/amd64") == "1"
    assert pick("linux/arm64") == "2"  # arm64 is arm64/v8
    assert pick("linux/arm64/v8") == "2"
    assert pick("linux/arm/v7") == "3"
    with pytest.raises(StepError) as e:
        pick("linux/s390x")
    assert "linux/amd64, linux/arm/v7, linux/arm64/v8, windows/amd64" in e.value.message
    assert "unknown" not in e.value.message
    only_attestation = {"manifests": [index["manifests"][3]]}
    with pytest.raises(StepError, match="has no image for linux/amd64: it has none"):
        choose_platform(only_attestation, parse_platform("linux/amd64"), "x")


# --- auth, rate limits, what is printed ------------------------------------------------------


def test_challenges() -> None:
    c = auth.parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.'
                             'docker.io",scope="repository:library/alpine:pull"')
    assert c == auth.Challenge("bearer", {"realm": "https://auth.docker.io/token",
                                          "service": "registry.docker.io",
                                          "scope": "repository:library/alpine:pull"})
    assert auth.parse_challenge('Basic realm="Registry Realm"') == auth.Challenge(
        "basic", {"realm": "Registry Realm"})
    assert auth.parse_challenge('Bearer realm="a\\"b",error=insufficient_scope').params == {
        "realm": 'a"b', "error": "insufficient_scope"}
    assert auth.parse_challenge("Negotiate abc") is None


def test_credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "d"))
    assert auth.credentials("localhost:5000") is None
    path = auth.save("docker.io", auth.Credentials("u", "p:w"))
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    assert doc == {"auths": {"https://index.docker.io/v1/": {
        "auth": base64.b64encode(b"u:p:w").decode()}}}
    assert auth.credentials("docker.io") == auth.Credentials("u", "p:w")
    auth.save("localhost:5000", auth.Credentials("a", "b"))
    assert auth.remove("docker.io") and not auth.remove("docker.io")
    assert list(json.loads(path.read_text())["auths"]) == ["localhost:5000"]
    path.write_text("{not json")
    with pytest.raises(StepError, match="not readable JSON"):
        auth.credentials("x")


def test_rate_limit_words() -> None:
    headers = {"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "76;w=21600",
               "Docker-RateLimit-Source": "203.0.113.7"}
    assert registry.describe_rate_limit(headers) == \
        "76 of 100 pulls left in 6 h for 203.0.113.7"
    assert registry.describe_rate_limit({}) == ""


def test_what_a_registry_says_is_made_printable() -> None:
    assert registry.printable("ok") == "ok"
    assert registry.printable("\x1b]0;x\x07\nD /etc") == "\\x1b]0;x\\x07\\nD /etc"
    assert registry.printable("x" * 500).endswith("…")


def test_plain_http_only_to_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINICTR_INSECURE_REGISTRIES", raising=False)
    for host in ("localhost:5000", "127.0.0.1:1", "[::1]:5000", "localhost"):
        assert registry.plain_http_allowed(host)
    for host in ("127.0.0.2:5000", "localhost.example:5000", "registry:5000", "10.0.0.1"):
        assert not registry.plain_http_allowed(host)
    monkeypatch.setenv("MINICTR_INSECURE_REGISTRIES", "registry:5000, other")
    assert registry.plain_http_allowed("registry:5000") and registry.plain_http_allowed("other:1")
    assert not registry.plain_http_allowed("registry:5001")


def test_curl_lines_never_hold_a_secret() -> None:
    client = registry.Client("r.example", "a/b", creds=auth.Credentials("u", "s3cret"))
    client.base = "https://r.example"
    line = client._curl("GET", "https://r.example/v2/a/b/manifests/1",
                        {"Authorization": "Bearer eyJ.token.sig", "Accept": "x"}, None)
    assert line == ("curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Accept: x' "
                    "https://r.example/v2/a/b/manifests/1")
    line = client._curl("GET", "https://r.example/v2/", {
        "Authorization": auth.Credentials("u", "s3cret").basic()}, None)
    assert "s3cret" not in line and 'u:"$PASSWORD"' in line
    client.secrets.append("eyJ.token.sig")
    assert client._redacted("bad s3cret and eyJ.token.sig") == "bad *** and ***"
    line = client._curl("GET", "https://r.example/v2/x';reboot;'", {}, None)
    assert line.endswith("'https://r.example/v2/x'\"'\"';reboot;'\"'\"''")
