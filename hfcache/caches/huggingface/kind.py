"""The hub cache as a cache kind: its protocol members (deletion shapes, steps, locks)."""

from __future__ import annotations

from hfcache.caches._common import TEMPFILE_RE, FunctionKind, names_in
from hfcache.caches.huggingface.archive import hub_layout
from hfcache.caches.huggingface.delete import HUB_DELETION
from hfcache.caches.huggingface.fetch import fetch_revision
from hfcache.caches.huggingface.files import revision_hashes
from hfcache.caches.huggingface.location import (
    KIND,
    REPO_TYPES,
    SHARED_STORE_DIR,
    TITLE,
    default_roots,
    looks_like_cache,
    parse_hf_uri,
)
from hfcache.caches.huggingface.scan import scan

_REPO_SHAPE = rf"(?:{'|'.join(REPO_TYPES)})--[^/]+"


_COMMIT_SHAPE = "[0-9a-f]{40}"


HUB = FunctionKind(
    KIND,
    TITLE,
    tuple(REPO_TYPES.values()),
    default_roots,  # the hub's root, and llama.cpp's LLAMA_CACHE when it holds a hub cache
    lambda root: looks_like_cache(names_in(root), root),
    scan,
    parallel=True,
    has_refs=True,  # branches, tags and PR refs name its revisions
    uri=parse_hf_uri,  # hf://models/org/name@rev, as hf cache rm takes it
    shapes=(
        _REPO_SHAPE,  # a whole repo folder, with its last revision
        rf"{_REPO_SHAPE}/snapshots/{_COMMIT_SHAPE}",
        rf"{_REPO_SHAPE}/refs/.+",  # a ref (refs/pr/1 too) naming a revision that goes
        rf"{_REPO_SHAPE}/blobs/[^/]+",  # a blob no remaining revision uses, a partial, an orphan
        rf"{_REPO_SHAPE}/\.no_exist/{_COMMIT_SHAPE}",
        rf"{_REPO_SHAPE}/trees/{_COMMIT_SHAPE}\.json",
        TEMPFILE_RE.pattern,  # the hub's symlink probe folder (tempfile.mkdtemp)
        rf"{SHARED_STORE_DIR}/[0-9a-f]{{2}}/[0-9a-f]{{64}}",  # a shared payload (swept by the hub's own code)
    ),
    # The hub's scan_cache_dir warns about any unknown entry in the root, but skips .locks/;
    # its own locks live one level down, in .locks/<repo folder>/, so this name cannot collide.
    lock_file=".locks/hfcache-prune.lock",
    deletion=HUB_DELETION,
    hashes=revision_hashes,  # a blob's name is the sha256 (LFS, Xet) or git blob hash of its content
    archive=hub_layout,  # blobs, the snapshot's links, the refs: the hub's own layout when restored
    download=fetch_revision,  # hfcache sync: snapshot_download, the library's own way
    skips_unchanged=True,  # scan(skip=...): a repeat verify counts an unchanged repo from its memo
)
