"""Registries for the pull and push tests, all on this machine's loopback, none on the network.

- ``DockerRegistry``: Debian's docker-registry (distribution 2.8), the real thing, on a port
  the kernel chooses (``addr: 127.0.0.1:0``), its storage in a temporary directory; ready
  when its log says "listening on" (no polling of the port). Plain, with htpasswd Basic auth
  (``htpasswd -B``: the only hash it reads is bcrypt), or with token auth against:
- ``TokenServer``: the test's own token service, as Docker Hub's auth.docker.io: a JWT per
  request, RS256-signed by ``openssl`` with a key made for the test, its certificate in the
  token's x5c header and in the registry's rootcertbundle.
- ``FakeRegistry``: a small registry in this process (http.server, one thread) that serves one
  image from memory and lets a test make it lie: wrong digests, redirect loops, endless blobs.
- ``upload``: an independent push (urllib, monolithic), for what skopeo cannot make: an index
  of the test's own, an attestation, a layer for another architecture.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import json
import os
import re
import select
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import scaled

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_ACCESS = re.compile(r'"(GET|HEAD|PUT|PATCH|POST|DELETE) (\S+) HTTP/1\.1" (\d{3})')


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


# --- the real registry ------------------------------------------------------------------------


class DockerRegistry:
    """docker-registry serve CONFIG, in a temporary directory; stop() ends it and waits."""

    def __init__(self, base: Path, *, auth: str = "", token_server: TokenServer | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.base = base
        self.storage = base / "storage"
        base.mkdir(parents=True, exist_ok=True)
        config = ["version: 0.1", "log:", "  level: info", "  accesslog:",
                  "    disabled: false", "storage:", "  filesystem:",
                  f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                  "http:", "  addr: 127.0.0.1:0", "  secret: minictr-tests"]
        if auth == "htpasswd":
            htpasswd = base / "htpasswd"
            for user, password in (users or {}).items():
                line = subprocess.run(["htpasswd", "-nbB", user, password], check=True,
                                      capture_output=True, text=True).stdout.strip()
                with open(htpasswd, "a") as f:
                    f.write(line + "\n")
            config += ["auth:", "  htpasswd:", "    realm: minictr-tests",
                       f"    path: {htpasswd}"]
        elif auth == "token":
            assert token_server is not None
            config += ["auth:", "  token:", f"    realm: {token_server.url}/token",
                       f"    service: {token_server.service}",
                       f"    issuer: {token_server.issuer}",
                       f"    rootcertbundle: {token_server.cert}"]
        (base / "config.yml").write_text("\n".join(config) + "\n")
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(["docker-registry", "serve", str(base / "config.yml")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(scaled(20)):
            self.stop()
            raise RuntimeError("docker-registry did not start:\n" + "\n".join(self.lines[-20:]))
        self.host = self._address

    def _read_log(self) -> None:
        """Its log, line by line, kept; "listening on 127.0.0.1:PORT" is the readiness."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if not self._ready.is_set() and (m := re.search(r"listening on ([0-9.:]+)", line)):
                self._address = m[1]
                self._ready.set()

    def requests(self) -> list[tuple[str, str, int]]:
        """Every request it has logged so far: (method, path, status). A request of our own
        goes last, and is waited for: then every earlier one is in the log."""
        marker = f"/v2/minictr-test-marker/{time.monotonic_ns()}"
        with contextlib.suppress(urllib.error.URLError):
            urllib.request.urlopen(f"http://{self.host}{marker}", timeout=10)
        deadline = time.monotonic() + scaled(10)
        while not any(marker in line for line in self.lines):  # the log of our own request
            assert time.monotonic() < deadline, "the registry did not log a request"
            select.select([], [], [], 0.01)
        found = []
        for line in list(self.lines):
            if (m := _ACCESS.search(line)) and "minictr-test-marker" not in m[2]:
                found.append((m[1], m[2], int(m[3])))
        return found

    def blob_path(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return (self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest
                / "data")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=scaled(5))


