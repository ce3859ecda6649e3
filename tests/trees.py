"""Build hub-cache trees by hand, for the layout cases the real client cannot easily produce.

Only ``os`` calls, so the same helpers work on the real disk and under pyfakefs.
"""

from __future__ import annotations

import hashlib
import os


def commit(n: int | str) -> str:
    """A stable 40-hex commit hash for a label."""
    return hashlib.sha1(str(n).encode()).hexdigest()


def sha256(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def write(path: str, data: bytes | int = b"") -> str:
    """Create a file with these bytes (or this many zero bytes)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        if isinstance(data, int):
            f.truncate(data)
        else:
            f.write(data)
    return path


def link(path: str, target: str) -> str:
    """``path`` -> ``target`` (a relative target stays relative, as the hub writes them)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)
    return path


def repo(
    root: str,
    folder: str,
    *,
    snapshots: dict[str, dict[str, str]],
    blobs: dict[str, int],
    refs: dict[str, str] | None = None,
) -> str:
    """A repo folder: ``snapshots`` maps commit -> {file path: etag}; ``blobs`` etag -> size.

    Snapshot entries become relative symlinks ``../../blobs/<etag>`` (one more ``../`` per
    subfolder), exactly as huggingface_hub writes them.
    """
    repo_dir = os.path.join(root, folder)
    for etag, size in blobs.items():
        write(os.path.join(repo_dir, "blobs", etag), size)
    for rev, files in snapshots.items():
        os.makedirs(os.path.join(repo_dir, "snapshots", rev), exist_ok=True)
        for name, etag in files.items():
            depth = name.count("/")
            target = "../" * (2 + depth) + "blobs/" + etag
            link(os.path.join(repo_dir, "snapshots", rev, name), target)
    for name, rev in (refs or {}).items():
        write(os.path.join(repo_dir, "refs", name), rev.encode())
    return repo_dir


def shared_store(root: str) -> str:
    store = os.path.join(root, "blobs")
    write(os.path.join(store, ".huggingface-shared-blobs"), b"1\n")
    return store


def share(root: str, repo_dir: str, etag: str, xet_hash: str, size: int) -> str:
    """Turn ``repo_dir/blobs/<etag>`` into a link to the shared-store payload ``xet_hash``."""
    payload = os.path.join(root, "blobs", xet_hash[:2], xet_hash)
    if not os.path.exists(payload):
        write(payload, size)
    blob = os.path.join(repo_dir, "blobs", etag)
    if os.path.lexists(blob):
        os.unlink(blob)
    link(blob, f"../../blobs/{xet_hash[:2]}/{xet_hash}")
    rel = os.path.relpath(blob, root)
    with open(payload + ".refs", "a") as f:
        f.write(rel + "\n")
    return payload
