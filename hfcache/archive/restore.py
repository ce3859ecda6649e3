"""Bringing archived units back into a cache, as their library lays them out (``hfcache restore``).

Each manifest says what to write relative to a cache root of its kind (see
:mod:`hfcache.archive.store`). Restoring never clobbers and never follows a link:

- every folder on the way is created or must be a real folder (a symlink planted there is
  refused: nothing is written through it);
- a file is written under a temporary name in its folder, hashed while written, checked
  against the manifest's sha256, fsynced, then linked to its name (``link`` fails where a
  file is already there: a download that finished meanwhile, or an earlier restore, wins,
  when it has the same size; another file there is a conflict, left alone);
- a symlink (a hub snapshot entry) is created where nothing is; one already there must
  point where the manifest says;
- a text (a hub ref) is written only where none is: a newer ``main`` is never moved back.

A manifest is data from wherever the archive lives: a place that is absolute, has ``..``
in it, or a link that would lead out of the root, is refused before anything is written.
Restoring takes the root's prune lock, so no prune removes what is being put back.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import secrets
import stat as stat_mod
from collections.abc import Iterable
from typing import Any, NamedTuple

from hfcache.archive.store import Archive, ArchiveError


class Restored(NamedTuple):
    """What restoring one manifest did: ``written`` bytes, files already there, and ``error`` (None: restored)."""

    manifest: dict[str, Any]
    root: str
    written: int = 0
    present: int = 0
    notes: tuple[str, ...] = ()
    error: str | None = None


def _parts(place: object) -> list[str]:
    """A manifest's place as path parts; :class:`ArchiveError` for anything that could leave the root."""
    if not isinstance(place, str) or not place or place.startswith("/") or "\0" in place or "\\" in place:
        raise ArchiveError(f"refused: a place that is not a relative path ({place!r})")
    parts = place.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ArchiveError(f"refused: {place!r} is not a plain relative path")
    return parts


def _folder(root: str, parts: list[str]) -> str:
    """Create (or find) the folders ``parts`` under ``root``, each a real folder, never through a link."""
    path = root
    for part in parts:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                pass
            st = os.lstat(path)
        if not stat_mod.S_ISDIR(st.st_mode):
            raise ArchiveError(f"{path} is not a folder (a link or a file is there): nothing is written through it")
    return path


def _check(manifest: dict[str, Any]) -> None:
    """Refuse a manifest any of whose places (or link targets) would lead out of the root."""
    for f in manifest.get("files", []):
        _parts(f.get("place"))
        if not isinstance(f.get("sha256"), str) or len(f["sha256"]) != 64 or not isinstance(f.get("size"), int):
            raise ArchiveError(f"refused: {f.get('place')!r} has no sha256 and size")
    for link in manifest.get("links", []):
        parts = _parts(link.get("place"))
        target = link.get("target")
        if not isinstance(target, str) or target.startswith("/") or not target:
            raise ArchiveError(f"refused: the link {link.get('place')!r} has an absolute or empty target")
        resolved = posixpath.normpath(posixpath.join(*parts[:-1], target)) if len(parts) > 1 else posixpath.normpath(target)
        if resolved == ".." or resolved.startswith("../"):
            raise ArchiveError(f"refused: the link {link.get('place')!r} leads out of the cache ({target})")
    for text in manifest.get("texts", []):
        _parts(text.get("place"))
        if not isinstance(text.get("text"), str):
            raise ArchiveError(f"refused: {text.get('place')!r} has no text")


def _write_new(folder: str, name: str, chunks: Iterable[bytes], sha256: str | None, size: int | None) -> bool:
    """Write a new file ``folder/name`` whole (temporary name, hash, fsync, link): True, or False when one is there."""
    tmp = os.path.join(folder, f".hfcache-restore-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        digest = hashlib.sha256()
        n = 0
        with os.fdopen(fd, "wb", closefd=False) as out:
            for chunk in chunks:
                digest.update(chunk)
                n += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(fd)
        if (sha256 is not None and digest.hexdigest() != sha256) or (size is not None and n != size):
            raise ArchiveError(f"the archive's copy of {name} does not hash to its manifest's sha256: not restored")
        try:
            os.link(tmp, os.path.join(folder, name), follow_symlinks=False)
        except FileExistsError:
            return False
        return True
    finally:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def restore_manifest(archive: Archive, manifest: dict[str, Any], root: str) -> Restored:
    """Write one archived unit under ``root`` (see the module docstring); errors are in the result, never raised."""
    written = present = 0
    notes: list[str] = []
    try:
        _check(manifest)
        os.makedirs(root, exist_ok=True)
        for f in manifest.get("files", []):
            parts = _parts(f["place"])
            folder = _folder(root, parts[:-1])
            dest = os.path.join(folder, parts[-1])
            try:
                st = os.lstat(dest)
            except FileNotFoundError:
                st = None
            if st is None and not archive.has_object(f["sha256"], f["size"]):
                raise ArchiveError(f"{f['place']}: its object {f['sha256'][:12]} is not in the archive")
            if st is None and _write_new(folder, parts[-1], archive.read_object(f["sha256"]), f["sha256"], f["size"]):
                written += f["size"]
                continue
            st = os.lstat(dest)
            if not stat_mod.S_ISREG(st.st_mode) or st.st_size != f["size"]:
                raise ArchiveError(f"{dest}: another file is there ({st.st_size} bytes, not {f['size']}): left alone")
            present += 1
        for link in manifest.get("links", []):
            parts = _parts(link["place"])
            folder = _folder(root, parts[:-1])
            dest = os.path.join(folder, parts[-1])
            try:
                os.symlink(link["target"], dest)
            except FileExistsError:
                if not os.path.islink(dest) or os.readlink(dest) != link["target"]:
                    raise ArchiveError(f"{dest}: something else is there: left alone") from None
        for text in manifest.get("texts", []):
            parts = _parts(text["place"])
            folder = _folder(root, parts[:-1])
            if not _write_new(folder, parts[-1], [text["text"].encode()], None, None):
                with open(os.path.join(folder, parts[-1]), "rb") as found:
                    now = found.read(200).decode("utf-8", "replace").strip()
                if now != text["text"]:
                    notes.append(f"{text['place']} already names {now[:12]}: left as it is")
    except ArchiveError as e:
        return Restored(manifest, root, written, present, tuple(notes), str(e))
    except OSError as e:
        return Restored(manifest, root, written, present, tuple(notes), f"{e.filename or root}: {e.strerror or e}")
    return Restored(manifest, root, written, present, tuple(notes))


def matching(manifests: Iterable[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """The manifests ``ID[@REV]`` names: every archived revision of the id; with REV, the one it names.

    REV is a revision, a ref the revision had when archived, or the start of a commit (7+ characters).
    """
    item_id, _, rev = target.partition("@")

    def named(m: dict[str, Any]) -> bool:
        revision = str(m.get("revision", ""))
        return not rev or revision == rev or rev in m.get("refs", ()) or (len(rev) >= 7 and revision.startswith(rev))

    return [m for m in manifests if m.get("id") == item_id and named(m)]
