"""hfcache's trash in a hub cache: the names in it, how the scan reads it, and the repair after a kill.

What a prune sets aside (:mod:`hfcache.caches.huggingface.delete`) waits in one private
folder of the cache, ``.locks/hfcache-trash/``, flat, each name saying which repo it came
from (:func:`trash_name`). The scan reads it as the repair will leave it (:func:`read_trash`,
:func:`scan_trash`); :func:`recover_trash`, run under the prune lock before anything is
deleted, is that repair: refs of a snapshot still there go back, a snapshot set aside is
finished, a blob set aside goes back if linked, else goes.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from functools import lru_cache
from urllib.parse import quote, unquote

from hfcache.caches.huggingface.location import COMMIT_RE
from hfcache.caches.huggingface.store import Blob, Roots, list_folder, new_blob, read_small
from hfcache.fs.ops import Tree, UnsafePath
from hfcache.model import ScanWarning

log = logging.getLogger("hfcache.caches.huggingface.delete")

TRASH = os.path.join(".locks", "hfcache-trash")  # relative to the cache root
# In the trash, one level, each name starting with its repo folder (quoted) and "+":
#   <repo>+<commit>                   a snapshot set aside
#   <repo>+<commit>.ref.<quoted ref>  a ref set aside (refs/pr/1 is "pr%2F1")
#   <repo>+blob.<name>                a blob set aside while its links are checked
REPO_MARK = "+"
REF_MARK = ".ref."
BLOB_MARK = "blob."


def trash_name(repo: str, rest: str) -> str:
    """The trash entry of ``rest`` (``<commit>``, ``<commit>.ref.<ref>``, ``blob.<name>``) of the repo at ``repo``."""
    return _quoted(os.path.basename(repo)) + REPO_MARK + rest


@lru_cache(maxsize=1024)
def _quoted(folder: str) -> str:  # (a repo's entries are named many times over: its revisions, refs, blobs)
    return quote(folder, safe="-_.")


def parse_trash_name(name: str) -> tuple[str, str] | None:
    """``(repo folder name, rest)`` of a trash entry, or None for a name hfcache never makes."""
    quoted, mark, rest = name.partition(REPO_MARK)
    return (unquote(quoted), rest) if mark and quoted and rest else None


def ref_entry(commit: str, ref: str) -> str:
    return f"{commit}{REF_MARK}{quote(ref, safe='')}"


def parse_ref_entry(name: str) -> tuple[str, str] | None:
    """``(commit, ref)`` of a ref set aside (the part after the repo), or None for another entry."""
    commit, mark, quoted = name.partition(REF_MARK)
    return (commit, unquote(quoted)) if mark and len(commit) == 40 and quoted else None


# ---------------------------------------------------------------------------------------------
# What the scan reads of it


def read_trash(roots: Roots, warnings: list[ScanWarning]) -> None:
    """List hfcache's trash (``.locks/hfcache-trash/``) once, into ``roots.trash`` by repo folder."""
    trash_dir = os.path.join(roots.real, TRASH)
    try:
        if not stat_mod.S_ISDIR(os.lstat(trash_dir).st_mode):
            warnings.append(ScanWarning(trash_dir, "hfcache's trash is not a folder"))
            return
    except OSError:
        return  # the usual case: no prune ever set anything aside here
    for entry in list_folder(trash_dir, TRASH, warnings):
        parsed = parse_trash_name(entry.name)
        if parsed is None:
            warnings.append(ScanWarning(entry.path, "unexpected entry in hfcache's trash", blocks_deletion=False))
            continue
        roots.trash.setdefault(parsed[0], []).append((entry, parsed[1]))


