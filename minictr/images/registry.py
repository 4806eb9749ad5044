"""minictr's own client of the OCI distribution API: every request a pull or a push makes.

    GET   /v2/                          is this a registry, and how do I authenticate?
    GET   /v2/NAME/manifests/REF        an index (one manifest per platform) or a manifest
    GET   /v2/NAME/blobs/DIGEST         the config, the layers (often a redirect to a CDN)
    HEAD  /v2/NAME/blobs/DIGEST         push: is it there already?
    POST  /v2/NAME/blobs/uploads/       push: start an upload (202, and where to send it)
    PATCH LOCATION, PUT LOCATION?digest=D       push: the bytes (in chunks, or at once), the end
    PUT   /v2/NAME/manifests/TAG        push: the manifest, last, once everything it names is there

With --explain each request is printed as the ``curl`` line that makes it, and its answer;
``$TOKEN`` and ``$PASSWORD`` stand for the secrets, which are never printed.

Why the standard library's ``http.client``, and not ``urllib.request`` or ``requests``:
``urllib.request`` passes the headers a request was given on to wherever a redirect points
(the registry's Authorization to a CDN, unless each is added "unredirected"), opens a new
connection (a new TLS handshake) for every request, and raises on a 401, which here is a
normal step. ``requests`` (or httpx, urllib3) would be well-kept and right on redirects, but is
four more packages, brings certifi's CA list instead of the system's (a workshop behind a TLS
proxy has added its CA to the system's), costs ~80 ms to import (the second pull of an image
takes less than that in all), and hides just what this module shows: each request, each
redirect, each header. ``http.client`` makes one request per call and nothing more; the
redirects (``_send``), the connection kept per host (``_connection``) and the 401 answered once
(``request``) are written out below.

Plain HTTP only to ``localhost``, ``127.0.0.1``, ``::1``, and the registries named in
``MINICTR_INSECURE_REGISTRIES`` (``host:port,host2``, as Docker's ``insecure-registries``: for
those, a certificate is not checked either). Those are tried with TLS first, as Docker does.
``MINICTR_REGISTRY_TIMEOUT``: seconds a registry may stay silent (default 30).

See: https://github.com/opencontainers/distribution-spec/blob/main/spec.md, RFC 9110
     (redirects, 401, 429), https://docs.docker.com/docker-hub/usage/ (Docker Hub's limits)
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shlex
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Iterator
from typing import IO, Any

from minictr.errors import StepError
from minictr.explain import note
from minictr.images import auth

STEP = "pull image"
JSON_MAX = 4 << 20  # a manifest, an index, a config, a token, an error: small
ERROR_MAX = 64 << 10
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_LOCAL = {"localhost", "127.0.0.1", "::1", "[::1]"}
_CHUNK = 1 << 20


class Unreachable(StepError):
    """The registry could not be reached or broke the connection (for the mirror's fallback)."""


def timeout() -> float:
    try:
        return float(os.environ.get("MINICTR_REGISTRY_TIMEOUT") or 30)
    except ValueError:
        return 30.0


def _insecure() -> set[str]:
    return {h.strip() for h in os.environ.get("MINICTR_INSECURE_REGISTRIES", "").split(",")
            if h.strip()}


def plain_http_allowed(hostport: str) -> bool:
    """localhost, 127.0.0.1, ::1, or a registry named in MINICTR_INSECURE_REGISTRIES."""
    host = hostport.rsplit(":", 1)[0] if not hostport.endswith("]") else hostport
    return host in _LOCAL or hostport in _insecure() or host in _insecure()


def printable(text: str, limit: int = 200) -> str:
    """What a registry sent, safe for a terminal: no escape sequence, no line break, short."""
    text = text if len(text) <= limit else text[:limit] + "…"
    return text if text.isprintable() else repr(text)[1:-1]


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Client:
    """The requests to one repository of one registry, over kept connections.

    ``registry`` is as the reference names it (``docker.io``, ``localhost:5000``); ``api``
    is the host that answers (``registry-1.docker.io``, or a mirror's URL for docker.io).
    ``actions``: "pull", or "pull,push": the scope a token is asked for.
    """

    def __init__(self, registry: str, repository: str, *, api: str | None = None,
                 actions: str = "pull", step: str = STEP,
                 creds: auth.Credentials | None = None) -> None:
        self.registry = registry
        self.repository = repository
        self.actions = actions
        self.step = step
        scheme, _, host = (api or registry).rpartition("://")
        self.host = host.rstrip("/")
        self.base = f"{scheme}://{self.host}" if scheme else ""  # found by ping() otherwise
        mirror = api is not None and registry == "docker.io" and "docker.io" not in self.host
        self.creds = creds or auth.credentials(self.host if mirror else registry)
        self.authorization: str | None = None  # sent to self.base only, never on a redirect
        self.secrets: list[str] = [self.creds.password] if self.creds else []
        self.blobs = 0  # blob downloads started, and their bytes: the second pull's are 0
        self.blob_bytes = 0
        self._connections: dict[str, http.client.HTTPConnection] = {}
        self._origin_of: dict[int, str] = {}  # id(response) -> its connection's origin

    # --- the registry, and who we are to it ------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: which scheme (TLS, or plain HTTP where allowed), and the challenge; then
        the token for this repository, or the Basic credentials, from the start."""
        if not self.base:
            self.base = self._choose_scheme()
        response = self._send("GET", f"{self.base}/v2/", {}, None)
        body = self._read(response, ERROR_MAX)
        if response.status == 401:
            if not self._authenticate(response):
                note("no credentials for it: anonymous (minictr login REGISTRY to log in)")
            return
        if response.status != 200:
            raise self._error(response, body, f"{self.host}/v2/ (is it a registry?)")
        if not response.getheader("Docker-Distribution-API-Version", "").startswith(
                "registry/2"):
            note("it does not say Docker-Distribution-API-Version: registry/2.0; going on")

    def _choose_scheme(self) -> str:
        """TLS first. Plain HTTP only where it is allowed, and only when the server does not
        speak TLS at all: a certificate that fails is a refusal, never a reason to drop TLS."""
        origin = f"https://{self.host}"
        note(f"$ curl -s {origin}/v2/   # TLS first")
        try:
            self._connection(origin).connect()
            return origin
        except ssl.SSLCertVerificationError as e:
            self._drop(origin)
            raise StepError(self.step, f"TLS: {self.host}'s certificate is not trusted here: "
                            f"{printable(e.verify_message or str(e))}",
                            hint="add its CA to /usr/local/share/ca-certificates and run "
                            "update-ca-certificates; a test registry only: "
                            f"MINICTR_INSECURE_REGISTRIES={self.host}") from e
        except (ssl.SSLError, ConnectionResetError) as e:
            self._drop(origin)
            if not plain_http_allowed(self.host):
                raise StepError(self.step, f"TLS with {self.host} failed: "
                                f"{printable(getattr(e, 'reason', None) or str(e))}",
                                hint="if it speaks only plain HTTP (a test registry), name it "
                                f"insecure: MINICTR_INSECURE_REGISTRIES={self.host}") from e
            note(f"  → no TLS there ({printable(getattr(e, 'reason', None) or str(e), 60)}): "
                 "plain HTTP, which minictr allows only to localhost, 127.0.0.1 and "
                 "MINICTR_INSECURE_REGISTRIES")
            return f"http://{self.host}"
        except OSError as e:
            self._drop(origin)
            raise self._unreachable(e) from e

    def _authenticate(self, response: http.client.HTTPResponse) -> bool:
        """Answer a 401's challenge: Basic with the credentials, or a Bearer token from the
        realm. Returns False when there is nothing new to try (then the 401 stands)."""
        challenges = [c for h in response.headers.get_all("WWW-Authenticate") or []
                      if (c := auth.parse_challenge(h))]
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is None:
            if not self.creds or (self.authorization or "").startswith("Basic "):
                return False
            note(f"Basic authentication, as {self.creds.user} (from {auth.config_path()})")
            self.authorization = self.creds.basic()
            return True
        scope = bearer.params.get("scope") or (
            f"repository:{self.repository}:{self.actions}" if self.repository else None)
        token = self._token(bearer.params, scope)
        if token is None or self.authorization == f"Bearer {token}":
            return False
        self.authorization = f"Bearer {token}"
        return True

    def _token(self, params: dict[str, str], scope: str | None) -> str | None:
        """GET realm?service=...&scope=... (with the user's password, if logged in)."""
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise StepError(self.step, f"{self.host} names no usable token realm: "
                            f"{printable(realm)!r}")
        query = {k: v for k, v in (("service", params.get("service")), ("scope", scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self.creds.basic()} if self.creds else {}
        response = self._send("GET", url, headers, None, token=True)
        body = self._read(response, JSON_MAX)
        if response.status in (401, 403):
            raise StepError(self.step, f"the token service {printable(_origin(url))} refused "
                            + (f"{self.creds.user}'s password" if self.creds else
                               "an anonymous token"),
                            hint="check the user name and the password" if self.step ==
                            auth.STEP else f"log in again: minictr login {self.registry}")
        if response.status != 200:
            raise self._error(response, body, "the token service")
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or not token.isprintable():
            raise StepError(self.step, "the token service's answer has no token")
        self.secrets.append(token)
        note(f"  → a token for {printable(scope or 'logging in')}: $TOKEN (a secret: not "
             f"shown), valid {printable(str(answer.get('expires_in', 60)), 12)} s")
        return token

    # --- requests ----------------------------------------------------------------------------

    def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                body: bytes | IO[bytes] | None = None) -> http.client.HTTPResponse:
        """One request, its redirects followed; a 401 is answered once, with the challenge
        it carries (a token for a new scope, say), and the request made again."""
        response = self._send(method, url, dict(headers or {}), body)
        if response.status == 401 and _origin(url) == self.base:
            self._read(response, ERROR_MAX)
            if self._authenticate(response):
                if body is not None and not isinstance(body, bytes):
                    body.seek(0)
                response = self._send(method, url, dict(headers or {}), body)
        return response

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: bytes | IO[bytes] | None, *, token: bool = False,
              ) -> http.client.HTTPResponse:
        """Send, and follow redirects. An Authorization header goes only to the origin it is
        for: a blob's redirect to a CDN gets none (its URL is signed instead)."""
        first = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            origin = _origin(url)
            if origin.startswith("http://") and not plain_http_allowed(
                    urllib.parse.urlsplit(url).netloc):
                raise StepError(self.step, f"refused to send a request over plain HTTP to "
                                f"{printable(urllib.parse.urlsplit(url).netloc)}",
                                hint="minictr uses plain HTTP only for localhost, 127.0.0.1 and "
                                "MINICTR_INSECURE_REGISTRIES")
            sent = dict(headers)
            if origin != first:
                sent.pop("Authorization", None)  # a token request's Basic, to its realm only
            if origin == self.base and self.authorization and not token:
                sent["Authorization"] = self.authorization
            note(f"$ {self._curl(method, url, sent, body)}")
            response = self._exchange(origin, method, url, sent, body)
            note(f"  → {response.status} {printable(response.reason, 60)}"
                 + _described(response))
            location = response.getheader("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            self._read(response, ERROR_MAX)
            url = urllib.parse.urljoin(url, location)
            if response.status == 303:
                method, body = "GET", None
        raise StepError(self.step, f"more than {MAX_REDIRECTS} redirects, the last to "
                        f"{printable(url)}: a redirect loop", hint="the registry is misconfigured")

    def _exchange(self, origin: str, method: str, url: str, headers: dict[str, str],
                  body: bytes | IO[bytes] | None) -> http.client.HTTPResponse:
        """The request on the kept connection; once more on a new one if the kept one had been
        closed by the server meanwhile (keep-alive connections are closed when idle)."""
        parts = urllib.parse.urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers.setdefault("User-Agent", "minictr/0.1")
        for attempt in (1, 2):
            reused = origin in self._connections
            connection = self._connection(origin)
            try:
                connection.request(method, target, body=body, headers=headers)
                response = connection.getresponse()
                self._origin_of[id(response)] = origin
                return response
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop(origin)
                if attempt == 2 or not reused:
                    raise self._unreachable(e, _origin(url)) from e
                if body is not None and not isinstance(body, bytes):
                    body.seek(0)
            except ssl.SSLCertVerificationError as e:
                self._drop(origin)
                raise StepError(self.step, f"TLS: {parts.netloc}'s certificate is not "
                                f"trusted here: {printable(e.verify_message or str(e))}") from e
            except (OSError, http.client.HTTPException) as e:
                self._drop(origin)
                raise self._unreachable(e, _origin(url)) from e
        raise AssertionError("unreachable")

    def _connection(self, origin: str) -> http.client.HTTPConnection:
        if (connection := self._connections.get(origin)) is None:
            host = origin.split("://", 1)[1]
            if origin.startswith("https://"):
                context = ssl.create_default_context()
                if host in _insecure() or host.rsplit(":", 1)[0] in _insecure():
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                connection = http.client.HTTPSConnection(host, timeout=timeout(),
                                                         context=context, blocksize=_CHUNK)
            else:
                connection = http.client.HTTPConnection(host, timeout=timeout(),
                                                        blocksize=_CHUNK)
            self._connections[origin] = connection
        return connection

    def _drop(self, origin: str) -> None:
        if (connection := self._connections.pop(origin, None)) is not None:
            if connection.sock is not None:  # shutdown(2) wakes a recv(2) on another thread
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        for origin in list(self._connections):
            self._drop(origin)

    def _read(self, response: http.client.HTTPResponse, limit: int) -> bytes:
        """A whole small body; more than ``limit`` bytes is refused (and the connection, with
        the rest unread, closed)."""
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            self._drop_response(response)
            raise StepError(self.step, f"{self.host} offers {int(length)} bytes where at most "
                            f"{limit} are expected (a manifest, a config, an error)")
        try:
            body = response.read(limit + 1)
        except (OSError, http.client.HTTPException) as e:
            self._drop_response(response)
            raise self._unreachable(e) from e
        if len(body) > limit:
            self._drop_response(response)
            raise StepError(self.step, f"{self.host} sent more than {limit} bytes where a "
                            "small JSON document was expected")
        return body

    def _drop_response(self, response: http.client.HTTPResponse) -> None:
        """A response left unread: its connection has the rest of it, so it goes too."""
        response.close()
        if (origin := self._origin_of.pop(id(response), None)) is not None:
            self._drop(origin)

    # --- what a pull and a push ask for ------------------------------------------------------

    def url(self, kind: str, name: str) -> str:
        return f"{self.base}/v2/{self.repository}/{kind}/{name}"

    def get_json(self, url: str, accept: str, what: str) -> tuple[bytes, str, Any]:
        """GET a small JSON document: (its bytes, Content-Type, the response's headers)."""
        response = self.request("GET", url, {"Accept": accept})
        body = self._read(response, JSON_MAX)
        if response.status != 200:
            raise self._error(response, body, what)
        kind = (response.getheader("Content-Type") or "").split(";")[0].strip()
        if left := describe_rate_limit(response.headers):  # Docker Hub's, on each manifest
            note(f"  → {self.registry}: {left}")
        return body, kind, response.headers

    @contextlib.contextmanager
    def blob(self, digest: str, size: int, what: str,
             progress: Callable[[int], None] | None = None) -> Iterator[IO[bytes]]:
        """The blob's bytes as a stream, as the registry (or the CDN it redirects to) sends
        them. The caller checks the digest; here: the size, and a download cut short."""
        self.blobs += 1
        response = self.request("GET", self.url("blobs", digest))
        if response.status != 200:
            raise self._error(response, self._read(response, ERROR_MAX), what)
        length = response.getheader("Content-Length")
        if length is not None and (not length.isdigit() or int(length) != size):
            self._drop_response(response)
            raise StepError(self.step, f"the registry offers {printable(length, 30)} bytes for "
                            f"{what}, whose descriptor says {size}: not the blob it names",
                            hint="the registry's storage is damaged, or it is not honest")
        body = _Body(response, size, what, self)
        ahead = _ReadAhead(body)
        try:
            yield ahead
        finally:
            if not body.done:  # a refusal or Ctrl-C mid-blob: the thread's read ends with it
                self._drop_response(response)
            ahead.stop()

    def has_blob(self, digest: str) -> bool:
        response = self.request("HEAD", self.url("blobs", digest))
        response.read()  # nothing: an answer to HEAD has no body, whatever its Content-Length
        if response.status in (200, 404):
            return response.status == 200
        raise self._error(response, b"", f"HEAD of blob {digest[:19]}…")

    # --- errors ------------------------------------------------------------------------------

    def _unreachable(self, e: BaseException, where: str = "") -> Unreachable:
        where = printable(where or self.base or self.host)
        if isinstance(e, socket.gaierror):
            return Unreachable(self.step, f"cannot resolve {where}: {e.strerror}",
                             hint="no network? for docker.io, a mirror: "
                             "MINICTR_REGISTRY_MIRROR=https://HOST")
        if isinstance(e, TimeoutError):
            return Unreachable(self.step, f"{where} did not answer within {timeout():g} s",
                             hint="is the registry up? (MINICTR_REGISTRY_TIMEOUT: seconds)")
        if isinstance(e, OSError) and e.errno:
            return Unreachable(self.step, f"cannot reach {where}: {e.strerror}", errno=e.errno,
                             hint="is the registry running, and the host:port right?")
        return Unreachable(self.step, f"{where} broke the connection: "
                         f"{printable(type(e).__name__ + ' ' + str(e))}",
                         hint="is it a registry? is it up? pull again")

    def _error(self, response: http.client.HTTPResponse, body: bytes, what: str) -> StepError:
        """A refusal, in one line: what was asked, the status, the registry's own words."""
        status = response.status
        words = self._redacted(_registry_words(body))
        said = f" ({words})" if words else ""
        if status in (401, 403):
            who = f"as {self.creds.user}" if self.creds else "anonymously"
            hint = (f"check the name; log in: minictr login {self.registry}" if not self.creds
                    else f"check the name, and that {self.creds.user} may "
                    f"{self.actions.replace(',', ' and ')} it")
            return StepError(self.step, f"{what}: denied {who}: {status} "
                             f"{printable(response.reason, 40)}{said}", hint=hint)
        if status == 404:
            return StepError(self.step, f"{what}: not found in {self.registry}{said}",
                             hint="check the repository and the tag: curl -s "
                             f"{self.base}/v2/{self.repository}/tags/list")
        if status == 429:
            return self._rate_limited(response, what)
        return StepError(self.step, f"{what}: {self.host} answered {status} "
                         f"{printable(response.reason, 40)}{said}",
                         hint="try again later" if status >= 500 else None)

    def _rate_limited(self, response: http.client.HTTPResponse, what: str) -> StepError:
        left = describe_rate_limit(response.headers)
        wait = response.getheader("Retry-After")
        hint = "use a mirror (MINICTR_REGISTRY_MIRROR=https://HOST), log in for more pulls " \
               f"(minictr login {self.registry})"
        if wait and wait.isdigit():
            hint += f", or wait {int(wait)} s (Retry-After)"
        return StepError(self.step, f"{what}: {self.registry} refused: too many requests "
                         f"(429){': ' + left if left else ''}", hint=hint)

    def _redacted(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _curl(self, method: str, url: str, headers: dict[str, str],
              body: bytes | IO[bytes] | None) -> str:
        """The request as a curl line; secrets as $TOKEN, $PASSWORD (never their values)."""
        words = ["curl", "-s"] + (["-I"] if method == "HEAD" else
                                  [] if method == "GET" else ["-X", method])
        line = " ".join(words)
        for key, value in headers.items():
            if key in ("User-Agent", "Content-Length"):
                continue
            if key == "Authorization":
                line += (' -H "Authorization: Bearer $TOKEN"' if value.startswith("Bearer ")
                         else f" -u {shlex.quote(self.creds.user if self.creds else '')}"
                         ':"$PASSWORD"')
            else:
                line += f" -H {shlex.quote(f'{key}: {value}')}"
        if body is not None:
            line += (f" --data-binary @{'BLOB' if '/blobs/' in url else 'manifest.json'}"
                     if not isinstance(body, bytes) or len(body) > 200 else
                     f" --data-binary {shlex.quote(body.decode(errors='replace'))}")
        return printable(f"{line} {shlex.quote(url)}", 1000)


def _described(response: http.client.HTTPResponse) -> str:
    kind = response.getheader("Content-Type")
    length = response.getheader("Content-Length")
    where = response.getheader("Location")
    parts = [printable(kind, 80)] if kind else []
    parts += [f"{length} bytes"] if length and length.isdigit() else []
    parts += [f"Location: {printable(where, 160)}"] if where else []
    return f" ({', '.join(parts)})" if parts else ""


def _registry_words(body: bytes) -> str:
    """The first of {"errors": [{"code": ..., "message": ...}]} (the spec's error body)."""
    try:
        first = json.loads(body)["errors"][0]
        return printable(f"{first.get('code', '')}: {first.get('message', '')}".strip(": "), 160)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""


def describe_rate_limit(headers: Any) -> str:
    """Docker Hub's RateLimit-Limit: 100;w=21600 and RateLimit-Remaining: 76;w=21600, as
    "76 of 100 pulls left in 6 h for this address" ("" without them)."""
    limit = (headers.get("RateLimit-Limit") or "").split(";")
    remaining = (headers.get("RateLimit-Remaining") or "").split(";")
    if not limit[0].strip().isdigit() or not remaining[0].strip().isdigit():
        return ""
    window = next((p.split("=")[1] for p in limit[1:] if p.strip().startswith("w=")), "")
    per = f" in {int(window) // 3600} h" if window.isdigit() and int(window) >= 3600 else ""
    source = headers.get("Docker-RateLimit-Source")
    who = f" for {printable(source, 40)}" if source else ""
    return f"{remaining[0].strip()} of {limit[0].strip()} pulls left{per}{who}"


class _Body(io.RawIOBase):
    """A blob's body: counted, and a connection that ends early is one line, not a traceback."""

    def __init__(self, response: http.client.HTTPResponse, size: int, what: str,
                 client: Client) -> None:
        super().__init__()
        self._response = response
        self._size = size
        self._what = what
        self._client = client
        self.count = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = self._response.readinto(buffer)
        except (http.client.IncompleteRead, http.client.HTTPException, OSError) as e:
            self._response.close()
            if isinstance(e, TimeoutError):
                raise StepError(self._client.step, f"the download of {self._what} stalled "
                                f"after {self.count} of {self._size} bytes: nothing for "
                                f"{timeout():g} s", hint="pull again: what was downloaded "
                                "is not kept") from e
            raise StepError(self._client.step, f"the download of {self._what} was cut short "
                            f"after {self.count} of {self._size} bytes",
                            hint="pull again: what was downloaded is not kept") from e
        if n == 0:
            self.done = True
            if self.count < self._size:  # the server closed a body of unknown length early
                raise StepError(self._client.step, f"the download of {self._what} was cut "
                                f"short after {self.count} of {self._size} bytes",
                                hint="pull again: what was downloaded is not kept")
        self.count += n
        self._client.blob_bytes += n
        return n


def check_login(registry: str, creds: auth.Credentials) -> None:
    """`minictr login`: GET /v2/ with these credentials (for a token registry: a token for
    them, with no scope, as docker login asks) must be answered 200."""
    api = "registry-1.docker.io" if registry == "docker.io" else None
    client = Client(registry, "", api=api, step=auth.STEP, creds=creds)
    try:
        client.ping()
        response = client.request("GET", f"{client.base}/v2/")
        body = client._read(response, ERROR_MAX)
        if response.status in (401, 403):
            raise StepError(auth.STEP, f"{registry} refused {creds.user}'s password "
                            f"({response.status} {printable(response.reason, 40)})",
                            hint="check the user name and the password")
        if response.status != 200:
            raise client._error(response, body, f"{registry}/v2/")
    finally:
        client.close()


class _ReadAhead(io.RawIOBase):
    """The body, read on a thread up to 32 MiB ahead of the reader: the download goes on
    while the layer before it in the stream is decompressed and written (socket reads, zlib
    and sha256 all let go of the GIL). Errors come out of read() in order, as they happened."""

    _AHEAD = 32

    def __init__(self, body: _Body) -> None:
        import queue
        import threading

        super().__init__()
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(self._AHEAD)
        self._stopping = threading.Event()
        self._pending = b""
        self._thread = threading.Thread(target=self._fill, args=(body,), daemon=True)
        self._thread.start()

    def _fill(self, body: _Body) -> None:
        while not self._stopping.is_set():
            try:
                chunk = body.read(_CHUNK)
            except BaseException as e:  # handed over to the reader, in order
                chunk = e
            while not self._stopping.is_set():
                with contextlib.suppress(Exception):
                    self._queue.put(chunk, timeout=0.1)
                    break
            if not isinstance(chunk, bytes) or not chunk:
                return

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._queue.put(item)  # every later read fails the same way
                raise item
            if not item:
                self._queue.put(item)
                return 0
            self._pending = item
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=timeout())
