"""An archive on a folder or any fsspec URL: objects stored once by content, one manifest per unit.

Layout (format 1), readable without hfcache::

    DEST/hfcache-archive.json                        {"format": 1}: what this folder is
    DEST/objects/sha256/<2 hex>/<64 hex>             each file's bytes, named by their sha256
    DEST/units/<kind>/<id, %-quoted>/<revision>.json one manifest per archived unit (JSON, below)
    DEST/tmp/<host>-<pid>-<random>                   uploads under way (never read as objects)

A manifest names the unit (``kind``, ``id``, ``type``, ``revision``, ``refs``, ``version``),
when and from where it was archived (``archived_at``, ``host``, ``root``), its times, and what
restoring it writes, relative to a cache root of its kind: ``files`` (``place``, ``sha256``,
``size``, ``name``: the file as its library names it), ``links`` (``place`` -> ``target``, a
relative symlink such as a hub snapshot entry) and ``texts`` (``place`` -> ``text``, small
files such as a hub ref, written only where nothing is).

Nothing half-written is ever taken for whole: an object is written under ``tmp/`` and moved
to its name once complete (a rename on a folder, fsynced; a server-side copy on object
stores, where an object appears whole or not at all), named by the sha256 of the bytes sent
and checked to be there with its size (``read_back``: read again and hashed); a manifest is
written the same way, last. A unit is archived when, and only when, its manifest is there,
and every object it names was checked before it was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

from hfcache.errors import UsageError
from hfcache.verify.reading import gently

FORMAT = 1
MARKER = "hfcache-archive.json"
CHUNK = 8 * 1024 * 1024


class ArchiveError(OSError):
    """A unit could not be archived (or restored): the reason, for its line in the report."""


def quote(item_id: str) -> str:
    """A model id as one path component: ``org/name`` -> ``org%2Fname``."""
    return urllib.parse.quote(item_id, safe="")


class Archive:
    """The archive at ``url``: a folder path or an fsspec URL (``s3://bucket/prefix``, ``gs://...``).

    Raises :class:`~hfcache.errors.UsageError` (exit 2) for a URL no installed fsspec
    back-end serves (``pip install 'hfcache[s3]'`` for ``s3://``).
    """

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None, read_back: bool = False) -> None:
        import fsspec  # type: ignore[import-untyped]  # (comes with huggingface-hub; ships no types)

        self.url = url
        self.read_back = read_back
        try:
            self.fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as e:
            raise UsageError(f"archive {url}: {e}", path=url) from None
        self.base = path.rstrip("/") if path != "/" else path
        protocol = self.fs.protocol
        self.local = "file" in (protocol if isinstance(protocol, tuple) else (protocol,))
        if self.local:
            self.base = os.path.abspath(self.base)

    def _path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    # -- the archive itself ----------------------------------------------------------------

    def ensure(self) -> None:
        """Create the archive's marker (and folder) when it is new; refuse a folder that is something else's."""
        marker = self._path(MARKER)
        if self.fs.exists(marker):
            found = json.loads(self.fs.cat_file(marker))
            if found.get("format") != FORMAT:
                raise UsageError(f"archive {self.url}: format {found.get('format')!r}, this hfcache reads {FORMAT}")
            return
        # A new archive, or one whose first run was killed before its marker was in place (only its own folders there).
        if self.local and os.path.isdir(self.base) and set(os.listdir(self.base)) - {"tmp", "objects", "units"}:
            raise UsageError(f"archive {self.url}: a folder with other files in it, not an hfcache archive", path=self.url)
        self._commit(json.dumps({"format": FORMAT}).encode(), marker)

    def exists(self) -> bool:
        return bool(self.fs.exists(self._path(MARKER)))

    # -- objects ---------------------------------------------------------------------------

    def object_path(self, sha256: str) -> str:
        return self._path("objects", "sha256", sha256[:2], sha256)

    def has_object(self, sha256: str, size: int) -> bool:
        """Whether the object is there with this size (objects are only ever moved into place whole)."""
        try:
            info = self.fs.info(self.object_path(sha256))
        except FileNotFoundError:
            return False
        return int(info.get("size", -1)) == size

    def put_file(self, source: str, *, expected: str | None = None) -> tuple[str, int, int]:
        """Store the file at ``source``: (its sha256, its size, bytes uploaded: 0 when the archive had it).

        ``expected`` (a sha256 the cache names the file by) lets a file the archive already
        holds be skipped without reading it. The source is read gently (its access time and
        the page cache left as they were) and hashed as it is sent: the object is named by the
        hash of the bytes that went out, and must equal ``expected`` (a corrupt cache file is
        never archived as good). Then the object must be there with its size: written under a
        temporary name, fsynced, then moved (a folder), or a whole upload (object stores, whose
        client checks each part's checksum). ``read_back`` also reads every object back and
        hashes it (twice the I/O; on a local disk the read comes from the page cache, so it
        checks little there). Raises :class:`ArchiveError` when any of that fails.
        """
        size = os.stat(source).st_size
        if expected and self.has_object(expected, size):
            return expected, size, 0  # (objects only ever reach their name whole: its size is enough)
        tmp: str | None = self._tmp()
        digest = hashlib.sha256()
        written = 0
        try:
            assert tmp is not None
            with gently(source, "archived") as reading, self._writer(tmp) as out:
                for chunk in reading.chunks(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
            sha = digest.hexdigest()
            if written != size:
                raise ArchiveError(f"{source} changed while it was archived ({size} bytes, then {written})")
            if expected and sha != expected:
                raise ArchiveError(f"{source}: its content's sha256 is {sha[:12]}, not {expected[:12]} (corrupt): not archived")
            final = self.object_path(sha)
            if self.has_object(sha, written):
                return sha, written, 0
            self._move(tmp, final)
            tmp = None  # moved: nothing to discard
        finally:
            if tmp is not None:
                self._discard(tmp)
        if not self.has_object(sha, written):
            raise ArchiveError(f"the archive's copy of {source} is not there whole after it was written")
        if self.read_back:
            self.check_object(sha, written)
        return sha, written, written

    def check_object(self, sha256: str, size: int) -> None:
        """Read the object back and hash it; :class:`ArchiveError` (and the object removed) when it is not what it should be."""
        digest = hashlib.sha256()
        n = 0
        with self.fs.open(self.object_path(sha256), "rb", block_size=CHUNK) as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                n += len(chunk)
        if n != size or digest.hexdigest() != sha256:
            self._discard(self.object_path(sha256))
            raise ArchiveError(f"the archive's copy of {sha256[:12]} reads back wrong ({n} bytes): removed, not archived")

    def read_object(self, sha256: str) -> Iterator[bytes]:
        with self.fs.open(self.object_path(sha256), "rb", block_size=CHUNK) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    # -- manifests ------------------------------------------------------------------------

    def manifest_path(self, kind: str, item_id: str, revision: str) -> str:
        return self._path("units", kind, quote(item_id), quote(revision) + ".json")

    def put_manifest(self, manifest: dict[str, Any]) -> str:
        """Write a unit's manifest (last, once every object it names is verified); returns where it is."""
        manifest = {"format": FORMAT, "host": socket.gethostname(), **manifest}
        path = self.manifest_path(manifest["kind"], manifest["id"], manifest["revision"])
        self._commit(json.dumps(manifest, indent=1, sort_keys=True).encode(), path)
        return path

    def manifests(self) -> list[dict[str, Any]]:
        """Every manifest in the archive (unreadable ones left out), in path order."""
        units = self._path("units")
        if not self.fs.exists(units):
            return []
        out = []
        for path in sorted(self.fs.find(units)):
            if not path.endswith(".json"):
                continue
            try:
                found = json.loads(self.fs.cat_file(path))
            except (OSError, ValueError):
                continue
            if isinstance(found, dict) and found.get("format") == FORMAT:
                out.append(found)
        return out

    # -- writing whole or not at all -------------------------------------------------------

    def _tmp(self) -> str:
        return self._path("tmp", f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(8)}")

    def _writer(self, path: str) -> Any:
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return _LocalWriter(path)
        return self.fs.open(path, "wb", block_size=CHUNK)

    def _commit(self, data: bytes, final: str) -> None:
        tmp = self._tmp()
        try:
            with self._writer(tmp) as out:
                out.write(data)
            self._move(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise

    def _move(self, tmp: str, final: str) -> None:
        if self.local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(tmp, final)
            fd = os.open(os.path.dirname(final), os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename itself survives a power cut
            finally:
                os.close(fd)
        else:
            self.fs.mv(tmp, final)

    def _discard(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except (OSError, FileNotFoundError):
            pass


class _LocalWriter:
    """A new local file, fsynced before it is closed (a rename after it is then durable)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def __enter__(self) -> _LocalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