def scan_trash(
    repo_dir: str,
    entries: list[tuple[os.DirEntry[str], str]],
    blobs: dict[str, Blob],
    set_aside: dict[str, Blob],
    warnings: list[ScanWarning],
) -> dict[str, list[str]]:
    """Read a repo's entries in hfcache's trash (a prune's work in progress) as the repair will leave them.

    Refs set aside for a snapshot that is still there are its refs (commit -> names); a
    blob set aside counts as the blob it was (``set_aside`` lists those); a snapshot set
    aside is already gone. The steps that leave them: :mod:`hfcache.caches.huggingface.delete`.
    """
    refs: dict[str, list[str]] = {}
    for entry, name in entries:
        regular = entry.is_file(follow_symlinks=False)
        if name.startswith(BLOB_MARK) and regular:
            key = "blobs/" + name[len(BLOB_MARK) :]
            if key not in blobs:
                st = entry.stat(follow_symlinks=False)
                blobs[key] = set_aside[key] = new_blob(Blob, (st.st_size, st.st_atime, st.st_mtime, None, ""))
            continue
        ref = parse_ref_entry(name) if regular else None
        commit = ref[0] if ref else name if COMMIT_RE.fullmatch(name) and entry.is_dir(follow_symlinks=False) else None
        if commit is None:
            warnings.append(ScanWarning(entry.path, "unexpected entry in hfcache's trash"))
            continue
        if os.path.lexists(os.path.join(repo_dir, "snapshots", commit)):
            if ref and read_small(entry.path).decode("ascii", "replace").strip() == commit:
                refs.setdefault(commit, []).append(ref[1])
            message = "an interrupted prune set this revision's refs aside: the next prune puts them back"
        else:
            message = "an interrupted prune was removing this revision: the next prune finishes it"
        warnings.append(ScanWarning(entry.path, message, blocks_deletion=False))
    return refs


# ---------------------------------------------------------------------------------------------
# Putting back what was set aside (through a Tree)


def trash_path(tree: Tree) -> str:
    """hfcache's trash in the cache ``tree`` is open on."""
    return os.path.join(tree.path, TRASH)


def listdir(tree: Tree, path: str) -> list[str]:
    """The names in the folder ``path``; none where it is gone, a symlink, a mount point or not a folder."""
    try:
        return tree.listdir(path)
    except (UnsafePath, NotADirectoryError):
        return []


class _EveryName(frozenset[str]):
    """What a reading of the links that could not see them all says: every blob may be linked."""

    def __contains__(self, name: object) -> bool:
        return True


EVERY_NAME = _EveryName()


def linked_blobs(tree: Tree, repo: str) -> AbstractSet[str]:
    """Names of the blobs some snapshot link of the repo points to now (``blobs/<name>``).

    When a folder under ``snapshots/`` cannot be read strictly (a mount point, a folder
    swapped for a symlink), the links behind it are unknown: every name counts as linked
    (:data:`EVERY_NAME`), so no blob leaves on a partial reading.
    """
    names: set[str] = set()
    try:
        for target in tree.links(os.path.join(repo, "snapshots"), strict=True):
            name = _blob_of(target)
            if name:
                names.add(name)
    except UnsafePath as e:
        log.warning("%s: %s: every blob of it stays", repo, e)
        return EVERY_NAME
    return names


def restore_refs(tree: Tree, repo: str, commit: str, names: Sequence[str] | None = None) -> None:
    """Put the refs of ``commit`` set aside back, each only where no newer ref took its place.

    ``names``: the trash's entries, when the caller listed it already.
    """
    trash = trash_path(tree)
    prefix = trash_name(repo, "")
    for name in listdir(tree, trash) if names is None else names:
        parsed = parse_ref_entry(name[len(prefix) :]) if name.startswith(prefix) else None
        if parsed is None or parsed[0] != commit:
            continue
        src, dst = os.path.join(trash, name), os.path.join(repo, "refs", parsed[1])
        try:
            if tree.lstat(dst) is None:
                tree.makedirs(os.path.dirname(dst))
                tree.rename(src, dst)
            else:
                tree.unlink(src, count=False)
        except OSError:
            continue


def aside_prefix(tree: Tree, repo: str) -> str:
    """Where a blob of ``repo`` set aside lies, but for its name (appended): ``<trash>/<repo>+blob.``."""
    return os.path.join(trash_path(tree), trash_name(repo, BLOB_MARK))


def restore_blob(tree: Tree, repo: str, name: str) -> None:
    """Put a set-aside blob back, unless a download already wrote a new copy (then the aside one goes)."""
    src, dst = aside_prefix(tree, repo) + name, os.path.join(repo, "blobs", name)
    try:
        if tree.lstat(dst) is None:
            tree.rename(src, dst)
        else:
            tree.unlink(src)
    except OSError:
        pass


