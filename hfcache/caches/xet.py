"""The Hugging Face Xet cache (hf_xet / xet-core): dedup shards and, before hf_xet 1.3, chunks.

Layout reference: ``CACHE-LAYOUTS.md`` section 3::

    <xet>/logs/                                   hf_xet's own logs (it prunes them itself)
    <xet>/<endpoint tag>/shard-cache/*.mdb        dedup shards
    <xet>/<endpoint tag>/staging/shard-session/   resumable-upload state
    <xet>/<endpoint tag>/chunk-cache/             hf_xet <= 1.2 only: dead weight since 1.3

Nothing here belongs to a model (it is keyed by content), so each endpoint folder is one
item, and its subfolders are its revisions: each can go on its own. Model loading never
reads from here; completed downloads live in hub blobs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hfcache.caches._common import (
    FunctionKind,
    Unit,
    build_item,
    env_path,
    expanduser,
    expandvars,
    inventory,
    is_dir,
    list_dir,
    names_in,
    open_and_scan,
    unknown_item,
)
from hfcache.caches.huggingface.location import default_hf_home
from hfcache.model import CacheInventory, Item, ScanWarning

KIND = "xet"
TITLE = "Hugging Face Xet cache"
KNOWN_SUBDIRS = ("shard-cache", "staging", "chunk-cache")
NOTES = {
    "chunk-cache": ("dead weight: hf_xet >= 1.3 no longer reads chunk-cache/", False),
    "staging": ("resumable-upload state: delete only when no upload is running or will be resumed", False),
}


def default_root(env: Mapping[str, str]) -> str:
    """``$HF_XET_CACHE``, else ``$HF_HOME/xet`` (``HF_HUB_CACHE`` has no effect on it).

    >>> default_root({"HOME": "/home/me"}), default_root({"HOME": "/h", "HF_HOME": "/data/hf"})
    ('/home/me/.cache/huggingface/xet', '/data/hf/xet')
    """
    explicit = env_path(env, "HF_XET_CACHE")
    if explicit is not None:
        return os.path.abspath(expandvars(expanduser(explicit, env), env))
    return os.path.join(default_hf_home(env), "xet")


def _is_endpoint(path: str) -> bool:
    return any(os.path.isdir(os.path.join(path, s)) for s in KNOWN_SUBDIRS)


def looks_like_cache(root: str) -> bool:
    names = names_in(root)
    return "logs" in names or any(_is_endpoint(os.path.join(root, n)) for n in names)


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one Xet cache folder.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no endpoint folders or logs/"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    seen: set[tuple[int, int]] = set()
    items: list[Item] = []
    for entry in entries:
        if entry.name == "logs" and is_dir(entry):
            items.append(build_item(KIND, "logs", "logs", entry.path, [Unit("logs", (entry.path,))], seen))
        elif is_dir(entry) and _is_endpoint(entry.path):
            units = []
            for sub in list_dir(entry.path, warnings):
                unit = Unit(sub.name, (sub.path,))
                note = NOTES.get(sub.name)
                if note is not None:
                    unit.warnings.append(ScanWarning(sub.path, note[0], blocks_deletion=note[1]))
                elif sub.name not in KNOWN_SUBDIRS:
                    unit.warnings.append(ScanWarning(sub.path, "not a folder hf_xet is known to write; reported, never deleted"))
                units.append(unit)
            items.append(build_item(KIND, entry.name, "xet-endpoint", entry.path, units, seen, owns_path=True))
        else:
            items.append(unknown_item(KIND, entry.path, real, seen, "not an endpoint folder"))
    return inventory(KIND, TITLE, real, items, warnings, ())


XET = FunctionKind(
    KIND,
    TITLE,
    ("xet-endpoint", "logs", "unknown"),
    lambda env: [default_root(env)],
    looks_like_cache,
    scan,
    shapes=(r"[^/]+", r"[^/]+/[^/]+"),  # logs/ or an endpoint folder; one of its subfolders
)
