"""Adversarial tests of S3 multipart archiving (``hfcache.archive.multipart``, ``Archive._put_parts``) and of
``restore``'s choice of a --cache-dir (``_restore_root``).

The rule under attack: an archived unit leaves the cache only once a complete, verified copy
is in the archive, and an object under a sha256 name holds exactly the bytes of that sha256.
A real S3 endpoint on 127.0.0.1 (moto's server) and the real s3fs client, as in
``test_archive_s3.py``; parts are made small (moto's least part size lowered with them) to
keep the tests fast. A test that fails on the code it was written against says ``DEFECT:``.
"""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from hfcache.archive import multipart
from hfcache.archive.store import Archive, ArchiveError
from tests.support import age_everything, build_rich_cache, cli, contents, run_cli

KIB = 1024
SMALL = 1024 * KIB  # the part size in these tests (part_size rounds up to whole MiB)


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of 1 MiB (moto's least part size lowered to match), one in flight: fast, and deterministic."""
    import moto.s3.models

    monkeypatch.setattr(multipart, "PART", SMALL)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1)
    monkeypatch.setattr(multipart, "PARALLEL", 1)
    return SMALL


def content(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // 32 + 1))[:size]


def write_file(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def objects_are_true(archive: Archive) -> None:
    """Every object in the archive holds the bytes its name says."""
    for path in archive.fs.find(archive._path("objects")):
        assert os.path.basename(path) == sha(archive.fs.cat_file(path)), path


def uploads(archive: Archive) -> list[dict]:
    bucket, key, _ = archive.fs.split_path(archive.base)
    return archive.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key + "/").get("Uploads", [])


def open_archive(url: str) -> Archive:
    archive = Archive(url)
    archive.ensure()
    return archive


# ---------------------------------------------------------------------------------------------
# A source file that changes while its parts go up


def test_a_file_that_grows_while_its_parts_go_up_is_not_archived(s3, small_parts, tmp_path, monkeypatch):
    """A file not named by its hash, appended to after its upload began: the archive must not take its first bytes
    only for the whole file (the folder archive's copy reads to the end and refuses; the multipart one read exactly the
    size it stat'ed, so the tail was never seen and the unit left the cache without it)."""
    data = content(3 * SMALL + 100, 1)
    src = write_file(tmp_path / "cache" / "weights.bin", data)
    archive = open_archive(s3)
    real = multipart.Upload._send

    def send(self, number, body):
        if number == 1:
            with open(src, "ab") as f:  # a writer still appending to it
                f.write(b"the tail the user wanted")
        return real(self, number, body)

    monkeypatch.setattr(multipart.Upload, "_send", send)
    # DEFECT: put_file returned the sha256 of the first len(data) bytes: the tail was lost with the cache's copy.
    with pytest.raises(ArchiveError, match="changed while it was archived"):
        archive.put_file(src)
    assert not archive.fs.exists(archive.object_path(sha(data)))
    assert uploads(archive) == []  # given up: its name (the file's old identity) is never resumed


def test_a_file_rewritten_in_place_while_its_parts_go_up_is_not_archived(s3, small_parts, tmp_path, monkeypatch):
    """Same size, other bytes after part 1 was read: the object would be half the old file and half the new one, a file
    that never existed, and the unit would leave the cache with the new content nowhere."""
    old = content(3 * SMALL + 100, 1)
    new = content(3 * SMALL + 100, 2)
    src = write_file(tmp_path / "cache" / "weights.bin", old)
    archive = open_archive(s3)
    real = multipart.Upload._send

    def send(self, number, body):
        if number == 1:
            with open(src, "r+b") as f:  # rewritten in place, same size (its mtime moves)
                f.write(new)
        return real(self, number, body)

    monkeypatch.setattr(multipart.Upload, "_send", send)
    # DEFECT: the mixture went up under its own sha256 and put_file succeeded.
    with pytest.raises(ArchiveError, match="changed while it was archived"):
        archive.put_file(src)
    mixture = old[:SMALL] + new[SMALL:]
    assert not archive.fs.exists(archive.object_path(sha(mixture)))
    objects_are_true(archive)


def test_a_named_file_touched_while_sent_is_still_archived(s3, small_parts, tmp_path, monkeypatch):
    """A file named by its sha256 whose mtime alone moves: the bytes hashed to its name, so it is archived."""
    data = content(2 * SMALL + 7, 3)
    src = write_file(tmp_path / "blobs" / sha(data), data)
    archive = open_archive(s3)
    real = multipart.Upload._send

    def send(self, number, body):
        if number == 1:
            os.utime(src, (1, 1))
        return real(self, number, body)

    monkeypatch.setattr(multipart.Upload, "_send", send)
    assert archive.put_file(src, check=("sha256", sha(data)))[:2] == (sha(data), len(data))
    assert archive.fs.cat_file(archive.object_path(sha(data))) == data


# ---------------------------------------------------------------------------------------------
# Completing: another run first, a failure, a stale temporary


def tmp_name(archive: Archive, src: str) -> str:
    st = os.stat(src)
    identity = (socket.gethostname(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return archive._path("tmp", multipart.upload_name(identity))


def test_a_failed_complete_never_moves_a_stale_temporary_over_a_good_object(s3, small_parts, tmp_path, monkeypatch):
    """tmp/up-<identity> holds a killed run's *other* content (the file rewritten since, same size, its mtime put back).
    This run's complete fails, but the object of this run's bytes appeared meanwhile (another machine): the stale
    temporary must not be moved over it. (It was: a wrong object under a sha256 name, checked by its size only, and
    the unit deleted from the cache.)"""
    stale = content(3 * SMALL + 5, 1)
    good = content(3 * SMALL + 5, 2)
    src = write_file(tmp_path / "cache" / "weights.bin", good)
    archive = open_archive(s3)
    archive.fs.pipe_file(tmp_name(archive, src), stale)  # a killed run completed it, never moved it
    other = write_file(tmp_path / "elsewhere" / "weights.bin", good)

    real = multipart.Upload.complete

    def complete(self):
        monkeypatch.setattr(multipart.Upload, "complete", real)
        Archive(s3).put_file(other)  # another run archives the same bytes first ...
        raise FileNotFoundError("NoSuchUpload")  # ... and this run's complete fails (the connection dropped)

    monkeypatch.setattr(multipart.Upload, "complete", complete)
    try:
        got = archive.put_file(src)
    except ArchiveError:
        got = None
    # DEFECT: the stale temporary was moved over the object of `good`; put_file said the copy was good.
    assert archive.fs.cat_file(archive.object_path(sha(good))) == good
    assert got is None or got[:2] == (sha(good), len(good))


def test_another_run_that_completes_the_same_upload_first_is_not_a_failure(s3, small_parts, tmp_path, monkeypatch):
    """Two runs of one machine uploading the same file (not named by its hash): the other one resumes this run's
    upload, completes it and moves it to its object first. This run's complete then fails (NoSuchUpload); the
    object is there, whole: this run must not fail moving a temporary that is gone."""
    data = content(3 * SMALL + 5, 4)
    src = write_file(tmp_path / "cache" / "weights.bin", data)
    archive = open_archive(s3)
    real = multipart.Upload.complete
    calls = []

    def complete(self):
        calls.append(self.upload_id)
        if len(calls) == 1:
            Archive(s3).put_file(src)  # the other run: resumes this upload (all its parts there), completes it
        return real(self)

    monkeypatch.setattr(multipart.Upload, "complete", complete)
    # DEFECT: ArchiveError/FileNotFoundError from moving tmp/up-... (the other run had moved it): the unit kept.
    assert archive.put_file(src)[:2] == (sha(data), len(data))
    assert archive.fs.cat_file(archive.object_path(sha(data))) == data
    assert uploads(archive) == []
    assert archive.fs.find(archive._path("tmp")) == []


def test_a_named_upload_completed_by_another_machine_first_is_not_a_failure(s3, small_parts, tmp_path, monkeypatch):
    data = content(3 * SMALL + 5, 5)
    src = write_file(tmp_path / "cache" / sha(data), data)
    archive = open_archive(s3)
    real = multipart.Upload.complete
    calls = []

    def complete(self):
        calls.append(1)
        if len(calls) == 1:
            Archive(s3).put_file(src, check=("sha256", sha(data)))
        return real(self)

    monkeypatch.setattr(multipart.Upload, "complete", complete)
    assert archive.put_file(src, check=("sha256", sha(data)))[:2] == (sha(data), len(data))
    assert archive.fs.cat_file(archive.object_path(sha(data))) == data
    assert uploads(archive) == []


def test_a_stale_upload_of_other_bytes_at_the_same_temporary_name_is_not_kept(s3, small_parts, tmp_path):
    """Same host, device, inode, size and mtime, other bytes (rewritten, its mtime put back): each stale part is sent
    again (its MD5 differs), and the object holds the file's bytes now."""
    old = content(3 * SMALL + 9, 6)
    new = old[: 2 * SMALL] + content(SMALL + 9, 7)  # parts 1-2 the same, part 3 not
    src = write_file(tmp_path / "cache" / "weights.bin", old)
    st = os.stat(src)
    archive = open_archive(s3)
    upload = multipart.Upload(archive.fs, tmp_name(archive, src), len(old))
    read = multipart.pread_from(os.open(src, os.O_RDONLY))
    for number, offset, length in upload._cuts():
        upload._send(number, read(offset, length))  # a killed run sent every part, never completed
    with open(src, "r+b") as f:
        f.write(new)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    got, size, sent = archive.put_file(src)
    assert (got, size) == (sha(new), len(new))
    assert sent == SMALL + 9  # the last part only
    assert archive.fs.cat_file(archive.object_path(sha(new))) == new


def test_a_send_failing_part_way_keeps_the_file_and_the_next_run_finishes(s3, small_parts, tmp_path, monkeypatch):
    data = content(4 * SMALL + 1, 8)
    src = write_file(tmp_path / "cache" / "weights.bin", data)
    archive = open_archive(s3)
    real = multipart.Upload._send

    def send(self, number, body):
        if number == 3:
            raise ConnectionResetError(104, "Connection reset by peer")
        return real(self, number, body)

    monkeypatch.setattr(multipart.Upload, "_send", send)
    with pytest.raises(OSError):
        archive.put_file(src)
    assert archive.fs.find(archive._path("objects")) == []
    monkeypatch.setattr(multipart.Upload, "_send", real)
    got, size, sent = open_archive(s3).put_file(src)
    assert (got, size, sent) == (sha(data), len(data), 2 * SMALL + 1)  # parts 1 and 2 kept
    assert archive.fs.cat_file(archive.object_path(sha(data))) == data


def test_parts_listed_over_several_pages_are_all_kept(s3, small_parts, tmp_path, monkeypatch):
    """More parts than one ListParts page (1000 on S3; 2 here): every page is read, none of them is sent again."""
    data = content(7 * SMALL + 3, 9)
    src = write_file(tmp_path / "cache" / sha(data), data)
    archive = open_archive(s3)
    name = archive.object_path(sha(data))
    upload = multipart.Upload(archive.fs, name, len(data))
    for number, offset, length in list(upload._cuts())[:6]:
        upload._send(number, data[offset : offset + length])
    real = archive.fs.call_s3
    pages = []

    def call_s3(method, *args, **kwargs):
        if method == "list_parts":
            kwargs["MaxParts"] = 2
            pages.append(kwargs.get("PartNumberMarker"))
        return real(method, *args, **kwargs)

    monkeypatch.setattr(archive.fs, "call_s3", call_s3)
    assert archive.put_file(src, check=("sha256", sha(data)))[2] == SMALL + 3  # parts 7 and 8 only
    assert pages == [0, 2, 4]  # three pages of two
    assert archive.fs.cat_file(name) == data


@pytest.mark.parametrize("size", [0, SMALL, SMALL + 1])
def test_sizes_at_the_edge_of_one_part(s3, small_parts, tmp_path, size):
    data = content(size, 10)
    src = write_file(tmp_path / "cache" / "w.bin", data)
    archive = open_archive(s3)
    assert archive.put_file(src)[:2] == (sha(data), size)
    assert archive.fs.cat_file(archive.object_path(sha(data))) == data
    assert uploads(archive) == [] and archive.fs.find(archive._path("tmp")) == []


# ---------------------------------------------------------------------------------------------
# restore --cache-dir


@pytest.fixture
def archived_hub(tmp_path):
    from tests.fakehub import FakeHub

    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        build_rich_cache(hub, root)
    age_everything(root, 90)
    dest = str(tmp_path / "archive")
    code, _ = cli("prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", dest, "--yes", "--json")
    assert code == 0
    return dest


@pytest.mark.parametrize("folder", ["hf_home", "torch_home", "home"])
def test_restore_never_writes_into_a_folder_of_other_things_that_no_kind_recognises(archived_hub, tmp_path, folder):
    """`--cache-dir ~/.cache/huggingface` (HF_HOME, not its hub/), `~/.cache/torch` (not its hub/), or a home folder:
    no kind recognises them, yet they are not new or empty. The unit written there is seen by no library (exit 0,
    "restored"), and the folder gets a hub tree among its own files."""
    from tests.trees import write

    place = str(tmp_path / folder)
    if folder == "hf_home":
        write(os.path.join(place, "token"), b"hf_xxx")
        os.makedirs(os.path.join(place, "hub", "models--org--other", "snapshots"))
    elif folder == "torch_home":
        write(os.path.join(place, "hub", "checkpoints", "resnet18-f37072fd.pth"), 100)
    else:
        write(os.path.join(place, ".bashrc"), b"export X=1\n")
        write(os.path.join(place, "notes", "todo.txt"), b"buy milk\n")
    before = contents(place)
    result = run_cli("restore", archived_hub, "org/model@v1.0", "--cache-dir", place)
    # DEFECT: exit 0, models--org--model written into the folder (the rule says new or empty only).
    assert result.exit_code == 2, result.output
    assert contents(place) == before


def test_restore_into_a_new_folder_still_works(archived_hub, tmp_path):
    fresh = str(tmp_path / "new" / "hub")
    code, out = cli("restore", archived_hub, "org/model@v1.0", "--cache-dir", fresh, "--json")
    assert code == 0 and out["units"][0]["root"] == fresh, out
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    code, out = cli("restore", archived_hub, "org/pinned", "--cache-dir", empty, "--json")
    assert code == 0 and out["units"][0]["root"] == empty, out


def test_restore_through_a_symlink_to_a_cache_of_another_kind_is_refused(archived_hub, tmp_path):
    from tests.trees import write

    torch_root = str(tmp_path / "torch" / "hub")
    write(os.path.join(torch_root, "checkpoints", "resnet18-f37072fd.pth"), 100)
    link = str(tmp_path / "looks-new")
    os.symlink(torch_root, link)
    before = contents(torch_root)
    for args in ((), ("--kind", "huggingface")):
        result = run_cli("restore", archived_hub, "org/model@v1.0", "--cache-dir", link, *args)
        assert result.exit_code == 2, result.output
    assert contents(torch_root) == before


def test_a_new_folder_never_takes_units_of_two_kinds(archived_hub, tmp_path, monkeypatch):
    """`restore DEST org/model --cache-dir new/` where org/model was archived from the hub and from ModelScope: the
    new folder would become a hub cache and a ModelScope cache at once (each kind's unit written into a cache of
    another kind by the time it lands). Exit 2, asking for --kind; with --kind, that kind's units only."""
    import time

    from tests.trees import write

    ms = str(tmp_path / "ms")
    monkeypatch.setenv("MODELSCOPE_CACHE", ms)
    snap = os.path.join(ms, "models", "org--model", "snapshots", "v1.0.0")
    write(os.path.join(snap, "model.safetensors"), 3000)
    write(os.path.join(ms, "models", "org--model", "snapshots", "master", "model.safetensors"), 3100)
    when = time.time() - 60 * 86400
    for folder, dirs, files in os.walk(snap):
        for name in dirs + files:
            os.utime(os.path.join(folder, name), (when, when))
    os.utime(snap, (when, when))
    code, plan = cli("prune", "--kind", "modelscope", "--max-age", "30d", "--archive-to", archived_hub, "--yes", "--json")
    assert code == 0 and [u["status"] for u in plan["delete"]] == ["deleted"], plan
    code, listing = cli("archive", "ls", archived_hub, "--json")
    assert {u["kind"] for u in listing["units"] if u["id"] == "org/model"} == {"huggingface", "modelscope"}

    fresh = str(tmp_path / "fresh")
    result = run_cli("restore", archived_hub, "org/model", "--cache-dir", fresh)
    # DEFECT: exit 0, both kinds' trees written into the one new folder.
    assert result.exit_code == 2, result.output
    assert not os.path.exists(fresh) or contents(fresh) == {}
    code, out = cli("restore", archived_hub, "org/model", "--cache-dir", fresh, "--kind", "modelscope", "--json")
    assert code == 0 and {u["kind"] for u in out["units"]} == {"modelscope"}, out


# ---------------------------------------------------------------------------------------------
# The same attacks on the other paths


def test_a_file_rewritten_in_place_while_copied_to_a_folder_archive_is_not_archived(tmp_path, monkeypatch):
    """The folder archive's copy of a file not named by its hash: rewritten in place (same size) after its first chunk
    was copied, the copy is half old, half new, named by the mixture's sha256."""
    from hfcache.archive import store

    old = content(3 * 4096 + 5, 11)
    new = content(3 * 4096 + 5, 12)
    src = write_file(tmp_path / "cache" / "weights.bin", old)
    archive = open_archive(str(tmp_path / "archive"))
    monkeypatch.setattr(store, "CHUNK", 4096)
    real = store._LocalWriter.write
    writes = []

    def write(self, data):
        writes.append(len(data))
        if len(writes) == 1:
            with open(src, "r+b") as f:
                f.write(new)
        return real(self, data)

    monkeypatch.setattr(store._LocalWriter, "write", write)
    # DEFECT: the mixture was archived under its own sha256; put_file succeeded.
    with pytest.raises(ArchiveError, match="changed while it was archived"):
        archive.put_file(src)
    assert not os.path.exists(os.path.join(archive.base, "objects"))


def test_a_run_killed_between_complete_and_move_leaves_what_the_next_run_finishes(s3, small_parts, tmp_path, monkeypatch):
    """tmp/up-<identity> complete but never moved to its object (kill -9 then): no object, and the next run archives
    the file whole and leaves no temporary behind."""
    data = content(2 * SMALL + 5, 13)
    src = write_file(tmp_path / "cache" / "weights.bin", data)
    archive = open_archive(s3)

    class Killed(BaseException):
        pass

    def move(self, tmp, final):
        raise Killed

    real_move, real_discard = Archive._move, Archive._discard
    monkeypatch.setattr(Archive, "_move", move)
    monkeypatch.setattr(Archive, "_discard", lambda self, path: None)  # kill -9: no clean-up
    with pytest.raises(Killed):
        archive.put_file(src)
    monkeypatch.setattr(Archive, "_move", real_move)
    monkeypatch.setattr(Archive, "_discard", real_discard)
    archive = open_archive(s3)
    assert archive.fs.exists(tmp_name(archive, src)) and not archive.fs.exists(archive.object_path(sha(data)))
    assert archive.put_file(src)[:2] == (sha(data), len(data))
    assert archive.fs.cat_file(archive.object_path(sha(data))) == data
    assert archive.fs.find(archive._path("tmp")) == [] and uploads(archive) == []


def test_a_prune_whose_upload_fails_part_way_keeps_the_unit_and_the_next_one_archives_it(s3, small_parts, tmp_path, monkeypatch):
    """The network drops on part 2 of a shard: the revision stays in the cache (never neither); the next prune sends
    only what is missing, deletes it, and restore gives the library the same bytes."""
    from huggingface_hub import hf_hub_download

    from tests.fakehub import FakeHub
    from tests.support import get

    root = str(tmp_path / "hub")
    shard = content(3 * SMALL + 77, 14)
    with FakeHub() as hub:
        hub.push("org/big", {"config.json": b"{}", "model.safetensors": shard})
        for f in ("config.json", "model.safetensors"):
            get(hub, root, "org/big", f)
    age_everything(root, 90)
    args = ["prune", "--cache-dir", root, "--max-age", "30d", "--allow-remove-all", "--archive-to", s3, "--yes", "--json"]
    real = multipart.Upload._send

    def send(self, number, body):
        if number == 2:
            raise ConnectionResetError(104, "Connection reset by peer")
        return real(self, number, body)

    monkeypatch.setattr(multipart.Upload, "_send", send)
    code, plan = cli(*args)
    assert code == 0, plan
    assert [u["status"] for u in plan["delete"] if u["what"] == "revision"] == []
    assert len(os.listdir(os.path.join(root, "models--org--big", "snapshots"))) == 1
    monkeypatch.setattr(multipart.Upload, "_send", real)
    code, plan = cli(*args)
    assert code == 0, plan
    assert [u["status"] for u in plan["delete"] if u["what"] == "revision"] == ["deleted"]
    code, out = cli("restore", s3, "org/big", "--cache-dir", root, "--json")
    assert code == 0, out
    path = hf_hub_download("org/big", "model.safetensors", cache_dir=root, local_files_only=True)
    with open(path, "rb") as f:
        assert f.read() == shard