def put_back_linked(tree: Tree, repo: str, aside: dict[str, str]) -> None:
    """Put back each blob of ``aside`` (set aside: name -> unit) a snapshot links now, and drop it from ``aside``."""
    linked = linked_blobs(tree, repo)
    for name in [n for n in aside if n in linked]:
        restore_blob(tree, repo, name)
        del aside[name]


# ---------------------------------------------------------------------------------------------
# After a kill


def recover_trash(tree: Tree) -> list[str]:
    """Finish or roll back what a killed run left in the trash; one line per repair."""
    trash = trash_path(tree)
    try:
        st = tree.lstat(trash)
    except OSError:
        return []  # (.locks/ a symlink or on another mount: nothing of ours can be there)
    if st is None or not stat_mod.S_ISDIR(st.st_mode):
        return []
    entries = listdir(tree, trash)
    by_repo: dict[str, list[str]] = {}
    for name in entries:
        parsed = parse_trash_name(name)
        if parsed is not None and parsed[0] not in (".", "..") and os.sep not in parsed[0] and "\0" not in parsed[0]:
            by_repo.setdefault(parsed[0], []).append(name)
    notes: list[str] = []
    for folder, names in sorted(by_repo.items()):
        notes += _recover_repo(tree, os.path.join(tree.path, folder), names)
    return notes


def _recover_repo(tree: Tree, repo: str, names: list[str]) -> list[str]:
    trash = trash_path(tree)
    prefix = trash_name(repo, "")
    notes: list[str] = []
    rests = [name[len(prefix) :] for name in names]
    used: set[str] = set()  # blobs the finished revisions linked
    commits = {r for r in rests if COMMIT_RE.fullmatch(r)}
    commits |= {parsed[0] for parsed in map(parse_ref_entry, rests) if parsed}
    for commit in sorted(commits):
        if tree.lstat(os.path.join(repo, "snapshots", commit)) is not None:
            restore_refs(tree, repo, commit, names)
            notes.append(f"{repo}: put back the refs of revision {commit} (an interrupted prune)")
        else:
            held = os.path.join(trash, trash_name(repo, commit))
            used |= _blob_names(tree, held)
            tree.remove(held, count=False)
            for name, rest in zip(names, rests, strict=True):
                if (parse_ref_entry(rest) or ("",))[0] == commit:
                    tree.unlink(os.path.join(trash, name), count=False)
            tree.remove(os.path.join(repo, ".no_exist", commit), count=False)
            tree.remove(os.path.join(repo, "trees", commit + ".json"), count=False)
            notes.append(f"{repo}: finished removing revision {commit} (an interrupted prune)")
    # The blobs set aside, and those only the finished revisions linked (the run would have
    # set them aside after its settling time): a linked one goes back, the others go.
    blobs = [r[len(BLOB_MARK) :] for r in rests if r.startswith(BLOB_MARK)] + _set_aside_unlinked(tree, repo, used)
    if blobs:
        aside = dict.fromkeys(blobs, "")
        put_back_linked(tree, repo, aside)  # (the repo's links read once for all of them)
        for blob in blobs:
            if blob in aside:
                tree.unlink(aside_prefix(tree, repo) + blob)
                notes.append(f"{repo}: finished removing blob {blob} (an interrupted prune)")
            else:
                notes.append(f"{repo}: put back blob {blob} (an interrupted prune)")
    return notes


def _blob_names(tree: Tree, folder: str) -> set[str]:
    """The blob names the links under ``folder`` (a snapshot set aside) point to."""
    return {name for name in map(_blob_of, tree.links(folder)) if name}


def _blob_of(target: str) -> str | None:
    """The blob a snapshot link's target names (``../../blobs/<name>``), or None."""
    parts = target.replace("\\", "/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "blobs" else None


def _set_aside_unlinked(tree: Tree, repo: str, names: set[str]) -> list[str]:
    """Rename into the trash each blob of ``names`` no snapshot links now; returns those renamed."""
    if not names:
        return []
    linked = linked_blobs(tree, repo)  # (a linked blob is never moved, not even for a moment)
    moved = []
    for name in sorted(names - linked):
        try:
            tree.rename(os.path.join(repo, "blobs", name), aside_prefix(tree, repo) + name)
        except OSError:
            continue  # gone already, or not a blob of ours: it stays as it is
        moved.append(name)
    return moved
