"""hfcache against huggingface_hub's own accounting, on caches the real client builds.

The real ``hf_hub_download`` fetches from a loopback stand-in for the Hub (tests/fakehub.py);
every repo, revision, ref, size, time and reclaimable figure hfcache reports must equal what
``huggingface_hub.scan_cache_dir`` (and its delete strategy) says about the same cache.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from huggingface_hub import file_download, scan_cache_dir
from huggingface_hub.errors import EntryNotFoundError

import hfcache
from tests.fakehub import FakeHub
from tests.support import (
    assert_same_as_hub,
    build_rich_cache,
    get,
    payload,
    publish,
    run_cli,
)


@pytest.fixture
def hub():
    with FakeHub() as fake:
        yield fake


def test_rich_cache_matches_scan_cache_dir(hub, tmp_path):
    root = str(tmp_path / "hub")
    commits = build_rich_cache(hub, root)
    ours = assert_same_as_hub(root)
    model = next(i for i in ours.items if i.id == "org/model")
    refs = {r.revision: set(r.refs) for r in model.revisions}
    assert refs[commits["c1"]] == {"v1.0", commits["c1"][:8]}
    assert refs[commits["c2"]] == {"v1.1"}
    assert refs[commits["c3"]] == {"main"}
    assert refs[commits["pr"]] == {"refs/pr/1"}
    moving = next(i for i in ours.items if i.id == "org/moving")
    assert {r.revision: r.detached for r in moving.revisions} == {commits["d1"]: True, commits["d2"]: False}
    pinned = next(i for i in ours.items if i.id == "org/pinned")
    assert pinned.revisions[0].detached
    # The blob shared by c1 and c2 is counted once per repo, and freed by neither alone.
    c1 = next(r for r in model.revisions if r.revision == commits["c1"])
    assert c1.size_bytes == 3000 + 2048 + len(b'{"v": 1}')
    assert c1.reclaimable_bytes == 2048 + len(b'{"v": 1}')
    assert {i.type for i in ours.items} == {"model", "dataset", "space"}


def test_no_symlink_mode_matches(hub, tmp_path, monkeypatch):
    """The real client's no-symlink code path (Windows without developer mode)."""
    root = str(tmp_path / "hub")
    monkeypatch.setattr(file_download, "are_symlinks_supported", lambda *a, **k: False)
    c1 = hub.push("org/win", {"model.bin": payload(2500, 7), "config.json": b"{}"})
    get(hub, root, "org/win", "model.bin")
    get(hub, root, "org/win", "config.json")
    hub.push("org/win", {"config.json": b'{"x": 1}'})
    get(hub, root, "org/win", "model.bin")  # copied again into the new snapshot
    get(hub, root, "org/win", "config.json")
    monkeypatch.undo()
    hub.push("org/win", {"extra.txt": b"linked"})
    get(hub, root, "org/win", "extra.txt")  # mixed: this one is a symlink
    ours = assert_same_as_hub(root)
    win = ours.items[0]
    assert len(win.revisions) == 3 and any(r.revision == c1 for r in win.revisions)
    assert win.size_bytes == 2 * 2500 + 2 + len(b'{"x": 1}') + len(b"linked")


def test_shared_store_matches(hub, tmp_path):
    """The 2.x cross-repo shared store, built by huggingface_hub's own publishing code."""
    root = str(tmp_path / "hub")
    same = payload(5000, 8)
    weights = {}
    for repo_id in ("org/a", "org/b", "org/gone"):
        hub.push(repo_id, {"model.safetensors": same, "config.json": repo_id.encode()})
        weights[repo_id] = get(hub, root, repo_id, "model.safetensors")
        get(hub, root, repo_id, "config.json")
    solo = payload(3500, 9)
    hub.push("org/a", {"extra.safetensors": solo})
    extra = get(hub, root, "org/a", "extra.safetensors")
    for pointer in weights.values():
        publish(root, pointer, "a1" * 32, len(same))
    publish(root, extra, "b2" * 32, len(solo))
    # A payload whose only repo was removed behind the hub's back: unreferenced, still on disk.
    hub.push("org/lost", {"w.bin": payload(1700, 10)})
    publish(root, get(hub, root, "org/lost", "w.bin"), "c3" * 32, 1700)
    shutil.rmtree(os.path.join(root, "models--org--lost"))

    ours = assert_same_as_hub(root)
    assert ours.shared_store
    assert [p.size_bytes for p in ours.unreferenced_payloads] == [1700]
    per_repo = sum(i.size_bytes for i in ours.items)
    assert ours.size_bytes == per_repo - 2 * 5000 + 1700  # the shared payload once, plus the unreferenced one
    a = next(i for i in ours.items if i.id == "org/a")
    newest = max(a.revisions, key=lambda r: r.last_modified)
    assert newest.reclaimable_bytes == 3500  # its own payload, not the one b and gone still use


