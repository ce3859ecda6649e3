"""What an archive keeps of a hub revision: its blobs, its snapshot's links to them, and the refs naming it.

Restored, that is the hub's own layout: ``blobs/<etag>`` (a regular file, even when the
cache kept it in the cross-repo shared store: the hub reads either), each
``snapshots/<commit>/<path>`` a relative link ``../../blobs/<etag>``, and each ref written
only where the repo has none (a newer ``main`` is never moved back). A file kept as a copy
(the no-symlink mode) is restored as a copy.
"""

from __future__ import annotations

import os

from hfcache.caches.huggingface.files import blob_hash, revision_files
from hfcache.caches.protocol import Layout, Stored
from hfcache.model import CacheInventory, Item, Revision


def hub_layout(cache: CacheInventory, item: Item, rev: Revision) -> Layout:
    repo = os.path.relpath(item.path, cache.root).replace(os.sep, "/")
    files: dict[str, Stored] = {}
    links: list[tuple[str, str]] = []
    for f in revision_files(item, rev):
        entry = f"{repo}/snapshots/{rev.revision}/{f.name}"
        if f.key is None:
            return Layout(problem=f"{f.path}: a link to no blob (hfcache verify --repair takes it out)")
        if f.key.startswith("blobs/"):
            etag = f.key[len("blobs/") :]
            place = f"{repo}/{f.key}"
            files.setdefault(place, Stored(place, os.path.join(item.path, "blobs", etag), f.name, blob_hash(etag)))
            links.append((entry, "../" * (f.name.count("/") + 2) + f.key))
        else:  # a copy: the file itself
            files[entry] = Stored(entry, f.path, f.name)
    texts = tuple((f"{repo}/refs/{ref}", rev.revision) for ref in rev.refs)
    return Layout(tuple(files.values()), tuple(links), texts, merge=True)  # a commit's files: the same wherever archived
