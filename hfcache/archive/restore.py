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

import os
import posixpath
import secrets
import stat as stat_mod
from collections.abc import Iterable
from typing import Any, NamedTuple

from hfcache.archive.store import Archive, ArchiveError, _why, malformed
from hfcache.plan.query import names_revision
from hfcache.verify.reading import check_digest, hash_file, hashers


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
    """Refuse a manifest that is not well formed, or any of whose places (or link targets) would lead out of the root."""
    problem = malformed(manifest)
    if problem:
        raise ArchiveError(f"refused: {problem}")
    for f in manifest.get("files", []):
        _parts(f["place"])
        if len(f["sha256"]) != 64 or set(f["sha256"]) - _HEX:
            raise ArchiveError(f"refused: {f['place']!r} has no sha256")
    for place in manifest.get("dirs", []):
        _parts(place)
    for link in manifest.get("links", []):
        parts = _parts(link["place"])
        target = link["target"]
        if target.startswith("/") or not target or "\0" in target:
            raise ArchiveError(f"refused: the link {link['place']!r} has an absolute or empty target")
        resolved = posixpath.normpath(posixpath.join(*parts[:-1], target)) if len(parts) > 1 else posixpath.normpath(target)
        if resolved == ".." or resolved.startswith("../"):
            raise ArchiveError(f"refused: the link {link['place']!r} leads out of the cache ({target})")
    for text in manifest.get("texts", []):
        _parts(text["place"])


_HEX = frozenset("0123456789abcdef")


def _named_by_content(name: str, folder_name: str) -> tuple[str, str] | None:
    """What a content-addressed file name says its bytes hash to: ``<64 hex>`` or ``sha256-<64 hex>`` (sha256), a
    40-hex name in a ``blobs`` folder (git's blob hash, as the hub names files kept in git); else None.

    A manifest cannot name a file by one content and fill it with another: the hub and Ollama
    never hash a blob again, they trust its name.
    """
    bare = name.removeprefix("sha256-").lower()
    if len(bare) == 64 and not set(bare) - _HEX:
        return "sha256", bare
    if len(name) == 40 and not set(name) - _HEX and folder_name == "blobs":
        return "git-sha1", name
    return None


class _Scratch:
    """Where restore's files are written before they are linked into place: a folder of hfcache's own in the root
    (on its file system), never the file's own folder, whose other readers (the hub's scan of refs/) would take a
    temporary for a file. Leftovers of a killed restore are removed first (restores hold the prune lock)."""

    def __init__(self, root: str, folder: str) -> None:
        self.path = os.path.join(root, folder, SCRATCH)
        self.made = False

    def file(self) -> str:
        if not self.made:
            os.makedirs(self.path, exist_ok=True)
            for leftover in os.listdir(self.path):
                try:
                    os.unlink(os.path.join(self.path, leftover))
                except OSError:
                    pass
            self.made = True
        return os.path.join(self.path, secrets.token_hex(8))

    def done(self) -> None:
        if self.made:
            try:
                os.rmdir(self.path)
            except OSError:
                pass


SCRATCH = ".hfcache-restore"


def _write_new(scratch: _Scratch, folder: str, name: str, chunks: Iterable[bytes], sha256: str | None, size: int | None) -> bool:
    """Write a new file ``folder/name`` whole (scratch name, hash, fsync, link): True, or False when one is there."""
    tmp = scratch.file()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        named = _named_by_content(name, os.path.basename(folder))
        hashing = hashers(size or 0, {"sha256", named[0]} if named else {"sha256"})
        n = 0
        with os.fdopen(fd, "wb", closefd=False) as out:
            for chunk in chunks:
                for h in hashing.values():
                    h.update(chunk)
                n += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(fd)
        digests = {family: h.hexdigest() for family, h in hashing.items()}
        if (sha256 is not None and digests["sha256"] != sha256) or (size is not None and n != size):
            raise ArchiveError(f"the archive's copy of {name} does not hash to its manifest's sha256: not restored")
        if named and not check_digest(named[0], named[1], digests):
            raise ArchiveError(f"refused: {name} would hold bytes whose {named[0]} is not its name")
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


def _same_file(dest: str, root: str, sha256: str, size: int) -> bool:
    """Whether what is at ``dest`` holds these bytes: a regular file, or a link that stays in the root to one (the
    hub's shared store), hashed (a file of the right size may have rotted)."""
    real = os.path.realpath(dest)
    if real != dest and not real.startswith(os.path.realpath(root) + os.sep):
        return False
    try:
        digest = hash_file(real, ["sha256"])
    except OSError:
        return False
    return digest.size == size and digest.digests["sha256"] == sha256


