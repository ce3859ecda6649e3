"""An archive on a folder or any fsspec URL: objects stored once by content, one manifest per unit.

Layout (format 1), readable without hfcache::

    DEST/hfcache-archive.json                        {"format": 1}: what this folder is
    DEST/objects/sha256/<2 hex>/<64 hex>             each file's bytes, named by their sha256
    DEST/units/<kind>/<id>/<revision>/<digest>.json  manifests of archived units (JSON, below; id and revision
                                                     %-quoted; digest: of what it restores, so none overwrites another)
    DEST/tmp/<host>-<pid>-<random>                   uploads under way (never read as objects)
    DEST/tmp/<sha256>.part                           a folder archive's copy of a known content, resumable
    DEST/tmp/up-<32 hex>                             an S3 archive's upload of a large file not named by its sha256

A manifest names the unit (``kind``, ``id``, ``type``, ``revision``, ``refs``, ``version``),
when and from where it was archived (``archived_at``, ``host``, ``root``), its times, and what
restoring it writes, relative to a cache root of its kind: ``files`` (``place``, ``sha256``,
``size``, ``name``: the file as its library names it), ``links`` (``place`` -> ``target``, a
relative symlink such as a hub snapshot entry) and ``texts`` (``place`` -> ``text``, small
files such as a hub ref, written only where nothing is).

Nothing half-written is ever taken for whole: an object is written under ``tmp/`` and moved
to its name once complete (a rename on a folder, fsynced; a server-side copy on object
stores, where an object appears whole or not at all), named by the sha256 of the bytes sent
and checked to be there with its size (``read_back``: read again and hashed). On S3 a large
file goes up as a multipart upload that a later run resumes, completed only once its bytes
hashed right (:mod:`hfcache.archive.multipart`). A manifest is written the same way, last.
A unit is archived when, and only when, its manifest is there, and every object it names was
checked before it was written.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hfcache.archive import multipart
from hfcache.errors import UsageError
from hfcache.verify.reading import check_digest, gently, hashers, start_writeback

FORMAT = 1
MARKER = "hfcache-archive.json"
CHUNK = 8 * 1024 * 1024
TMP_GRACE = 86400.0  # a temporary this old is a killed run's: swept
STALE_UPLOAD = 7 * 86400.0  # ... a completed S3 multipart upload's (dated from its start): this old


class ArchiveError(OSError):
    """A unit could not be archived (or restored): the reason, for its line in the report."""


def quote(item_id: str) -> str:
    """A model id as one path component: ``org/name`` -> ``org%2Fname``."""
    return urllib.parse.quote(item_id, safe="")


class Archive:
    """The archive at ``url``: a folder path or an fsspec URL (``s3://bucket/prefix``, ``gs://...``).

    Raises :class:`~hfcache.errors.UsageError` (exit 2) for a URL no installed fsspec
    back-end serves (``pip install 'hfcache[s3]'`` for ``s3://``; the endpoint of an
    S3-compatible store comes from ``AWS_ENDPOINT_URL``, as the AWS tools read it).
    """

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None, read_back: bool = False) -> None:
        import fsspec  # type: ignore[import-untyped]  # (comes with huggingface-hub; ships no types)

        self.url = url
        self.read_back = read_back
        self.checked: set[str] = set()  # objects read back and hashed this run (trusted for the rest of it)
        self.identity: tuple[int, int] | None = None  # a folder archive's marker, as ensure() found it
        self.warnings: list[str] = []
        self._copying: dict[object, threading.Lock] = {}  # one copy at a time of a content (or of a source file)
        self._copying_lock = threading.Lock()
        try:
            self.fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as e:
            raise UsageError(f"archive {url}: {e}", path=url) from None
        self.base = path.rstrip("/") if path != "/" else path
        protocol = self.fs.protocol
        self.local = "file" in (protocol if isinstance(protocol, tuple) else (protocol,))
        if self.local:
            self.base = os.path.abspath(self.base)
        self.multipart = multipart.is_s3(self.fs)  # large files in resumable parts (s3fs), else whole

    def _path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    # -- the archive itself ----------------------------------------------------------------

    def ensure(self) -> None:
        """Create the archive's marker (and folder) when it is new; refuse what is something else's (exit 2).

        Also removes the temporaries of runs killed a day or more ago.
        """
        marker = self._path(MARKER)
        try:
            if not self.fs.exists(marker):
                # New, or its first run was killed before its marker was in place (only its own folders there).
                if self.local and os.path.isdir(self.base) and set(os.listdir(self.base)) - {"tmp", "objects", "units"}:
                    raise UsageError(f"archive {self.url}: a folder with other files in it, not an archive", path=self.url)
                self._commit(json.dumps({"format": FORMAT}).encode(), marker)
            self._read_marker()
            self._sweep_tmp()
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 - a back-end's failure (OSError, botocore's own): one line, exit 2
            raise UsageError(f"archive {self.url} cannot be used: {_why(e)}", path=self.url) from None

    def _read_marker(self) -> None:
        marker = self._path(MARKER)
        try:
            found = json.loads(self.fs.cat_file(marker))
        except ValueError:
            found = None
        if not isinstance(found, dict) or found.get("format") != FORMAT:
            raise UsageError(f"archive {self.url}: {MARKER} is not one this hfcache reads (format {FORMAT})", path=self.url)
        if self.local:
            st = os.stat(marker)
            self.identity = (st.st_dev, st.st_ino)

    def exists(self) -> bool:
        try:
            return bool(self.fs.exists(self._path(MARKER)))
        except Exception as e:  # noqa: BLE001 - a back-end's failure: one line, exit 2
            raise UsageError(f"archive {self.url} cannot be read: {_why(e)}", path=self.url) from None

    def _still_there(self) -> None:
        """A folder archive must be the one ensure() found: an unmounted disk leaves its mount point, which is not."""
        if self.identity is None:
            return
        try:
            st = os.stat(self._path(MARKER))
        except OSError as e:
            raise ArchiveError(f"the archive {self.url} is gone ({e.strerror or e}): nothing more is written") from None
        if (st.st_dev, st.st_ino) != self.identity:
            raise ArchiveError(f"the archive {self.url} is not the one this run began with (unmounted?): nothing more is written")

    def _sweep_tmp(self) -> None:
        """Temporaries a day old or more: uploads of runs that were killed (never read as objects)."""
        if self.multipart:
            self._sweep_s3()
        if not self.local:
            return
        folder = self._path("tmp")
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return
        host = socket.gethostname()
        for entry in entries:
            try:
                if _dead(entry.name, host) or time.time() - entry.stat(follow_symlinks=False).st_mtime > TMP_GRACE:
                    os.unlink(entry.path)
            except OSError:
                continue

    def _sweep_s3(self, now: float | None = None) -> None:
        """An S3 archive's temporaries a day old or more (objects appear whole: one that old is a killed run's).

        A completed multipart upload (``tmp/up-...``, moved to its name right after) is dated by
        S3 from when the upload began, which may be days before, when it was resumed: those are
        given :data:`STALE_UPLOAD` instead, so that one is not swept between its completion and
        its move (the run would fail, and keep its unit, but upload it again next time).
        """
        now = time.time() if now is None else now
        try:
            entries = self.fs.ls(self._path("tmp"), detail=True, refresh=True)
        except FileNotFoundError:
            return
        for entry in entries:
            modified = entry.get("LastModified")
            if entry.get("type") != "file" or modified is None:
                continue
            grace = STALE_UPLOAD if entry["name"].rsplit("/", 1)[-1].startswith("up-") else TMP_GRACE
            if now - modified.timestamp() > grace:
                self._discard(entry["name"])

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

    def _good_object(self, sha256: str, size: int) -> bool:
        """Whether the object there may stand for a unit's file: its size, and (once per run) its bytes hashed again.

        An object archived long ago may have rotted: trusting its name alone would let a unit
        leave the cache with no good copy anywhere. A bad one is removed (the file is uploaded
        again).
        """
        if not self.has_object(sha256, size):
            return False
        if sha256 in self.checked:
            return True
        try:
            self.check_object(sha256, size)
        except ArchiveError:
            return False
        return True

    def put_file(self, source: str, *, check: tuple[str, str] | None = None) -> tuple[str, int, int]:
        """Store the file at ``source``: (its sha256, its size, bytes uploaded: 0 when the archive had it).

        ``check`` (an algorithm and digest the cache names the file by: ``sha256``, ``git-sha1``
        or ``sha256-prefix``) must match the bytes sent: a corrupt cache file is never archived
        as good. With a full ``sha256``, an object the archive holds already is used without
        reading the source, once its own bytes were hashed again this run. The source is read
        gently (its access time and the page cache left as they were) and hashed as it is sent:
        the object is named by the sha256 of the bytes that went out. Then the object must be
        there with its size: written under a temporary name, fsynced, then moved (a folder), or
        a whole upload (object stores, whose client checks each part's checksum). ``read_back``
        also reads every new object back and hashes it. Raises :class:`ArchiveError` when any
        of that fails.
        """
        st = os.stat(source)
        # Units copied at once (archive_plan) may share a file (hub revisions a blob, llama.cpp tags a .gguf): its copies
        # go one after the other, so the second finds the object there (named) and neither aborts the other's upload.
        with self._one_copy_of(("sha256", check[1]) if check and check[0] == "sha256" else (st.st_dev, st.st_ino)):
            return self._put_file(source, st.st_size, check)

    @contextmanager
    def _one_copy_of(self, key: object) -> Iterator[None]:
        with self._copying_lock:
            lock = self._copying.setdefault(key, threading.Lock())
        with lock:
            yield

    def _put_file(self, source: str, size: int, check: tuple[str, str] | None) -> tuple[str, int, int]:
        if check and check[0] == "sha256" and self._good_object(check[1], size):
            return check[1], size, 0
        self._still_there()
        hashing = hashers(size, {"sha256", check[0]} if check else {"sha256"})  # (sha256: the object's name)
        if self.multipart and size > multipart.PART:
            return self._put_parts(source, size, check, hashing)
        resumed = self._resumable(check[1], size, hashing) if check and check[0] == "sha256" and self.local else None
        tmp: str | None = resumed[0] if resumed else self._tmp()
        written = resumed[1] if resumed else 0
        try:
            assert tmp is not None
            writer = resumed[2] if resumed else self._writer(tmp)
            with gently(source, "archived") as reading, writer as out:
                if written:
                    os.lseek(reading.fd, written, os.SEEK_SET)  # the rest of it, after what a killed run had written
                for chunk in reading.chunks(CHUNK):
                    for h in hashing.values():
                        h.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                now = os.fstat(reading.fd)  # (before ``gently`` puts the mtime back)
            # Rewritten in place while read (same size): what went out is part old, part new, unless its name pins it.
            pinned = check is not None and check[0] == "sha256"
            rewritten = reading.st.st_size != size or (not pinned and now.st_mtime_ns != reading.st.st_mtime_ns)
            digests = {family: h.hexdigest() for family, h in hashing.items()}
            sha = digests["sha256"]
            if written != size or rewritten:
                how = f"{size} bytes, then {written}" if written != size else "rewritten in place"
                raise ArchiveError(f"{source} changed while it was archived ({how})")
            if check and not check_digest(check[0], check[1], digests):
                raise ArchiveError(f"{source}: its content does not match its {check[0]} {check[1][:12]} (corrupt): not archived")
            if self._good_object(sha, written):
                return sha, written, 0
            self._still_there()
            self._move(tmp, self.object_path(sha))
            tmp = None  # moved: nothing to discard
        finally:
            if tmp is not None:
                self._discard(tmp)
        if not self.has_object(sha, written):
            raise ArchiveError(f"the archive's copy of {source} is not there whole after it was written")
        if self.read_back:
            self.check_object(sha, written)
        self.checked.add(sha)
        return sha, written, written - (resumed[1] if resumed else 0)

    def _put_parts(self, source: str, size: int, check: tuple[str, str] | None, hashing: dict[str, Any]) -> tuple[str, int, int]:
        """An S3 archive's upload of a large file, in parts (:mod:`hfcache.archive.multipart`): resumed where a killed run
        stopped, completed only once the bytes sent hashed to what the object's name says.

        A file whose sha256 the cache names it by goes straight to its object's name; another
        goes to ``tmp/up-<its identity>`` (the same file on the next run: the same name, so
        its upload is resumed), and is moved to its object's name once its sha256 is known.
        """
        expect = check[1] if check and check[0] == "sha256" else None
        with gently(source, "archived") as reading:
            st = reading.st
            name = (
                self.object_path(expect)
                if expect
                else self._path("tmp", multipart.upload_name((socket.gethostname(), st.st_dev, st.st_ino, size, st.st_mtime_ns)))
            )
            upload = multipart.Upload(self.fs, name, size)
            written, sent = upload.send(multipart.pread_from(reading.fd), hashing)
            # Read exactly ``size`` bytes: a file that grew, or (not named by its hash) was rewritten meanwhile, is not
            # what was sent (checked before ``gently`` puts the mtime back).
            now = os.fstat(reading.fd)
        rewritten = expect is None and now.st_mtime_ns != st.st_mtime_ns
        if written != size or now.st_size != size or st.st_size != size or rewritten:
            upload.abort()
            how = f"{size} bytes, then {now.st_size}" if now.st_size != size or written != size else "rewritten in place"
            raise ArchiveError(f"{source} changed while it was archived ({how})")
        digests = {family: h.hexdigest() for family, h in hashing.items()}
        sha = digests["sha256"]
        if check and not check_digest(check[0], check[1], digests):
            upload.abort()
            raise ArchiveError(f"{source}: its content does not match its {check[0]} {check[1][:12]} (corrupt): not archived")
        if expect is None and self._good_object(sha, written):
            upload.abort()
            return sha, written, sent
        try:
            upload.complete()
        except OSError as e:
            # Another run completed it first (or the answer was lost): what ``name`` holds now is not known to be these
            # bytes (a killed run's other content, or gone), so it is never moved; the object must be there, and good.
            self.checked.discard(sha)
            if not self._good_object(sha, written):
                raise ArchiveError(f"the upload of {source} could not be completed: {_why(e)}") from None
            return sha, written, sent
        if expect is None:
            try:
                self._move(name, self.object_path(sha))
            except BaseException:
                self._discard(name)
                raise
        if not self.has_object(sha, written):
            raise ArchiveError(f"the archive's copy of {source} is not there whole after it was written")
        if self.read_back:
            self.check_object(sha, written)
        self.checked.add(sha)
        return sha, written, sent

    def _resumable(self, sha256: str, size: int, hashing: dict[str, Any]) -> tuple[str, int, _LocalWriter] | None:
        """A folder archive's upload of a known content goes to ``tmp/<sha256>.part``: what a killed run wrote there is
        kept, read back into ``hashing``, and the copy goes on after it (a 100 GB shard is not copied again from its
        start). Held with an ``flock``: another run copying the same content uses a name of its own (None)."""
        path = self._path("tmp", f"{sha256}.part")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            have = os.fstat(fd).st_size
            if have > size:
                os.ftruncate(fd, 0)
                have = 0
            done = 0
            while done < have:  # what is there already, hashed as if it had just been sent
                chunk = os.pread(fd, min(CHUNK, have - done), done)
                if not chunk:
                    break
                for h in hashing.values():
                    h.update(chunk)
                done += len(chunk)
            os.lseek(fd, done, os.SEEK_SET)
            os.ftruncate(fd, done)
        except OSError:
            os.close(fd)
            raise
        return path, done, _LocalWriter(path, fd=fd)

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
            raise ArchiveError(f"the archive's copy of {sha256[:12]} reads back wrong ({n} bytes): removed")
        self.checked.add(sha256)

    def read_object(self, sha256: str) -> Iterator[bytes]:
        with self.fs.open(self.object_path(sha256), "rb", block_size=CHUNK) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    # -- manifests ------------------------------------------------------------------------

    def manifest_path(self, kind: str, item_id: str, revision: str, digest: str) -> str:
        return self._path("units", kind, quote(item_id), quote(revision), digest + ".json")

    def put_manifest(self, manifest: dict[str, Any]) -> str:
        """Write a unit's manifest (last, once every object it names was checked); returns where it is.

        Named by what it restores (a digest of its files, links and texts): another machine's
        manifest of the same revision with other files (the hub downloads file by file), or a
        tag whose content changed, is written beside it, never over it.
        """
        what = {k: manifest.get(k) for k in ("files", "links", "texts", "dirs")}
        digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
        manifest = {"format": FORMAT, "host": socket.gethostname(), **manifest}
        path = self.manifest_path(manifest["kind"], manifest["id"], manifest["revision"], digest)
        self._still_there()
        self._commit(json.dumps(manifest, indent=1, sort_keys=True).encode(), path)
        return path

    def manifests(self) -> list[dict[str, Any]]:
        """Every well-formed manifest in the archive, in path order; the others are left out, each said in ``warnings``."""
        units = self._path("units")
        if not self.fs.exists(units):
            return []
        out = []
        paths = sorted(p for p in self.fs.find(units) if p.endswith(".json"))
        # An object store's manifests fetched many at once (s3fs: concurrent requests), not one round trip each:
        # a fleet's shared archive holds thousands.
        texts: dict[str, Any] = self.fs.cat(paths, on_error="return") if paths and not self.local else {}
        for path in paths:
            try:
                text = texts.get(path)  # (None for a folder archive: each read where it lies)
                if isinstance(text, BaseException):
                    raise text
                found = json.loads(text if text is not None else self.fs.cat_file(path))
            except (OSError, ValueError) as e:
                self.warnings.append(f"{path}: not read ({_why(e)})")
                continue
            problem = malformed(found)
            if problem:
                self.warnings.append(f"{path}: {problem}: left out")
                continue
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
        except Exception:  # noqa: BLE001, S110 - already gone, or the back-end down: a temporary the next run sweeps
            pass


def _dead(name: str, host: str) -> bool:
    """Whether the temporary ``<host>-<pid>-<random>`` was written by a process of this machine that is gone."""
    made_by, _, rest = name.rpartition("-")[0].rpartition("-")
    if made_by != host or not rest.isdigit():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _why(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e) or type(e).__name__


_STR = (str,)


def malformed(m: object) -> str | None:
    """Why ``m`` is not a manifest this hfcache reads, or None."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        return "not a manifest of this format"
    for key in ("kind", "id", "revision"):
        if not isinstance(m.get(key), str):
            return f"no {key}"
    if not isinstance(m.get("refs", []), list) or not all(isinstance(r, str) for r in m.get("refs", [])):
        return "refs is not a list of names"
    for key, fields in (("files", ("place", "sha256")), ("links", ("place", "target")), ("texts", ("place", "text"))):
        entries = m.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            return f"{key} is not a list of objects"
        for e in entries:
            if not all(isinstance(e.get(f), str) for f in fields):
                return f"an entry of {key} has no {' and '.join(fields)}"
            if key == "files" and (not isinstance(e.get("size"), int) or isinstance(e.get("size"), bool) or e["size"] < 0):
                return "a file has no size"
    for key in ("archived_at", "size_bytes", "last_accessed", "last_modified"):
        if key in m and (not isinstance(m[key], (int, float)) or isinstance(m[key], bool)):
            return f"{key} is not a number"
    dirs = m.get("dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        return "dirs is not a list of places"
    return None


WRITEBACK = 32 * 1024 * 1024  # written bytes after which their writeback is started (not waited for)


class _LocalWriter:
    """A new local file (or an open one, to go on writing at its offset), fsynced before it is closed.

    The writeback of what was written is started every :data:`WRITEBACK` bytes, so the disk
    writes while the next chunks are read and hashed, and the ``fsync`` at the end waits for
    the last few MiB only (2 GB: 1.63 s -> 1.28 s, the time of ``cp`` then ``sync``:
    ``benchmarks/bench_archive.py``). Once durable, its pages leave the page cache.
    """

    def __init__(self, path: str, *, fd: int | None = None) -> None:
        self.fd = (
            fd if fd is not None else os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        )
        self.at = self.started = os.lseek(self.fd, 0, os.SEEK_CUR)

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.at += len(data)
        if self.at - self.started >= WRITEBACK:
            start_writeback(self.fd, self.started, self.at - self.started)
            self.started = self.at

    def __enter__(self) -> _LocalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                os.fsync(self.fd)
                if hasattr(os, "posix_fadvise"):  # the copy leaves the page cache: a 100 GB archive run evicts no hot model
                    try:
                        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    except OSError:  # (advice: the copy is durable whatever it says)
                        pass
        finally:
            os.close(self.fd)
