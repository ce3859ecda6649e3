"""One snapshot folder of a hub repo: its links read relative to the open folder, each to a blob key."""

from __future__ import annotations

import os
import stat as stat_mod

from hfcache.caches.huggingface.store import (
    Blob,
    Roots,
    has_inner_dotdot,
    named_blob,
    open_folder,
    resolve_link,
    stat_blob,
    stat_foreign,
)
from hfcache.model import Listed, ScanWarning


def _link_table(blobs: dict[str, Blob], depth: int, tables: dict[int, dict[str, str]]) -> dict[str, str]:
    """The hub's own link target for each counted blob, ``"../" * depth + "blobs/<etag>"``, mapped to its key.

    Made once per repo and folder depth (snapshots/<commit> is 2; 0 maps each key to itself),
    so the hot loop of a scan recognises a link with one dict lookup, and the sets of keys it
    builds hold the dict's own string objects, not an equal copy per link.
    """
    table = tables.get(depth)
    if table is None:
        up = "../" * depth
        table = tables[depth] = {up + k: k for k, b in blobs.items() if b.size is not None and k.startswith("blobs/")}
    return table


def _not_a_link(
    folder: str,
    name: str,
    fd: int,
    error: OSError,
    depth: int,
    cut: int,
    blobs: dict[str, Blob],
    keys: set[str],
    stack: list[tuple[str, int]],
    warnings: list[ScanWarning],
) -> str | None:
    """A snapshot entry ``readlink`` refused (``error``): ``copy`` or ``link`` when it counts as a file, else None.

    A folder is walked (pushed on ``stack``); a regular file is its own blob (a ``copy``: the
    no-symlink mode of Windows or ``HF_HUB_DISABLE_SYMLINKS``); a ``link`` that cannot be
    read, or anything else, is a warning, which keeps the revision from being deleted.
    """
    path = os.path.join(folder, name)
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError as e:
        warnings.append(ScanWarning(path, f"cannot read snapshot entry ({e.strerror or e})"))
        return None
    if stat_mod.S_ISDIR(st.st_mode):
        stack.append((path, depth + 1))
        return None
    if stat_mod.S_ISREG(st.st_mode):
        key = path[cut:]
        blobs[key] = stat_blob(st, path)
        keys.add(key)
        return "copy"
    if stat_mod.S_ISLNK(st.st_mode):
        warnings.append(ScanWarning(path, f"unreadable symlink ({error.strerror or error})"))
        return "link"
    warnings.append(ScanWarning(path, "unexpected entry in snapshot (not a file or folder)"))
    return None


def scan_snapshot(
    roots: Roots,
    repo_dir: str,
    snapshot_dir: str,
    blobs: dict[str, Blob],
    tables: dict[int, dict[str, str]],
    warnings: list[ScanWarning],
    files: list[Listed] | None = None,
) -> tuple[set[str], int]:
    """Walk one snapshot: the set of blob keys it reaches, and its number of files.

    With ``files``, each folder's files are also listed there as a verify needs them
    (:class:`~hfcache.model.FileListing`): the blob a link names by the rule of
    :mod:`hfcache.caches.huggingface.files` (:func:`~hfcache.caches.huggingface.store.named_blob`;
    almost always the key the scan found anyway), a link that cannot be read left out, as there.
    Two appends per file, of strings the walk holds already (a 100,000-file verify).
    """
    keys: set[str] = set()
    nb_files = 0
    blobs_prefix = repo_dir + os.sep + "blobs" + os.sep
    cut = len(repo_dir) + 1
    # Folders and how deep they are below the repo folder (snapshots/<commit> is 2).
    stack = [(snapshot_dir, 2)]
    while stack:
        folder, depth = stack.pop()
        hub_links = _link_table(blobs, depth, tables)
        if files is not None:
            listed_names: list[str] = []
            listed_keys: list[str | None] = []
            files.append((folder[len(snapshot_dir) + 1 :] + "/" if folder != snapshot_dir else "", listed_names, listed_keys))
        # Names, and links read relative to the open folder: no DirEntry or path string per
        # file, and the kernel resolves one name instead of the whole path (the hot loop).
        try:
            fd, names = open_folder(folder)
        except OSError as e:
            warnings.append(ScanWarning(folder, f"cannot read snapshot folder ({e.strerror or e})"))
            continue
        try:
            for name in names:
                try:
                    target = os.readlink(name, dir_fd=fd)
                except OSError as e:  # not a link (a folder, a file), or an unreadable one
                    what = _not_a_link(folder, name, fd, e, depth, cut, blobs, keys, stack, warnings)
                    nb_files += what is not None
                    if what == "copy" and files is not None:
                        listed_names.append(name)
                        listed_keys.append(None)
                    continue
                nb_files += 1
                key = hub_links.get(target)
                if key is not None:  # almost every link: exactly what the hub writes, to a counted blob
                    keys.add(key)
                    if files is not None:
                        listed_names.append(name)
                        listed_keys.append(key)
                    continue
                link = os.path.join(folder, name)
                if files is not None:
                    blob = named_blob(link, target, repo_dir, "../" * depth + "blobs/")
                    listed_names.append(name)
                    listed_keys.append("blobs/" + blob if blob else "")
                path = resolve_link(roots, folder, target)
                rest = path[len(blobs_prefix) :]
                if path.startswith(blobs_prefix) and os.sep not in rest and not has_inner_dotdot(target):
                    key = _link_table(blobs, 0, tables).get("blobs/" + rest)
                    if key is None:
                        warnings.append(ScanWarning(link, "broken symlink (blob missing)"))
                    else:
                        keys.add(key)
                    continue
                found = stat_foreign(roots, path, target)
                if isinstance(found, str):
                    warnings.append(ScanWarning(link, found))
                else:
                    warnings.append(ScanWarning(link, "symlink points outside its repo's blobs/"))
                    blobs.setdefault(found.path, found)
                    keys.add(found.path)
        finally:
            os.close(fd)
    return keys, nb_files
