"""Resumable multipart uploads to S3 and S3-compatible stores, through s3fs's own client.

An object of an S3 archive goes up in parts under a multipart upload, several parts at once,
and exists only once the upload is completed: S3 makes the object appear whole at that
moment, or not at all. The upload is completed only after the bytes sent were hashed, in
order, and matched what the caller expects; otherwise it is aborted. Nothing half-written
is ever an object.

A run killed part-way (kill -9, a network failure, a full disk somewhere) leaves its parts
in the store, under the upload's id. The next run that uploads to the same name finds that
upload (``ListMultipartUploads`` by the name), lists its parts and sends only the parts that
are missing or differ. A part counts as there when it has the size this run would send and
its ETag is the MD5 of the bytes this run read for it. That is how S3, MinIO and Ceph
report a part not encrypted with KMS; any other ETag means the part is sent again. The
store keeps this state, so any machine that shares the archive can resume the upload.

The part size depends only on the file's size (:func:`part_size`). A resumed upload
therefore cuts the file where the killed run cut it. Once an object is complete, the other
unfinished uploads to its name (killed runs', or a second machine's of the same content) are
aborted. An upload that no run ever resumes (its model was deleted meanwhile) stays until a
bucket lifecycle rule (``AbortIncompleteMultipartUpload``) removes it: its start time is
the one thing that could tell it from an upload still running on another machine, and
S3-compatible servers do not all report it truly (moto's is a fixed date).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

PART = 8 * 1024 * 1024  # at least this much per part (S3's least is 5 MiB, but for the last part)
MAX_PARTS = 10_000  # S3's most parts per upload
PARALLEL = 4  # parts of one file in flight at once
# Parts in flight across every file of a run. Memory: these 16, and one part read per file waiting for a place (the
# run's UPLOADS files at once): 24 parts, 8 MiB each for files up to 78 GiB (part_size grows beyond: 10,000 parts).
IN_FLIGHT = threading.BoundedSemaphore(16)


def is_s3(fs: Any) -> bool:
    """Whether ``fs`` is s3fs's file system (the one back-end whose client this module drives)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "s3" in protocol and hasattr(fs, "call_s3")