def test_download_in_progress_is_a_partial_with_its_lock_held(hub, tmp_path):
    root = str(tmp_path / "hub")
    hub.push("org/slow", {"big.bin": payload(200_000, 11)})
    hub.delay = 3.0
    done: list[str] = []
    thread = threading.Thread(target=lambda: done.append(get(hub, root, "org/slow", "big.bin")))
    thread.start()
    try:
        deadline = time.time() + 10
        partials = ()
        while time.time() < deadline and not partials:
            time.sleep(0.05)
            if os.path.isdir(root):
                partials = hfcache.scan([root]).caches[0].partial_files
        assert len(partials) == 1
        (p,) = partials
        assert p.scheme == "per-process" and p.item_id == "org/slow"
        assert p.lock_held is True
    finally:
        thread.join()
    assert done and os.path.getsize(done[0]) == 200_000
    after = assert_same_as_hub(root)
    assert after.partial_files == ()
    # The lock file stays behind (filelock never deletes it) but is free now.
    from hfcache.fs.locks import is_lock_held

    assert is_lock_held(p.lock_path) is False


def _state(root: str) -> dict[str, tuple]:
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(d, name)
            st = os.lstat(path)
            out[path] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_atime_ns if not os.path.isdir(path) else 0)
    return out


def test_scanning_reads_no_blob_and_writes_nothing(hub, tmp_path):
    root = str(tmp_path / "hub")
    build_rich_cache(hub, root)
    old = time.time() - 10 * 86400
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if "/blobs/" in p and not os.path.islink(p):
                os.utime(p, (old, os.lstat(p).st_mtime))
    before = _state(root)
    hfcache.scan([root])
    assert run_cli("scan", "--cache-dir", root, "--json").exit_code == 0
    after = _state(root)
    blobs = [p for p in before if "/blobs/" in p and not os.path.islink(p)]
    assert blobs and all(after[p][3] == before[p][3] for p in blobs), "a blob's atime moved"
    assert {p: v[:3] for p, v in after.items()} == {p: v[:3] for p, v in before.items()}


def test_probe_for_a_missing_file_moves_main_to_a_commit_without_snapshot(hub, tmp_path):
    """huggingface_hub writes refs/main for a 404 probe; its own scanner then drops the repo as corrupted.

    It is a normal state (the ref has no snapshot yet, ``.no_exist/<commit>`` says why): hfcache
    keeps the repo and its size and notes it, without marking the repo as damaged.
    """
    root = str(tmp_path / "hub")
    c1 = hub.push("org/p", {"config.json": b"{}"})
    get(hub, root, "org/p", "config.json")
    c2 = hub.push("org/p", {"config.json": b'{"v": 2}'})
    with pytest.raises(EntryNotFoundError):
        get(hub, root, "org/p", "generation_config.json")
    ref = scan_cache_dir(root)
    assert ref.repos == frozenset() and len(ref.warnings) == 1
    (item,) = hfcache.scan([root]).caches[0].items
    assert [r.revision for r in item.revisions] == [c1] and item.revisions[0].refs == ()
    assert item.size_bytes == 2 and item.deletable
    assert any(f"point to commit {c2}, known only from .no_exist/" in w.message for w in item.warnings)
