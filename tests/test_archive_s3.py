"""Resumable uploads to an S3 archive (issue 21, point 3): a real S3 endpoint on 127.0.0.1 (moto's server) and the
real s3fs client. A large file goes up in parts; a run killed part-way leaves parts that the next run keeps, so only
the rest is sent; nothing half-sent, or sent from a corrupt file, ever becomes an object."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from hfcache.archive import multipart
from hfcache.archive.store import Archive, ArchiveError
from tests.fakehub import FakeHub
from tests.support import age_everything, cli, get

pytestmark = pytest.mark.integration

PART = multipart.PART
BIG = 2 * PART + 12345  # three parts, the last one short


def big_file(folder, seed: int = 1, *, size: int = BIG, named: bool = True) -> tuple[str, bytes]:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32)
    name = hashlib.sha256(data).hexdigest() if named else "weights.bin"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path, data


def uploads(archive: Archive) -> list[dict]:
    bucket, key, _ = archive.fs.split_path(archive.base)
    return archive.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key + "/").get("Uploads", [])


# Uploads a file to the archive and is killed (SIGKILL, no clean-up of any kind) once N parts are sent.
KILLED_AFTER = """
import os, signal, sys
from hfcache.archive import multipart
from hfcache.archive.store import Archive
multipart.PARALLEL = 1
real = multipart.Upload._send
sent = []
def send(self, number, data):
    out = real(self, number, data)
    sent.append(number)
    if len(sent) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    return out
multipart.Upload._send = send
archive = Archive(sys.argv[1])
archive.ensure()
named = sys.argv[4] == "named"
archive.put_file(sys.argv[2], check=("sha256", os.path.basename(sys.argv[2])) if named else None)
"""


@pytest.mark.parametrize("named", ["named", "unnamed"])
def test_an_upload_killed_part_way_is_resumed_by_the_next_run(s3, tmp_path, named):
    """Kill -9 after two parts: no object appears; the next run sends only the third part, and the object is whole."""
    src, data = big_file(tmp_path / "blobs", named=named == "named")
    sha = hashlib.sha256(data).hexdigest()
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER, s3, src, "2", named], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    archive = Archive(s3)
    archive.ensure()
    assert not archive.has_object(sha, BIG)  # half-sent: no object
    assert len(uploads(archive)) == 1
    got, size, sent = archive.put_file(src, check=("sha256", sha) if named == "named" else None)
    assert (got, size) == (sha, BIG)
    assert sent == BIG - 2 * PART  # only the part the killed run had not sent
    assert archive.fs.cat_file(archive.object_path(sha)) == data
    assert uploads(archive) == []  # completed, nothing left behind
    assert archive.fs.find(archive._path("tmp")) == []  # an unnamed file's upload name was moved to its object


def test_a_part_in_the_store_that_differs_from_the_file_is_sent_again(s3, tmp_path):
    """A part that is there but whose bytes are not this file's (another file, a broken earlier run) is never kept."""
    src, data = big_file(tmp_path / "blobs")
    sha = hashlib.sha256(data).hexdigest()
    archive = Archive(s3)
    archive.ensure()
    fs = archive.fs
    bucket, key, _ = fs.split_path(archive.object_path(sha))
    upload = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"\0" * PART)  # wrong bytes
    fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload, PartNumber=2, Body=data[PART : 2 * PART])
    _, _, sent = archive.put_file(src, check=("sha256", sha))
    assert sent == BIG - PART  # part 1 again, part 2 kept, part 3 new
    assert fs.cat_file(archive.object_path(sha)) == data