def part_size(size: int) -> int:
    """The part size for a ``size``-byte file: :data:`PART`, or more (whole MiB) so that it takes at most 10,000 parts."""
    need = -(-size // MAX_PARTS)
    mib = 1024 * 1024
    return max(PART, -(-need // mib) * mib)


class Upload:
    """One object's multipart upload: a new one, or one that a killed run started (resumed)."""

    def __init__(self, fs: Any, path: str, size: int) -> None:
        self.fs = fs
        self.path = path
        self.bucket, self.key, _ = fs.split_path(path)
        self.size = size
        self.part = part_size(size)
        self.count = max(1, -(-size // self.part))
        self.upload_id, self.there = self._resume() or (self._create(), {})
        self.resumed = bool(self.there)

    def _resume(self) -> tuple[str, dict[int, tuple[int, str]]] | None:
        """The newest unfinished upload to this very name, with its parts ``{number: (size, etag)}``, or None."""
        uploads = [u for u in _uploads(self.fs, self.bucket, self.key) if u.get("Key") == self.key]
        uploads.sort(key=lambda u: _when(u.get("Initiated")), reverse=True)
        for upload in uploads:
            try:
                parts = self._parts(upload["UploadId"])
            except FileNotFoundError:  # completed or aborted since it was listed
                continue
            return upload["UploadId"], parts
        return None

    def _parts(self, upload_id: str) -> dict[int, tuple[int, str]]:
        found: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            page = self.fs.call_s3("list_parts", Bucket=self.bucket, Key=self.key, UploadId=upload_id, PartNumberMarker=marker)
            for p in page.get("Parts", ()):
                found[int(p["PartNumber"])] = (int(p["Size"]), str(p["ETag"]).strip('"'))
            if not page.get("IsTruncated"):
                return found
            marker = int(page["NextPartNumberMarker"])

    def _create(self) -> str:
        return str(self.fs.call_s3("create_multipart_upload", Bucket=self.bucket, Key=self.key)["UploadId"])

    def _send(self, number: int, data: bytes) -> dict[str, Any]:
        out = self.fs.call_s3(
            "upload_part", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": out["ETag"]}

    def send(
        self, read: Callable[[int, int], bytes], hashing: dict[str, Any], *, sent: Callable[[int], None] = lambda n: None
    ) -> tuple[int, int]:
        """Read the file part by part (``read(offset, length)``), hash it in order into ``hashing``, and send each
        part the store does not hold already. Returns (bytes read, bytes sent). Completing is :meth:`complete`'s."""
        self.parts: list[dict[str, Any]] = []
        read_bytes = sent_bytes = 0
        flight: deque[Future[dict[str, Any]]] = deque()
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            for number, offset, length in self._cuts():
                data = read(offset, length)
                for h in hashing.values():
                    h.update(data)
                read_bytes += len(data)
                if len(data) != length:
                    break  # the file is shorter than its stat said: the caller sees read != size
                there = self.there.get(number)
                if there is not None and there[0] == length and there[1] == hashlib.md5(data, usedforsecurity=False).hexdigest():
                    self.parts.append({"PartNumber": number, "ETag": '"' + there[1] + '"'})
                    continue
                while len(flight) >= PARALLEL:
                    self.parts.append(flight.popleft().result())
                IN_FLIGHT.acquire()
                sending = pool.submit(self._send, number, data)
                sending.add_done_callback(lambda _: IN_FLIGHT.release())
                flight.append(sending)
                sent_bytes += length
                sent(length)
            while flight:
                self.parts.append(flight.popleft().result())
        return read_bytes, sent_bytes

    def _cuts(self) -> Iterator[tuple[int, int, int]]:
        for i in range(self.count):
            offset = i * self.part
            yield i + 1, offset, min(self.part, self.size - offset)

    def complete(self) -> None:
        """Make the object appear, whole, from the parts sent (S3 checks each part's ETag)."""
        parts = sorted(self.parts, key=lambda p: p["PartNumber"])
        self.fs.call_s3(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )
        self.fs.invalidate_cache(self.path)
        try:
            others = [u for u in _uploads(self.fs, self.bucket, self.key) if u.get("Key") == self.key]
        except OSError:  # the object is complete: what follows is clean-up, best effort (never the copy's failure)
            return
        for other in others:  # killed runs' uploads to this name: of no more use
            if other.get("UploadId") != self.upload_id:
                try:
                    self.fs.call_s3("abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=other["UploadId"])
                except OSError:
                    continue

    def abort(self) -> None:
        """Give the upload up (its bytes do not match what was expected): best effort."""
        try:
            self.fs.call_s3("abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception:  # noqa: BLE001, S110 - the back-end down: the next complete upload to this name aborts it
            pass


def _uploads(fs: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """The unfinished multipart uploads under ``prefix``, every page."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = fs.call_s3("list_multipart_uploads", **kwargs)
        yield from page.get("Uploads", ())
        if not page.get("IsTruncated"):
            return
        kwargs["KeyMarker"] = page.get("NextKeyMarker", "")
        kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker", "")


def _when(initiated: object) -> float:
    if isinstance(initiated, datetime):
        return initiated.timestamp()
    return 0.0


def upload_name(source_identity: tuple[object, ...]) -> str:
    """A temporary name for the upload of a file whose sha256 is not known before it is read: the same file
    (host, device, inode, size, mtime) gets the same name, so a killed upload of it is found and resumed."""
    return "up-" + hashlib.sha256(repr(source_identity).encode()).hexdigest()[:32]


def pread_from(fd: int) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            chunk = os.pread(fd, length - len(out), offset + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    return read