def _inside(path: str, root: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


class _Restore:
    """One unit being written back: what was written, found there already, and noted."""

    def __init__(self, archive: Archive, root: str, scratch: _Scratch) -> None:
        self.archive, self.root, self.scratch = archive, root, scratch
        self.written = self.present = 0
        self.notes: list[str] = []

    def file(self, f: dict[str, Any]) -> None:
        parts = _parts(f["place"])
        folder = _folder(self.root, parts[:-1])
        dest = os.path.join(folder, parts[-1])
        if not os.path.lexists(dest):
            if not self.archive.has_object(f["sha256"], f["size"]):
                raise ArchiveError(f"{f['place']}: its object {f['sha256'][:12]} is not in the archive")
            chunks = self.archive.read_object(f["sha256"])
            if _write_new(self.scratch, folder, parts[-1], chunks, f["sha256"], f["size"]):
                self.written += f["size"]
                return
        if not _same_file(dest, self.root, f["sha256"], f["size"]):
            raise ArchiveError(f"{dest}: a file that is not the archived one is there: left alone")
        self.present += 1

    def link(self, link: dict[str, Any]) -> None:
        parts = _parts(link["place"])
        dest = os.path.join(_folder(self.root, parts[:-1]), parts[-1])
        try:
            os.symlink(link["target"], dest)
        except FileExistsError:
            if not os.path.islink(dest) or os.readlink(dest) != link["target"]:
                raise ArchiveError(f"{dest}: something else is there: left alone") from None
        if not _inside(dest, self.root):  # through another link the manifest made: out of the root
            os.unlink(dest)
            raise ArchiveError(f"refused: the link {link['place']!r} leads out of the cache")

    def text(self, text: dict[str, Any]) -> None:
        parts = _parts(text["place"])
        folder = _folder(self.root, parts[:-1])
        if not _write_new(self.scratch, folder, parts[-1], [text["text"].encode()], None, None):
            with open(os.path.join(folder, parts[-1]), "rb") as found:
                now = found.read(200).decode("utf-8", "replace").strip()
            if now != text["text"]:
                self.notes.append(f"{text['place']} already names {now[:12]}: left as it is")


def restore_manifest(archive: Archive, manifest: dict[str, Any], root: str, *, scratch_in: str = "") -> Restored:
    """Write one archived unit under ``root`` (see the module docstring); errors are in the result, never raised.

    ``scratch_in`` is the folder (relative to the root) for restore's temporary files: the
    kind's own (the hub's ``.locks``).
    """
    scratch = _Scratch(root, scratch_in)
    run = _Restore(archive, root, scratch)
    error = None
    try:
        _check(manifest)
        os.makedirs(root, exist_ok=True)
        for place in manifest.get("dirs", []):
            _folder(root, _parts(place))
        for f in manifest.get("files", []):
            run.file(f)
        for link in manifest.get("links", []):
            run.link(link)
        for text in manifest.get("texts", []):
            run.text(text)
    except ArchiveError as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - the disk or the archive's back-end failing: this unit's error, one line
        error = f"{getattr(e, 'filename', None) or root}: {_why(e)}"
    finally:
        scratch.done()
    return Restored(manifest, root, run.written, run.present, tuple(run.notes), error)


def matching(manifests: Iterable[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """The units ``ID[@REV]`` names: every archived revision of the id; with REV, the one it names.

    REV is a revision, a ref the revision had when archived, or the start of a commit (7+
    characters). A revision archived several times (by several machines, or again after it
    changed) comes once: its manifests added up when its kind says a revision never changes
    (``merge``: a hub commit, whose files one machine may have fewer of), else the newest.
    """
    item_id, _, rev = target.partition("@")

    def named(m: dict[str, Any]) -> bool:
        return not rev or names_revision(rev, str(m.get("revision", "")), m.get("refs", ()))

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for m in manifests:
        if m.get("id") == item_id and named(m):
            groups.setdefault((m["kind"], m["revision"]), []).append(m)
    return [merged(found) for found in groups.values()]


def merged(found: list[dict[str, Any]]) -> dict[str, Any]:
    """One unit from its manifests: their union when every one says ``merge``, else the newest archived."""
    found = sorted(found, key=lambda m: float(m.get("archived_at", 0.0) or 0.0))
    if len(found) == 1 or not all(m.get("merge") for m in found):
        return found[-1]
    out = dict(found[-1])
    for key in ("files", "links", "texts", "dirs"):
        seen: dict[str, Any] = {}
        for m in found:
            for entry in m.get(key, []):
                seen.setdefault(entry if isinstance(entry, str) else entry["place"], entry)
        out[key] = list(seen.values())
    out["refs"] = sorted({r for m in found for r in m.get("refs", [])})
    return out