# --- a token service --------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """GET /token?service=S&scope=repository:NAME:pull,push -> {"token": JWT}.

    Who may do what: anyone may pull public/*; a user of ``users`` (Basic auth on the token
    request) may pull and push anything. A wrong password is a 401."""

    service = "minictr-test-registry"
    issuer = "minictr-test-token-service"

    def __init__(self, base: Path, users: dict[str, str]) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = base / "token.key", base / "token.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(self.key), "-out", str(self.cert), "-days", "2", "-subj",
                        "/CN=minictr test token service"], check=True, capture_output=True)
        pem = self.cert.read_text()
        self.x5c = "".join(pem.split("-----")[2].split())  # base64 of the DER certificate
        self.users = users
        self.issued: list[tuple[str, str]] = []  # (user or "", scope)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = ""
                if header := self.headers.get("Authorization"):
                    name, _, password = base64.b64decode(header.split()[1]).decode().partition(
                        ":")
                    if server.users.get(name) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                scopes = query.get("scope", [])
                server.issued.append((user, " ".join(scopes)))
                body = json.dumps({"token": server.token(user, scopes), "expires_in": 300})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = [a for a in actions.split(",")
                       if user or (a == "pull" and name.startswith("public/"))]
            access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing.encode(), capture_output=True, check=True).stdout
        return f"{signing}.{_b64url(signature)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


# --- an independent push ----------------------------------------------------------------------


def upload(host: str, repository: str, blobs: list[bytes], manifest: bytes, ref: str,
           media_type: str = OCI_MANIFEST) -> str:
    """POST+PUT each blob, then PUT the manifest (anonymous, plain HTTP). Returns its digest."""
    for blob in blobs:
        request = urllib.request.Request(f"http://{host}/v2/{repository}/blobs/uploads/",
                                         method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30) as response:
            location = urllib.parse.urljoin(f"http://{host}/", response.headers["Location"])
        sep = "&" if "?" in location else "?"
        request = urllib.request.Request(f"{location}{sep}digest={sha256(blob)}", method="PUT",
                                         data=blob,
                                         headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(request, timeout=30).close()
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{ref}",
                                     method="PUT", data=manifest,
                                     headers={"Content-Type": media_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201, response.status
    return sha256(manifest)


def manifest_digest(host: str, repository: str, ref: str) -> str:
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{ref}",
                                     method="HEAD", headers={"Accept": f"{OCI_MANIFEST}, "
                                                             f"{OCI_INDEX}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Docker-Content-Digest"]


# --- an image made here -----------------------------------------------------------------------


def layer_tar(files: dict[str, bytes | None], *, extra: list[tarfile.TarInfo] = ()) -> bytes:
    """A layer tar: name -> content (None: a directory), plus hand-made members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return out.getvalue()


def gzipped(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


class Image:
    """An image's blobs in memory: config, gzip layers, manifest; and how to change them."""

    def __init__(self, layers: list[bytes], *, architecture: str = "amd64", os_name: str = "linux",
                 compress: Callable[[bytes], bytes] = gzipped,
                 layer_type: str = OCI_LAYER_GZIP, diff_ids: list[str] | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        descs = []
        for tar in layers:
            blob = compress(tar)
            self.blobs[sha256(blob)] = blob
            descs.append({"mediaType": layer_type, "digest": sha256(blob), "size": len(blob)})
        self.config = canonical({"architecture": architecture, "os": os_name,
                                 "config": {"Cmd": ["/bin/sh"]},
                                 "rootfs": {"type": "layers", "diff_ids": diff_ids if diff_ids
                                            is not None else [sha256(t) for t in layers]}})
        self.blobs[sha256(self.config)] = self.config
        self.manifest_doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                             "config": {"mediaType": OCI_CONFIG, "digest": sha256(self.config),
                                        "size": len(self.config)}, "layers": descs}
        self.manifest = canonical(self.manifest_doc)
        self.layer_digests = [d["digest"] for d in descs]


# --- a registry that lies ---------------------------------------------------------------------

Route = Callable[[http.server.BaseHTTPRequestHandler], bool]


class FakeRegistry:
    """Serves manifests and blobs from dicts, plain HTTP, anonymous. ``routes``: functions a
    test adds that may answer a request first (return True when they did). ``seen``: every
    request, as (method, path, headers)."""

    def __init__(self, address: str = "127.0.0.1", *, basic: tuple[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.manifests: dict[str, tuple[str, bytes]] = {}  # "repo/ref" -> (type, body)
        self.blobs: dict[str, bytes] = {}
        self.routes: list[Route] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                fake.seen.append((self.command, self.path, dict(self.headers)))
                if basic and self.headers.get("Authorization") != "Basic " + base64.b64encode(
                        ":".join(basic).encode()).decode():
                    return send(self, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                                {"WWW-Authenticate": 'Basic realm="fake"'})
                for route in fake.routes:
                    if route(self):
                        return
                fake.answer(self)

            do_GET = do_HEAD = handle_one

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, tls))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host = f"{address}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add(self, repository: str, ref: str, image: Image) -> None:
        self.manifests[f"{repository}/{ref}"] = (OCI_MANIFEST, image.manifest)
        self.manifests[f"{repository}/{sha256(image.manifest)}"] = (OCI_MANIFEST, image.manifest)
        self.blobs.update(image.blobs)

    def answer(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = urllib.parse.urlsplit(h.path).path
        if path == "/v2/":
            return send(h, 200, b"{}", {"Docker-Distribution-API-Version": "registry/2.0"})
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
        if m and m[2] == "manifests" and f"{m[1]}/{m[3]}" in self.manifests:
            kind, body = self.manifests[f"{m[1]}/{m[3]}"]
            return send(h, 200, body, {"Content-Type": kind, "Docker-Content-Digest": sha256(body)})
        if m and m[2] == "blobs" and m[3] in self.blobs:
            return send(h, 200, self.blobs[m[3]], {"Content-Type": "application/octet-stream"})
        send(h, 404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"not here"}]}',
             {"Content-Type": "application/json"})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def send(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
         headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    if "Content-Length" not in (headers or {}):
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def store_is_empty(root: Path) -> list[str]:
    """What a failed pull left in a store: records, layers, temporary directories."""
    left = []
    for sub in ("images", "layers"):
        if (root / sub).is_dir():
            left += [f"{sub}/{p.name}" for p in (root / sub).iterdir() if p.name != ".lock"]
    return left