def test_a_corrupt_file_never_becomes_an_object_and_its_upload_is_given_up(s3, tmp_path):
    src, data = big_file(tmp_path / "blobs")
    sha = os.path.basename(src)
    with open(src, "r+b") as f:  # one byte flipped in the middle: the name no longer matches the bytes
        f.seek(BIG // 2)
        f.write(bytes([data[BIG // 2] ^ 1]))
    archive = Archive(s3)
    archive.ensure()
    with pytest.raises(ArchiveError, match="corrupt"):
        archive.put_file(src, check=("sha256", sha))
    assert not archive.fs.exists(archive.object_path(sha))
    assert uploads(archive) == []


def test_a_file_that_grows_while_it_is_sent_is_not_archived(s3, tmp_path, monkeypatch):
    src, _ = big_file(tmp_path / "blobs", named=False)
    archive = Archive(s3)
    archive.ensure()
    real = multipart.Upload._send

    def send(self, number, data):
        if number == 1:
            with open(src, "ab") as f:  # a download still writing into it
                f.write(b"more")
        return real(self, number, data)

    monkeypatch.setattr(multipart.Upload, "_send", send)
    monkeypatch.setattr(multipart, "PARALLEL", 1)
    try:
        archive.put_file(src)
    except ArchiveError as e:
        assert "changed while it was archived" in str(e) or "not there whole" in str(e)
    else:  # read whole before the write landed: what went up is what was hashed
        objects = archive.fs.find(archive._path("objects"))
        assert all(os.path.basename(o) == hashlib.sha256(archive.fs.cat_file(o)).hexdigest() for o in objects)
    assert uploads(archive) == []


def test_once_an_object_is_complete_the_other_uploads_to_its_name_are_given_up(s3, tmp_path):
    """Two killed runs left two uploads of one shard: the one resumed completes, the other goes (it cost storage)."""
    src, data = big_file(tmp_path / "blobs")
    sha = os.path.basename(src)
    archive = Archive(s3)
    archive.ensure()
    fs = archive.fs
    bucket, key, _ = fs.split_path(archive.object_path(sha))
    for _ in range(2):
        fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    elsewhere = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key + "x")["UploadId"]
    archive.put_file(src, check=("sha256", sha))
    assert [u["UploadId"] for u in uploads(archive)] == [elsewhere]  # another name's upload: left alone
    assert fs.cat_file(archive.object_path(sha)) == data


def test_temporaries_a_day_old_are_swept_from_an_s3_archive(s3):
    archive = Archive(s3)
    archive.ensure()
    left = archive._path("tmp", "host-1-killed")
    archive.fs.pipe_file(left, b"a killed run's whole upload, never moved to its name")
    archive._sweep_s3()
    assert archive.fs.exists(left)  # a moment old: perhaps a run still going
    completed = archive._path("tmp", "up-" + "0" * 32)  # a resumed upload, dated from its start days ago by S3
    archive.fs.pipe_file(completed, b"an upload completed a moment ago, about to be moved to its name")
    archive._sweep_s3(now=time.time() + 86400 + 60)
    assert not archive.fs.exists(left) and archive.fs.exists(completed)
    archive._sweep_s3(now=time.time() + 7 * 86400 + 60)
    assert not archive.fs.exists(completed)
    assert archive.fs.exists(archive._path("hfcache-archive.json"))


def test_part_sizes_keep_any_file_within_ten_thousand_parts():
    assert multipart.part_size(1) == PART
    for size in (PART * 10_000, PART * 10_000 + 1, 5 * 1024**4):
        assert -(-size // multipart.part_size(size)) <= multipart.MAX_PARTS
        assert multipart.part_size(size) % (1024 * 1024) == 0


# The whole command, as a user runs it: killed while a 20 MB shard goes up, run again by the next night's timer.
KILLED_PRUNE = """
import os, signal, sys
from hfcache.archive import multipart
real = multipart.Upload._send
sent = []
def send(self, number, data):
    out = real(self, number, data)
    sent.append(number)
    if len(sent) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
multipart.Upload._send = send
multipart.PARALLEL = 1
sys.argv = ["hfcache", *sys.argv[1:]]
from hfcache.cli import main
main()
"""


def test_a_prune_killed_while_uploading_a_shard_goes_on_where_it_stopped(s3, tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    shard = hashlib.sha256(b"shard").digest() * ((BIG + 31) // 32)
    with FakeHub() as hub:
        hub.push("org/big", {"config.json": b"{}", "model-00001-of-00001.safetensors": shard})
        for f in ("config.json", "model-00001-of-00001.safetensors"):
            get(hub, root, "org/big", f)
    age_everything(root, 90)
    args = ["prune", "--cache-dir", root, "--max-age", "30d", "--allow-remove-all", "--archive-to", s3, "--yes"]
    proc = subprocess.run([sys.executable, "-c", KILLED_PRUNE, *args], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    code, listing = cli("archive", "ls", s3, "--json")
    assert code == 0 and listing["units"] == []
    snapshot = os.path.join(root, "models--org--big", "snapshots")
    assert len(os.listdir(snapshot)) == 1  # whole in the cache: never neither

    parts = []
    real = multipart.Upload._send
    monkeypatch.setattr(multipart.Upload, "_send", lambda self, n, data: parts.append((n, len(data))) or real(self, n, data))
    code, plan = cli(*args, "--json")
    assert code == 0, plan
    assert [u["status"] for u in plan["delete"] if u["what"] == "revision"] == ["deleted"]
    assert sorted(parts) == [(2, PART), (3, len(shard) - 2 * PART)]  # part 1 went up before the kill: not again
    code, listing = cli("archive", "ls", s3, "--json")
    assert [u["id"] for u in listing["units"]] == ["org/big"]
    code, out = cli("restore", s3, "org/big", "--cache-dir", root, "--json")
    assert code == 0, out
    from huggingface_hub import hf_hub_download

    path = hf_hub_download("org/big", "model-00001-of-00001.safetensors", cache_dir=root, local_files_only=True)
    with open(path, "rb") as f:
        assert f.read() == shard


def test_an_s3_archive_lists_many_manifests_and_says_which_it_cannot_read(s3):
    archive = Archive(s3)
    archive.ensure()
    for n in range(40):
        archive.put_manifest({"kind": "huggingface", "id": f"org/m{n}", "revision": "a" * 40, "files": []})
    archive.fs.pipe_file(archive._path("units", "huggingface", "org%2Fbad", "b" * 40, "x.json"), b"{not json")
    found = Archive(s3)
    listed = found.manifests()
    assert sorted(m["id"] for m in listed) == sorted(f"org/m{n}" for n in range(40))
    assert len(found.warnings) == 1 and "org%2Fbad" in found.warnings[0]
