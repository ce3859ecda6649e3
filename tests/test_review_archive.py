"""Review tests: archive_plan now copies several units at once; two of them may share a large file."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from hfcache.archive import multipart
from hfcache.archive.store import Archive

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def content(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // 32 + 1))[:size]


@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_two_copies_of_one_large_file_at_once_both_succeed(s3, tmp_path, monkeypatch, named):
    """Two units sharing a large file (hub revisions sharing a blob, llama.cpp tags sharing a .gguf) are copied at
    once by archive_plan's pool. The second copy starts while the first is sending; the first completes while the
    second is still sending. Both must succeed: a unit is not kept because its twin finished the same object."""
    import moto.s3.models

    monkeypatch.setattr(multipart, "PART", MIB)
    monkeypatch.setattr(multipart, "PARALLEL", 1)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1)
    data = content(4 * MIB + 7, 1)
    sha = hashlib.sha256(data).hexdigest()
    os.makedirs(tmp_path / "blobs")
    src = str(tmp_path / "blobs" / (sha if named else "weights.bin"))
    with open(src, "wb") as f:
        f.write(data)
    archive = Archive(s3)
    archive.ensure()
    real_complete = multipart.Upload.complete
    second_sending, first_completed = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def put(who: str) -> None:
        threading.current_thread().name = who
        try:
            results[who] = archive.put_file(src, check=("sha256", sha) if named else None)[:2]
        except Exception as e:  # noqa: BLE001
            results[who] = e
        finally:
            second_sending.set()
            first_completed.set()

    second = threading.Thread(target=put, args=("second",))

    def upload_send(self, read, hashing, **kw):
        who = threading.current_thread().name
        if who == "first":
            second.start()
            second_sending.wait(3)  # (with copies one at a time: the second is not sending)
        else:
            second_sending.set()
            first_completed.wait(3)
        return real_upload_send(self, read, hashing, **kw)

    def complete(self):
        real_complete(self)
        if threading.current_thread().name == "first":
            first_completed.set()

    real_upload_send = multipart.Upload.send
    monkeypatch.setattr(multipart.Upload, "send", upload_send)
    monkeypatch.setattr(multipart.Upload, "complete", complete)
    first = threading.Thread(target=put, args=("first",))
    first.start()
    first.join(30)
    second.join(30)
    assert results == {"first": (sha, len(data)), "second": (sha, len(data))}
    assert archive.fs.cat_file(archive.object_path(sha)) == data


def test_two_llama_cpp_tags_sharing_a_gguf_are_both_archived_to_s3(s3, tmp_path, monkeypatch):
    """``latest`` and ``Q4_K_M`` name one .gguf; each tag's archive holds it, and archive_plan copies both units at
    once: the two uploads of the .gguf must not undo each other (one unit kept, "could not be archived")."""
    import json

    import moto.s3.models

    from tests.support import age_everything, cli
    from tests.trees import write

    monkeypatch.setattr(multipart, "PART", MIB)
    monkeypatch.setattr(multipart, "PARALLEL", 1)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1)
    root = str(tmp_path / "llama.cpp")
    data = content(6 * MIB + 7, 2)
    for tag in ("latest", "Q4_K_M"):
        doc = {"ggufFile": {"rfilename": "m-Q4_K_M.gguf", "blobId": "x", "size": len(data)}}
        write(os.path.join(root, f"manifest=org=M-GGUF={tag}.json"), json.dumps(doc).encode())
    write(os.path.join(root, "org_M-GGUF_m-Q4_K_M.gguf"), data)
    write(os.path.join(root, "org_M-GGUF_m-Q4_K_M.gguf.etag"), b'"etag"')
    age_everything(root, 90)
    args = ("--cache-dir", root, "--kind", "llama-cpp-flat", "--max-age", "30d", "--allow-remove-all", "--archive-to", s3)
    code, plan = cli("prune", *args, "--yes", "--json")
    assert code == 0, plan
    assert sorted((u["revision"], u["status"]) for u in plan["delete"] if u["what"] == "revision") == [
        ("Q4_K_M", "deleted"),
        ("latest", "deleted"),
    ], [r for u in plan["keep"] for r in u.get("reasons", []) if "archive" in str(r)]


def test_a_signal_while_a_long_copy_goes_on_stops_the_archiving_at_once(tmp_path, monkeypatch):
    """Ctrl-C / SIGTERM (raised in the main thread by hfcache's handler) while a big file is still being copied: the
    archiving stops at once (the prune deletes nothing; the copy is resumed by the next run), not after every copy
    under way has finished (``with ThreadPoolExecutor`` waited for them, minutes for a shard's upload)."""
    import signal
    import time

    import hfcache
    import hfcache.archive.run as run_mod
    from hfcache.caches.registry import registry
    from hfcache.plan.build import make_plan
    from hfcache.plan.settings import Policy, Settings
    from tests.fakehub import FakeHub
    from tests.support import age_everything, build_rich_cache

    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        build_rich_cache(hub, root)
    age_everything(root, 90)
    inventory = hfcache.scan([root])
    plan = make_plan(inventory, Policy(overrides=Settings(max_age=86400.0, allow_remove_all=True)), now=time.time())
    real = run_mod._put
    release = threading.Event()

    def put(archive, stored):
        release.wait(20)  # a long upload
        return real(archive, stored)

    monkeypatch.setattr(run_mod, "_put", put)
    from hfcache import interrupt

    # hfcache's own handler, as `hfcache prune` installs it (archiving runs outside its deferred part), whatever an
    # earlier test in this process left installed.
    before = signal.signal(signal.SIGINT, interrupt.handle)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(interrupt.Interrupted):
            run_mod.archive_plan(plan, inventory, Archive(str(tmp_path / "archive")), registry().kinds)
        assert time.monotonic() - started < 5
    finally:
        release.set()
        timer.cancel()
        signal.signal(signal.SIGINT, before)
        interrupt.reset()


def test_a_failing_clean_up_after_a_completed_upload_does_not_fail_the_copy(s3, tmp_path, monkeypatch):
    """Once the object is complete, listing the other uploads to abort them is best effort: its failure (a throttled
    ListMultipartUploads) left a file not named by its sha256 completed under tmp/ and never moved, the unit kept, and
    every byte sent again by the next run."""
    import moto.s3.models

    monkeypatch.setattr(multipart, "PART", MIB)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1)
    data = content(3 * MIB + 5, 3)
    os.makedirs(tmp_path / "cache")
    src = str(tmp_path / "cache" / "weights.bin")
    with open(src, "wb") as f:
        f.write(data)
    archive = Archive(s3)
    archive.ensure()
    real = multipart._uploads
    calls = []

    def uploads(fs, bucket, prefix):
        calls.append(prefix)
        if len(calls) == 2:  # the listing after complete
            raise OSError(503, "Slow Down")
        return real(fs, bucket, prefix)

    monkeypatch.setattr(multipart, "_uploads", uploads)
    sha = hashlib.sha256(data).hexdigest()
    assert archive.put_file(src)[:2] == (sha, len(data))
    assert archive.fs.cat_file(archive.object_path(sha)) == data
    assert archive.fs.find(archive._path("tmp")) == []


SLOW_ARCHIVE = """
import sys, time
import hfcache.archive.run as run_mod
real = run_mod._put
def put(archive, stored):
    time.sleep(60)  # a shard's upload over a slow link
    return real(archive, stored)
run_mod._put = put
sys.argv = ["hfcache", *sys.argv[1:]]
from hfcache.cli.main import run
run()
"""


def test_sigterm_during_a_prunes_archiving_exits_130_at_once_and_deletes_nothing(tmp_path):
    """systemd stopping the nightly prune while it uploads: exit 130 within seconds (not after the upload), nothing
    deleted, no manifest."""
    import signal
    import subprocess
    import sys
    import time

    from tests.fakehub import FakeHub
    from tests.support import age_everything, build_rich_cache, contents

    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        build_rich_cache(hub, root)
    age_everything(root, 90)
    before = contents(root)
    dest = str(tmp_path / "archive")
    args = ["prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", dest, "--yes", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_ARCHIVE, *args], stderr=subprocess.PIPE)
    time.sleep(2.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert time.monotonic() - started < 10
    assert {p: d for p, d in contents(root).items() if not p.startswith(".locks")} == {
        p: d for p, d in before.items() if not p.startswith(".locks")
    }
    assert Archive(dest).manifests() == []
