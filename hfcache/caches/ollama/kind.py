"""Ollama's model store as a cache kind: its roots, deletion shapes and steps, and ``model:tag`` names for ``hfcache rm``."""

from __future__ import annotations

import os

from hfcache.caches._common import FunctionKind
from hfcache.caches.ollama.delete import OLLAMA_DELETION
from hfcache.caches.ollama.layout import KIND, TITLE, TRASH, default_roots, looks_like_cache, parse_name
from hfcache.caches.ollama.scan import scan
from hfcache.caches.protocol import Expected, Layout, Stored, Uri
from hfcache.model import CacheInventory, Item, Revision

_HEX = "[0-9a-fA-F]{64}"


def parse_ollama_name(text: str) -> Uri | None:
    """``model:tag`` as Ollama names a tag (``ollama rm llama3:8b``), any part of the host and namespace given or not.

    Only a name with a tag is read here: ``llama3`` alone is an id as ``scan`` shows it (so it
    names the whole model, with every tag, as ``hfcache rm org/name`` names a whole repo), and
    ``llama3@8b`` is hfcache's own ``id@revision``. The id is the one ``ollama list`` prints.

    >>> parse_ollama_name("registry.ollama.ai/library/llama3:8b")
    Uri(id='llama3', revision='8b', type=None, file=None)
    >>> parse_ollama_name("llama3") is None, parse_ollama_name("org/name@v1") is None
    (True, True)
    """
    if "://" in text or "@" in text or text.rfind(":") <= text.rfind("/"):
        return None
    name = parse_name(text)
    return Uri(name.id, name.tag) if name.valid else None


def blob_hashes(cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
    """Each blob a tag names is ``blobs/sha256-<hex>``, the sha256 of its content (``hfcache verify``)."""
    out = []
    for name in sorted(rev.blobs):
        path = os.path.join(cache.root, "blobs", name)
        digest = name.removeprefix("sha256-")
        out.append(Expected(name, path, path, "sha256", digest.lower()))
    return out


def tag_layout(cache: CacheInventory, item: Item, rev: Revision) -> Layout:
    """A tag as an archive keeps it: its manifest and every blob it names (those other tags share too, which may be
    gone by the time it is restored)."""
    root = cache.root.rstrip(os.sep) + os.sep
    if not rev.path.startswith(root):
        return Layout(problem=f"{rev.path} is not under the store")
    manifest = Stored(rev.path[len(root) :].replace(os.sep, "/"), rev.path, rev.revision)
    blobs = tuple(
        Stored(f"blobs/{name}", os.path.join(cache.root, "blobs", name), name, ("sha256", name.removeprefix("sha256-").lower()))
        for name in sorted(rev.blobs)
    )
    return Layout((manifest, *blobs))


OLLAMA = FunctionKind(
    KIND,
    TITLE,
    ("model", "unknown"),
    default_roots,
    looks_like_cache,
    scan,
    shapes=(
        "manifests/[^/]+/[^/]+/[^/]+/[^/]+",  # a tag's manifest
        "manifests/[^/]+(?:/[^/]+){0,2}",  # a model's emptied folder and those above it (rmdir only)
        f"blobs/sha256-{_HEX}",  # a blob no manifest names
        rf"blobs/sha256-{_HEX}(?:-partial(?:-[0-9]+)?|\.tmp)",  # a download: data file, part state, x/transfer's
        "blobs/(?:sha256-|split-copy|projector-metadata|compat-tensors)[0-9]{1,20}",  # create's temporary files
        f"{TRASH}/sha256-{_HEX}",  # a blob set aside while the manifests are read again
    ),
    deletion=OLLAMA_DELETION,
    uri=parse_ollama_name,
    hashes=blob_hashes,  # content-addressed: a blob's name is the sha256 of its bytes
    archive=tag_layout,
)
