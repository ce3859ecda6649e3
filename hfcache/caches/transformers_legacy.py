"""The flat cache of transformers before 4.22 (and its leftovers after the migration).

Layout reference: ``CACHE-LAYOUTS.md`` section 2.11::

    <root>/<sha256(url)>.<sha256(etag)>[.h5]          the file
    <root>/<sha256(url)>.<sha256(etag)>[.h5].json     {"url": ..., "etag": ...}
    <root>/<sha256(url)>.<sha256(etag)>[.h5].lock     flock, left in place
    <root>/<sha256(url)>.<sha256(etag)>.incomplete    resume_download=True partial
    <root>/tmpXXXXXXXX                                resume_download=False partial

One item per URL (``org/model/filename`` for Hub URLs), one revision per etag. transformers
4.22-4.48 moved these files into the hub cache and left what it could not move; 4.49+
never reads this folder at all.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping

from hfcache.caches._common import (
    TEMPFILE_RE,
    FunctionKind,
    Unit,
    build_item,
    env_path,
    expanduser,
    expandvars,
    inventory,
    names_in,
    open_and_scan,
    partial_file,
    read_small_json,
    unknown_item,
)
from hfcache.caches.huggingface.location import REPO_DIR_RE, default_hf_home
from hfcache.caches.torch import torch_home
from hfcache.fs.locks import is_lock_held
from hfcache.model import CacheInventory, Item, PartialFile, ScanWarning

KIND = "transformers-legacy"
TITLE = "transformers < 4.22 cache"
ENV_CHAIN = ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE")
_FILE_RE = re.compile(r"(?P<url>[0-9a-f]{64})\.(?P<etag>[0-9a-f]{64})(?P<ext>\.h5)?")
# https://huggingface.co/<repo>/resolve/<revision>/<filename> (transformers 4.22 extract_info_from_url)
_HUB_URL_RE = re.compile(r"^https://huggingface\.co/(?P<repo>.*)/resolve/(?P<rev>[^/]*)/(?P<file>.*)$")


def default_root(env: Mapping[str, str]) -> str:
    """``TRANSFORMERS_CACHE`` > ``PYTORCH_TRANSFORMERS_CACHE`` > ``PYTORCH_PRETRAINED_BERT_CACHE`` > ``$HF_HOME/transformers``.

    >>> default_root({"HOME": "/home/me"})
    '/home/me/.cache/huggingface/transformers'
    """
    for name in ENV_CHAIN:
        value = env_path(env, name)
        if value is not None:
            return os.path.abspath(expandvars(expanduser(value, env), env))
    return os.path.join(default_hf_home(env), "transformers")


def default_roots(env: Mapping[str, str]) -> list[str]:
    """The 4.x root, then the 3.x default ``$TORCH_HOME/transformers`` when it is still there."""
    roots = [default_root(env)]
    old = os.path.join(torch_home(env), "transformers")
    if old not in roots and os.path.isdir(old):
        roots.append(old)
    return roots


def _identity(url: str | None, name: str) -> tuple[str, tuple[str, ...]]:
    """(item id, refs) from the URL of the ``.json``; the file name when there is none."""
    if url is None:
        return name, ()
    match = _HUB_URL_RE.match(url)
    if match:
        return f"{match.group('repo')}/{match.group('file')}", (match.group("rev"),)
    return url, ()


def looks_like_cache(root: str) -> bool:
    names = names_in(root)
    hub_folders = any(REPO_DIR_RE.fullmatch(n) for n in names)  # TRANSFORMERS_CACHE of transformers >= 4.22
    return hub_folders or any(
        _FILE_RE.fullmatch(n.removesuffix(".json").removesuffix(".lock")) or n == "version.txt" for n in names
    )


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one legacy transformers cache folder.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no <hash>.<hash> files"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    names = {e.name for e in entries}
    seen: set[tuple[int, int]] = set()
    items: list[Item] = []
    partials: list[PartialFile] = []
    groups: dict[str, list[Unit]] = defaultdict(list)
    for entry in entries:
        name = entry.name
        if name.endswith((".json", ".lock")) and os.path.splitext(name)[0] in names:
            continue  # metadata and lock of a file listed on its own
        if name == "version.txt":
            continue  # transformers' migration marker (the hub cache keeps its own)
        if REPO_DIR_RE.fullmatch(name) or name == ".locks":
            warnings.append(
                ScanWarning(entry.path, "hub-layout folder (transformers >= 4.22); scan it with --kind huggingface", False)
            )
            continue
        if name.endswith(".incomplete") or TEMPFILE_RE.fullmatch(name):
            lock = os.path.join(real, name.removesuffix(".incomplete") + ".lock") if name.endswith(".incomplete") else None
            scheme = "resumable" if name.endswith(".incomplete") else "temporary"
            partials.append(partial_file(entry.path, None, scheme, seen, warnings, lock))
            continue
        match = _FILE_RE.fullmatch(name)
        if not match:
            items.append(unknown_item(KIND, entry.path, real, seen, "not a transformers cache file"))
            continue
        meta = read_small_json(entry.path + ".json") if name + ".json" in names else None
        url = meta.get("url") if meta else None
        item_id, refs = _identity(url if isinstance(url, str) else None, match.group("url"))
        paths = (entry.path, *(entry.path + s for s in (".json", ".lock") if name + s in names))
        unit = Unit(match.group("etag"), paths, refs=refs)
        lock = entry.path + ".lock"
        if is_lock_held(lock):
            unit.warnings.append(ScanWarning(lock, "lock held: a process is using this file"))
        groups[item_id].append(unit)
    for item_id, units in sorted(groups.items()):
        path = units[0].paths[0] if len(units) == 1 else real
        items.append(build_item(KIND, item_id, "file", path, units, seen))
    return inventory(KIND, TITLE, real, items, warnings, (), partials)


TRANSFORMERS_LEGACY = FunctionKind(
    KIND,
    TITLE,
    ("file", "unknown"),
    default_roots,
    looks_like_cache,
    scan,
    shapes=(r"[^/]+",),  # a file with its .json and .lock, a partial
)
