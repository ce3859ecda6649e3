"""Fetching a hub revision with huggingface_hub itself (``hfcache sync``): ``snapshot_download`` into the cache.

The library does the work as every program on the node does it: its locks, its partial
downloads resumed, ``HF_ENDPOINT`` (a mirror) and ``HF_TOKEN`` (gated repos) honoured, the
files already there not downloaded again (a second run only asks which commit the ref names).
"""

from __future__ import annotations

import os
import sys

from hfcache.caches.protocol import Fetched, Wanted


def _present(folder: str) -> set[str]:
    """The files of a snapshot folder that reach their data now."""
    out = set()
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.exists(path):
                out.add(os.path.relpath(path, folder))
    return out


def fetch_revision(root: str, wanted: Wanted) -> Fetched:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils.tqdm import disable_progress_bars

    if not sys.stderr.isatty():  # its progress bars on a terminal only: never in a log, a cron mail, a pod's output
        disable_progress_bars()

    repo_type = wanted.type or "model"
    repo = os.path.join(root, f"{repo_type}s--{wanted.id.replace('/', '--')}")
    before: dict[str, set[str]] = {}
    snapshots = os.path.join(repo, "snapshots")
    if os.path.isdir(snapshots):
        before = {c: _present(os.path.join(snapshots, c)) for c in os.listdir(snapshots)}
    path = str(
        snapshot_download(
            wanted.id,
            repo_type=repo_type,
            revision=wanted.revision or "main",
            cache_dir=root,
            allow_patterns=list(wanted.include) or None,
            ignore_patterns=list(wanted.exclude) or None,
        )
    )
    commit = os.path.basename(path)
    present = _present(path) if os.path.isdir(path) else set()
    if not present:  # an include that matches nothing (a typo): nothing of the revision is here
        raise FileNotFoundError(f"no file of {wanted.id}@{wanted.revision or 'main'} matches include/exclude")
    added = present - before.get(commit, set())
    size = sum(os.path.getsize(os.path.join(path, f)) for f in added)
    return Fetched(commit, path, len(added), size)
