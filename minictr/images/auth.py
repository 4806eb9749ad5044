"""Who minictr is to a registry: Docker's credentials file, the server's challenge, the token.

A registry says how to authenticate when it refuses a request: ``401 Unauthorized`` with

    WWW-Authenticate: Bearer realm="https://auth.docker.io/token",service="registry.docker.io"
    WWW-Authenticate: Basic realm="Registry Realm"

*Basic*: every request carries ``Authorization: Basic base64(user:password)``. *Bearer*: the
client asks the realm for a token for one scope (``repository:library/alpine:pull``), with
the user's password if it has one and anonymously if not, and sends ``Authorization: Bearer
TOKEN`` from then on. The token is short-lived and names what it allows; a registry that wants
more says so in a new challenge (``error="insufficient_scope"``).

Credentials are where ``docker login`` keeps them, so a user who logged in with Docker is
logged in here too: ``~/.docker/config.json`` (or ``$DOCKER_CONFIG/config.json``)::

    {"auths": {"localhost:5000": {"auth": "base64(user:password)"},
               "https://index.docker.io/v1/": {"auth": "..."}}}

Docker Hub's key is that old URL, as Docker writes it. minictr writes the same format, with
mode 0600, and never prints a password or a token: --explain shows ``$PASSWORD`` and
``$TOKEN`` in their places. (Docker's credential helpers, ``credsStore`` and ``credHelpers``,
keep them elsewhere: minictr says so and goes on anonymously.)

See: https://distribution.github.io/distribution/spec/auth/token/ (the token flow),
     RFC 7235 (WWW-Authenticate), RFC 7617 (Basic), docker-login(1)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from minictr.errors import StepError
from minictr.explain import note

STEP = "log in"
DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # docker.io's key in config.json, as Docker's


class Credentials(NamedTuple):
    user: str
    password: str

    def basic(self) -> str:
        """The value of an Authorization header: Basic base64(user:password) (RFC 7617)."""
        pair = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


class Challenge(NamedTuple):
    scheme: str  # "bearer" or "basic", lower case
    params: dict[str, str]  # realm, service, scope, error


# --- config.json ----------------------------------------------------------------------------


def config_path() -> Path:
    """Where Docker keeps it: $DOCKER_CONFIG/config.json, else ~/.docker/config.json."""
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def config_key(registry: str) -> str:
    return DOCKER_HUB_KEY if registry == "docker.io" else registry


def _host_of_key(key: str) -> str:
    """A key as others write it (https://localhost:5000/v2/, index.docker.io) as a registry."""
    host = re.sub(r"^[a-z]+://", "", key).split("/")[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def _read_config() -> dict:
    path = config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StepError(STEP, f"{path} is not readable JSON: {e!s:.100}",
                        hint=f"fix or remove it: mv {path} {path}.bad") from e
    if not isinstance(config, dict):
        raise StepError(STEP, f"{path} is not a JSON object", hint=f"mv {path} {path}.bad")
    return config


def credentials(registry: str) -> Credentials | None:
    """The user and password config.json has for the registry, if any."""
    config = _read_config()
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for key, entry in auths.items():
        if _host_of_key(str(key)) != registry or not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
                if sep:
                    return Credentials(user, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
        if entry.get("identitytoken"):
            note(f"{config_path()} has an identity token for {registry}, which minictr does "
                 "not use: going on anonymously")
    helper = (config.get("credHelpers") or {}).get(config_key(registry)) or config.get(
        "credsStore")
    if helper:
        note(f"{config_path()} keeps credentials in a helper (docker-credential-{helper}), "
             "which minictr does not run: going on anonymously (minictr login REGISTRY)")
    return None


def save(registry: str, creds: Credentials) -> Path:
    """Write the registry's entry into config.json, keeping everything else in it; mode 0600,
    and atomic: a new file renamed over the old one."""
    config = _read_config()
    auths = config.setdefault("auths", {})
    if not isinstance(auths, dict):
        auths = config["auths"] = {}
    for key in [k for k in auths if _host_of_key(str(k)) == registry]:
        del auths[key]
    auths[config_key(registry)] = {"auth": creds.basic().removeprefix("Basic ")}
    return _write_config(config)


def remove(registry: str) -> bool:
    """Forget the registry's entry. Returns whether there was one."""
    config = _read_config()
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return False
    keys = [k for k in auths if _host_of_key(str(k)) == registry]
    for key in keys:
        del auths[key]
    if keys:
        _write_config(config)
    return bool(keys)


def _write_config(config: dict) -> Path:
    path = config_path()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(config, indent="\t") + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StepError.from_os_error(STEP, e) from e
    return path


# --- the challenge --------------------------------------------------------------------------

_PARAM = re.compile(r'\s*([A-Za-z_]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="…",service="…",scope="…"`` as (scheme, params); None if unreadable."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "basic"):
        return None
    params, pos = {}, 0
    while pos < len(rest) and (m := _PARAM.match(rest, pos)) and m.end() > pos:
        value = m[2]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[m[1].lower()] = value
        pos = m.end()
    return Challenge(scheme.lower(), params)
