"""Image references, as Docker reads them: ``alpine``, ``alpine:3.20``, ``ghcr.io/org/x@sha256:…``.

A reference names a repository in a registry, and a tag or a digest in it:

    localhost:5000/team/app:1         registry localhost:5000, repository team/app, tag 1
    alpine                            registry docker.io, repository library/alpine, tag latest
    alpine@sha256:<64 hex>            the same repository, pinned to one manifest's digest

Docker's rules (distribution/reference, "normalize.go"): the first part is a registry only if
it has a ``.`` or a ``:`` or is ``localhost``; otherwise the registry is ``docker.io`` and a
one-word repository gets ``library/``. No tag means ``latest``. Repositories are lower case.

**Local names and references are never confused**: minictr's own image names (``busybox``, a
commit's name) have no ``:``, ``/`` or ``@`` (minictr.store.NAME_PATTERN); a reference given to
``run`` or ``push`` always has one of them (``alpine:3.20``, ``team/app``), and ``pull`` takes
only references. A pulled image is stored under its *familiar* name, the short form Docker
prints (``alpine:3.20``, ``localhost:5000/team/app:1``), and images/ holds it as a file whose
name is that string percent-encoded (``alpine%3A3.20.json``): no ``/`` and no ``..`` ever
reaches the filesystem, and a ``%`` is never in a local name, so the two kinds cannot collide.

See: https://github.com/distribution/reference/blob/main/reference.go (the grammar),
     https://github.com/opencontainers/distribution-spec/blob/main/spec.md ("<name>", "<reference>")
"""

from __future__ import annotations

import re
from typing import NamedTuple

from minictr.errors import StepError

STEP = "check input"
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where docker.io's /v2/ answers
NAME_MAX = 255  # the whole repository name, registry included (reference.go)

# The grammar of reference.go, piece by piece.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
REGISTRY = re.compile(_DOMAIN)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_HEX64 = re.compile(r"[a-f0-9]{64}")
_FILE_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
FILE_STEM_MAX = 240  # images/STEM.json and its .STEM.json.tmp must fit in NAME_MAX (255)


class Reference(NamedTuple):
    registry: str  # "docker.io", "localhost:5000", "ghcr.io"
    repository: str  # "library/alpine", "team/app"
    tag: str | None  # "3.20"; None when pinned by digest
    digest: str | None  # "sha256:..."

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in the URL: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def canonical(self) -> str:
        """The full form: docker.io/library/alpine:3.20."""
        return f"{self.registry}/{self.repository}{self._suffix}"

    @property
    def familiar(self) -> str:
        """The short form Docker prints, and the name minictr stores the image under."""
        name = f"{self.registry}/{self.repository}"
        if self.registry == DOCKER_HUB:  # docker.io/library/alpine -> alpine
            name = self.repository
            if name.startswith("library/") and name.count("/") == 1:
                name = name.removeprefix("library/")
        return f"{name}{self._suffix}"

    @property
    def _suffix(self) -> str:
        return f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}"

    def with_digest(self, digest: str) -> Reference:
        return self._replace(tag=None, digest=digest)


def looks_like_reference(text: str) -> bool:
    """A reference has a ':', '/' or '@'; a local image name has none of them."""
    return any(c in text for c in ":/@")


def parse(text: str) -> Reference:
    """Docker's normalisation of ``text``, or a one-line refusal that says which rule broke.

    Shell: docker pull TEXT (what it would fetch: docker image inspect --format '{{.RepoTags}}')
    """
    if not text or len(text) > NAME_MAX + 1 + 128 + 1 + 7 + 128 or not text.isascii() \
            or not text.isprintable() or any(c.isspace() for c in text):
        raise _bad(text, "not a reference")
    rest, _, digest = text.partition("@")
    if digest and not DIGEST.fullmatch(digest):
        raise _bad(text, "its digest is not sha256:<64 hex digits> (or sha512:<128>)")
    name, tag = rest, None
    colon, slash = rest.rfind(":"), rest.rfind("/")
    if colon > slash:  # a ':' after the last '/' starts the tag (before it: a port)
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise _bad(text, "its tag may have letters, digits, '_', '.' and '-' "
                       "(at most 128, not starting with '.' or '-')")
    registry, repository = _split_registry(name)
    if not REGISTRY.fullmatch(registry):
        raise _bad(text, f"{registry!r} is not a registry host[:port]")
    if repository.lower() != repository:
        raise _bad(text, "repository names must be lower case")
    if not _REPOSITORY.fullmatch(repository):
        raise _bad(text, "a repository is lower-case words of letters and digits, joined by "
                   "'.', '_', '__' or '-', separated by '/'")
    if registry == DOCKER_HUB and _HEX64.fullmatch(repository.removeprefix("library/")):
        raise _bad(text, "64 hexadecimal digits are an image id, not a repository")
    if len(registry) + 1 + len(repository) > NAME_MAX:
        raise _bad(text, f"the name is longer than {NAME_MAX} characters")
    return Reference(registry, repository, None if digest else (tag or "latest"), digest or None)


def _split_registry(name: str) -> tuple[str, str]:
    """normalize.go splitDockerDomain: is the first part a registry, or part of the path?"""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == "index.docker.io":  # the old name of Docker Hub
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _bad(text: str, why: str) -> StepError:
    return StepError(STEP, f"invalid reference {text[:300]!r}: {why}",
                     hint="write it as Docker does: alpine, alpine:3.20, "
                     "localhost:5000/team/app:1, ghcr.io/org/x@sha256:<64 hex>")


# --- images/ file names ------------------------------------------------------------------------


def file_stem(name: str) -> str:
    """The file name (without .json) that holds an image in images/: a local name as it is,
    a familiar reference percent-encoded (every byte but letters, digits, '_', '.', '-'):
    alpine:3.20 -> alpine%3A3.20, so no '/' or '..' reaches the filesystem."""
    stem = "".join(c if c in _FILE_SAFE else f"%{ord(c):02X}" for c in name)
    if len(stem) > FILE_STEM_MAX:
        raise StepError(STEP, f"the reference {name[:80]!r}… is too long to be stored "
                        f"({len(stem)} characters once encoded, at most {FILE_STEM_MAX})",
                        hint="push it under a shorter name")
    return stem


def name_of_file(stem: str) -> str:
    """file_stem's inverse."""
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), stem)


def check_stored_name(name: str) -> str:
    """A name of a pulled image as images/ holds it: a reference in its familiar form."""
    if parse(name).familiar != name:
        raise _bad(name, f"stored images are named in the short form, "
                   f"{parse(name).familiar!r}")
    file_stem(name)
    return name

