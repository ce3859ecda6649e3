"""Programs other than huggingface_hub that write the hub layout (issue 18, points 1 and 2).

Each tree is laid out exactly as the program writes it; the comments cite the source read:

* llama.cpp (ggml-org/llama.cpp, since March 2026): ``common/hf-cache.cpp`` and
  ``common/download.cpp``. ``get_cache_directory()`` takes ``LLAMA_CACHE`` first, then the
  hub's own variables; ``common_download_file_single_online`` downloads ``blobs/<oid>`` into
  ``path + ".downloadInProgress"``, opened ``std::ios::binary | std::ios::app`` by
  ``common_pull_file`` and resumed with ``Range: bytes=<size>-``, with no lock; refs are
  written by ``safe_write_file`` (``write_ref`` in the first version) to
  ``refs/<branch>.tmp``, then renamed; ``finalize_file`` links
  ``snapshots/<commit>/<path> -> ../../blobs/<oid>`` (``fs::relative``) or, in "degraded
  mode", moves or copies the blob there; ``common_download_get_hf_plan`` downloads only
  ``preset.ini`` from a repo that has one.
* Rust ``hf-hub`` 0.4.1-0.5.0 (huggingface/hf-hub @ v0.5.0 450b35c): ``src/api/sync.rs:36``
  ``const EXTENSION: &str = "part"`` and ``src/api/tokio.rs:32`` ``"sync.part"``, set with
  ``PathBuf::set_extension`` on ``blobs/<etag>``; ``lock_file`` (``sync.rs:86-89``)
  ``set_extension("lock")`` then ``File::create`` and ``flock``: ``blobs/<etag>.lock``, never
  deleted. 0.4.0 (41d49d6) had ``".part"`` and ``".sync.part"``, which ``set_extension``
  turns into ``<etag>..part``, and no lock.
* swift-huggingface (f724f92): ``Sources/HuggingFace/Hub/HubCache.swift:296``
  ``blobs/<etag>.incomplete``; its lock is ``lockPath(for: blobPath)`` (``:153``), the blob's
  path mirrored under ``.locks/`` (``.locks/<repo folder>/blobs/<etag>``) plus ``.lock``
  (``Shared/FileLock.swift:69``).
* huggingface.js (fe42e68): ``packages/hub/src/lib/download-file-to-cache-dir.ts:129``
  ``${blobPath}.incomplete``, no lock at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time

import pytest

import hfcache
from hfcache.caches.huggingface import location
from hfcache.caches.huggingface import scan as hf
from hfcache.caches.scan import scan_caches
from hfcache.model import CacheInventory, Item
from hfcache.plan.build import make_plan
from hfcache.plan.settings import Policy, Settings
from tests.fakehub import FakeHub
from tests.support import assert_same_as_hub, build_rich_cache, cli, run_cli
from tests.trees import commit, repo, sha256, write

DAY = 86400.0
ROOT = "/cache/hub"
C1, C2, C9 = commit("llama-1"), commit("llama-2"), commit("llama-never-cached")


def git_sha1(data: bytes) -> str:
    """The oid the Hub gives a file kept in git (not LFS): what llama.cpp names its blob."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def llama_repo(root: str, name: str = "org--m-GGUF", *, commit_: str = C1, oid: str | None = None, size: int = 300) -> str:
    """A model llama.cpp downloaded: ``refs/main``, one GGUF linked from its snapshot to ``blobs/<sha256>``."""
    oid = oid or sha256(f"{name}-{commit_}")
    return repo(root, f"models--{name}", snapshots={commit_: {"m-Q4_K_M.gguf": oid}}, blobs={oid: size}, refs={"main": commit_})


def only(inv: CacheInventory) -> Item:
    assert len(inv.items) == 1, inv.items
    return inv.items[0]


def age(path: str, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


# ---------------------------------------------------------------------------------------------
# llama.cpp: the scan


def test_llama_cpp_download_in_progress_is_a_partial_never_an_orphan(fs):
    repo_dir = llama_repo(ROOT)
    oid = sha256("the next split")
    partial = write(f"{repo_dir}/blobs/{oid}.downloadInProgress", 4096)  # path + ".downloadInProgress"
    inv = hf.scan(ROOT)
    assert inv.orphan_files == ()
    (p,) = inv.partial_files
    assert (p.path, p.item_id, p.size_bytes, p.scheme) == (partial, "org/m-GGUF", 4096, "resumable")
    assert p.lock_held is None  # llama.cpp takes no lock: only age and open files tell a live download
    item = only(inv)
    assert item.size_bytes == 300 and inv.size_bytes == 300 and item.deletable and item.warnings == ()


def test_llama_cpp_ref_tmp_is_a_leftover_never_a_ref(fs):
    repo_dir = llama_repo(ROOT)
    # safe_write_file(refs/main): `path.string() + ".tmp"` written, then renamed; a kill in between leaves it.
    tmp = write(f"{repo_dir}/refs/main.tmp", C2.encode())
    nested = write(f"{repo_dir}/refs/feature/x.tmp", C9.encode())  # a branch "feature/x" of a commit never cached
    inv = hf.scan(ROOT)
    item = only(inv)
    assert item.refs.keys() == {"main"}
    assert item.warnings == () and item.deletable  # main.tmp names a commit with no snapshot: no damage
    temporaries = {p.path: p for p in inv.partial_files}
    assert temporaries.keys() == {tmp, nested}
    assert {(p.scheme, p.item_id, p.lock_path) for p in temporaries.values()} == {("temporary", "org/m-GGUF", None)}


def test_llama_cpp_ref_tmp_alone_and_hub_ref_tmp(fs):
    """llama.cpp killed before its first rename: only refs/main.tmp, naming a revision that is there; a hub one too."""
    repo_dir = repo(ROOT, "models--org--m-GGUF", snapshots={C1: {"a.gguf": sha256(1)}}, blobs={sha256(1): 5})
    write(f"{repo_dir}/refs/main.tmp", C1.encode())
    write(f"{repo_dir}/refs/v1.1a2b3c4d.tmp", C1.encode())
    inv = hf.scan(ROOT)
    rev = only(inv).revisions[0]
    # The lone main.tmp is the only record of a ref to a revision that is there: read as a ref (as
    # huggingface_hub reads it), it keeps the revision tagged; huggingface_hub's own temporary is none.
    assert rev.refs == ("main.tmp",) and not rev.detached
    assert sorted(os.path.basename(p.path) for p in inv.partial_files) == ["v1.1a2b3c4d.tmp"]


def test_llama_cpp_degraded_mode(fs):
    # finalize_file without symlinks: fs::rename(blob, snapshot file), else fs::copy (the blob stays, unused).
    moved = write(f"{ROOT}/models--org--w-GGUF/snapshots/{C1}/w-Q8_0.gguf", 700)
    write(f"{ROOT}/models--org--w-GGUF/refs/main", C1.encode())
    copied = repo(ROOT, "models--org--c-GGUF", snapshots={}, blobs={sha256("copied"): 900}, refs={"main": C2})
    write(f"{copied}/snapshots/{C2}/c-Q8_0.gguf", 900)
    inv = hf.scan(ROOT)
    moved_item, copied_item = (next(i for i in inv.items if i.id == n) for n in ("org/w-GGUF", "org/c-GGUF"))
    assert moved_item.size_bytes == 700 and moved_item.revisions[0].blobs == {f"snapshots/{C1}/w-Q8_0.gguf"}
    assert os.path.isfile(moved)
    assert copied_item.size_bytes == 900 and copied_item.deletable
    assert [(o.path, o.size_bytes) for o in inv.orphan_files] == [(f"{copied}/blobs/{sha256('copied')}", 900)]


def test_a_repo_holding_only_preset_ini_is_a_small_model(fs):
    # common_download_get_hf_plan: "if preset.ini exists in the repo root, download only that file".
    preset = b"hf-repo = org/real-model-GGUF\ntemp = 0.5\n"
    oid = git_sha1(preset)  # a small file: kept in git, its oid a git sha1
    repo(ROOT, "models--org--preset", snapshots={C1: {"preset.ini": oid}}, blobs={oid: len(preset)}, refs={"main": C1})
    inv = hf.scan(ROOT)
    item = only(inv)
    assert (item.id, item.type, item.size_bytes, item.deletable) == ("org/preset", "model", len(preset), True)
    assert [r.refs for r in item.revisions] == [("main",)]
    assert inv.orphan_files == () and inv.partial_files == () and inv.leftovers == ()
    plan = make_plan(hfcache.Inventory((inv,), time.time()), Policy(overrides=Settings(junk=True)), now=time.time() + 30 * DAY)
    assert plan.delete == ()  # not junk: the model llama-server runs in router mode with


# ---------------------------------------------------------------------------------------------
# Other writers: Rust hf-hub, Swift, JavaScript


def test_rust_hf_hub_parts_are_partials_and_its_locks_are_locks(fs):
    repo_dir = llama_repo(ROOT, "org--rs")
    blobs = f"{repo_dir}/blobs"
    e_sync, e_tokio, e_old, e_old_tokio = (sha256(f"rs-{n}") for n in range(4))
    write(f"{blobs}/{e_sync}.part", 100)  # sync API (ureq), 0.4.1+
    write(f"{blobs}/{e_sync}.lock")  # lock_file(): set_extension("lock"), flock, never deleted
    write(f"{blobs}/{e_tokio}.sync.part", 208)  # tokio API: size + 8 bytes (the committed length)
    write(f"{blobs}/{e_tokio}.lock")
    write(f"{blobs}/{e_old}..part", 50)  # 0.4.0: set_extension(".part") keeps the dot
    write(f"{blobs}/{e_old_tokio}..sync.part", 58)
    write(f"{blobs}/{sha256('done')}.lock")  # the lock of a blob downloaded long ago stays
    inv = hf.scan(ROOT)
    assert inv.orphan_files == ()
    parts = {os.path.basename(p.path): p for p in inv.partial_files}
    assert parts.keys() == {f"{e_sync}.part", f"{e_tokio}.sync.part", f"{e_old}..part", f"{e_old_tokio}..sync.part"}
    assert {p.scheme for p in parts.values()} == {"resumable"}
    assert parts[f"{e_sync}.part"].lock_path == f"{blobs}/{e_sync}.lock"
    assert parts[f"{e_tokio}.sync.part"].lock_path == f"{blobs}/{e_tokio}.lock"
    item = only(inv)
    assert item.warnings == () and item.size_bytes == 300


def test_swift_and_javascript_incomplete(tmp_path):
    root = str(tmp_path / "hub")
    repo_dir = llama_repo(root, "org--sw")
    e_swift, e_js = sha256("swift"), sha256("js")
    write(f"{repo_dir}/blobs/{e_swift}.incomplete", 10)
    lock = write(f"{root}/.locks/models--org--sw/blobs/{e_swift}.lock")  # lockPath(for: blobs/<etag>) + ".lock"
    write(f"{repo_dir}/blobs/{e_js}.incomplete", 20)  # huggingface.js: no lock
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a download holds it (flock is per open file: the scan's own open is another)
        parts = {os.path.basename(p.path): (p.lock_path, p.lock_held) for p in hf.scan(root).partial_files}
    assert parts[f"{e_swift}.incomplete"] == (lock, True)
    assert parts[f"{e_js}.incomplete"] == (f"{root}/.locks/models--org--sw/{e_js}.lock", None)
    assert hf.scan(root).orphan_files == ()


# ---------------------------------------------------------------------------------------------
# What no program is known to write


def test_an_unknown_name_in_blobs_is_reported_never_an_orphan(fs):
    repo_dir = llama_repo(ROOT, "org--odd")
    blobs = f"{repo_dir}/blobs"
    unknown = [
        write(f"{blobs}/{sha256('x')}.bak", 10),  # a hub-shaped name with a suffix no writer uses
        write(f"{blobs}/{sha256('y')}.etag", 10),
        write(f"{blobs}/sha256:{sha256('z')}", 10),
        write(f"{blobs}/notes.txt", 10),
        write(f"{blobs}/{sha256('w')}.part.1", 10),
    ]
    orphans = [
        write(f"{blobs}/{commit('git blob')}", 1),  # git sha1
        write(f"{blobs}/{sha256('lfs blob')}", 2),  # sha256 (LFS, Xet)
        write(f"{blobs}/{'a' * 32}", 3),  # a mirror's md5 ETag
        write(f"{blobs}/f537c7f0a35b9b044c51ac5539506b07-10", 4),  # S3 multipart ETag (CACHE-LAYOUTS 2.4)
    ]
    inv = hf.scan(ROOT)
    assert sorted(o.path for o in inv.orphan_files) == sorted(orphans)
    assert inv.partial_files == ()
    item = only(inv)
    flagged = sorted(w.path for w in item.warnings)
    assert flagged == sorted(unknown)
    assert all(not w.blocks_deletion and "unknown" in w.message for w in item.warnings)
    assert item.deletable and item.size_bytes == 300


def test_a_blob_with_an_odd_name_that_a_snapshot_uses_is_a_blob(fs):
    repo(ROOT, "models--org--m", snapshots={C1: {"a": "odd.name"}}, blobs={"odd.name": 7}, refs={"main": C1})
    inv = hf.scan(ROOT)
    assert only(inv).size_bytes == 7 and only(inv).warnings == () and inv.orphan_files == ()


# ---------------------------------------------------------------------------------------------
# LLAMA_CACHE: one more hub-layout root


def test_llama_cache_is_one_more_hub_root(tmp_path):
    env = {"HOME": str(tmp_path / "home")}
    hub_root = str(tmp_path / "home" / ".cache" / "huggingface" / "hub")
    assert location.default_roots(env) == [hub_root]
    llama = str(tmp_path / "llama")
    assert location.default_roots({**env, "LLAMA_CACHE": llama}) == [hub_root]  # not there: nothing cached by llama.cpp
    assert location.default_roots({**env, "LLAMA_CACHE": ""}) == [hub_root]  # empty is unset (`p && *p`)
    llama_repo(llama)
    assert location.default_roots({**env, "LLAMA_CACHE": llama}) == [hub_root, llama]
    # An old flat llama.cpp cache (manifest=<org>=<repo>=<tag>.json, *.gguf) is not a hub cache.
    flat = str(tmp_path / "flat")
    write(f"{flat}/manifest=org=m-GGUF=Q4_K_M.json", b"{}")
    write(f"{flat}/org_m-GGUF_m-Q4_K_M.gguf", 10)
    assert location.default_roots({**env, "LLAMA_CACHE": flat}) == [hub_root]


@pytest.mark.parametrize("spelling", ["same", "symlink", "dotted"])
def test_llama_cache_that_is_the_hub_cache_is_scanned_once(tmp_path, spelling):
    hub_root = str(tmp_path / "hub")
    llama_repo(hub_root)
    llama = {
        "same": hub_root,
        "symlink": str(tmp_path / "link"),
        "dotted": str(tmp_path / "hub" / ".." / "hub"),
    }[spelling]
    if spelling == "symlink":
        os.symlink(hub_root, llama)
    inv = scan_caches(kinds=["huggingface"], env={"HOME": str(tmp_path), "HF_HUB_CACHE": hub_root, "LLAMA_CACHE": llama})
    assert [c.root for c in inv.caches] == [hub_root]
    assert [i.id for i in inv.caches[0].items] == ["org/m-GGUF"]


def test_scan_lists_the_llama_cache(tmp_path, monkeypatch):
    llama = str(tmp_path / "llama")
    llama_repo(llama, "org--q-GGUF")
    monkeypatch.setenv("LLAMA_CACHE", llama)
    code, doc = cli("scan", "--kind", "huggingface", "--json")
    assert code == 0, doc
    by_root = {c["root"]: c for c in doc["caches"]}
    assert [i["id"] for i in by_root[llama]["items"]] == ["org/q-GGUF"]
    assert len(by_root) == 2  # the hub's own root (not there yet) and llama.cpp's


# ---------------------------------------------------------------------------------------------
# Pruning: a download llama.cpp is appending to is never deleted; a stale one is


# common_pull_file: `std::ofstream ofs(path_tmp, std::ios::binary | std::ios::app)`, one write
# per chunk received, until the download ends (here: until the test closes stdin).
APPEND = """
import select, sys
with open(sys.argv[1], "ab") as f:
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0.05)[0]:
        f.write(b"x" * 4096)
        f.flush()
"""

# The same process stalled (a hung connection): the file open, nothing written.
HOLD = """
import sys
with open(sys.argv[1], "ab"):
    print("ready", flush=True)
    sys.stdin.read()
"""

# hf-hub's lock_file(): flock(LOCK_EX) on blobs/<etag>.lock, held while the download runs.
LOCK = """
import fcntl, sys
with open(sys.argv[1]) as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("ready", flush=True)
    sys.stdin.read()
"""


class Child:
    """A child process running ``code`` on ``path``; it says "ready", and ends when its stdin closes (``stop``)."""

    def __init__(self, code: str, path: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.communicate("", timeout=10)


@pytest.fixture
def children():
    made: list[Child] = []

    def start(code: str, path: str) -> Child:
        made.append(Child(code, path))
        return made[-1]

    yield start
    for child in made:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()


def _units(doc: dict, key: str) -> dict[str, dict]:
    return {u["path"]: u for u in doc[key]}


def test_a_live_llama_cpp_download_survives_prune_junk_and_a_stale_one_goes(tmp_path, children):
    root = str(tmp_path / "hub")
    repo_dir = llama_repo(root)
    partial = os.path.join(repo_dir, "blobs", sha256("Q8_0 split 2") + ".downloadInProgress")
    downloader = children(APPEND, partial)
    time.sleep(0.2)
    code, doc = cli("prune", "--cache-dir", root, "--junk", "--yes", "--json")
    assert code == 0, doc
    assert partial not in _units(doc, "delete") and partial in _units(doc, "keep")
    assert os.path.getsize(partial) > 0 and downloader.proc.poll() is None
    downloader.stop()

    size = os.path.getsize(partial)
    age(partial, 2)  # left alone past the grace period (24h), no process holding it
    code, doc = cli("prune", "--cache-dir", root, "--junk", "--yes", "--json")
    assert code == 0, doc
    assert _units(doc, "delete")[partial]["status"] == "deleted"
    assert doc["freed_bytes"] == size and not os.path.exists(partial)
    assert hf.scan(root).items[0].size_bytes == 300  # the model itself stays


def test_a_stalled_download_still_open_is_not_deleted(tmp_path, children):
    root = str(tmp_path / "hub")
    repo_dir = llama_repo(root)
    partial = write(os.path.join(repo_dir, "blobs", sha256("stalled") + ".downloadInProgress"), 5000)
    holder = children(HOLD, partial)
    age(partial, 2)
    code, doc = cli("prune", "--cache-dir", root, "--junk", "--yes", "--json")
    unit = _units(doc, "delete")[partial]
    assert unit["status"] == "skipped" and "in use" in unit["error"], unit
    assert os.path.exists(partial)
    holder.stop()
    code, doc = cli("prune", "--cache-dir", root, "--junk", "--yes", "--json")
    assert code == 0 and _units(doc, "delete")[partial]["status"] == "deleted"


def test_a_young_download_in_progress_keeps_the_repo_s_revisions(tmp_path):
    """A download running into the repo (llama.cpp's, which takes no lock) holds back its revisions' deletion."""
    root = str(tmp_path / "hub")
    old_oid, new_oid = sha256("old"), sha256("new")
    repo_dir = repo(
        root,
        "models--org--m-GGUF",
        snapshots={C1: {"m-Q4_K_M.gguf": old_oid}, C2: {"m-Q4_K_M.gguf": new_oid}},
        blobs={old_oid: 100, new_oid: 200},
        refs={"main": C2},
    )
    age(os.path.join(repo_dir, "blobs", old_oid), 10)
    write(os.path.join(repo_dir, "blobs", sha256("mmproj") + ".downloadInProgress"), 64)
    code, doc = cli("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json")
    (unit,) = doc["delete"]
    assert unit["revision"] == C1 and unit["status"] == "skipped", unit
    assert "download into this repo" in unit["error"] and ".downloadInProgress" in unit["error"]
    assert os.path.isdir(os.path.join(repo_dir, "snapshots", C1))


def test_a_rust_download_holding_its_lock_keeps_the_repo_s_revisions(tmp_path, children):
    root = str(tmp_path / "hub")
    old_oid, new_oid = sha256("old"), sha256("new")
    repo_dir = repo(
        root,
        "models--org--rs",
        snapshots={C1: {"m.safetensors": old_oid}, C2: {"m.safetensors": new_oid}},
        blobs={old_oid: 100, new_oid: 200},
        refs={"main": C2},
    )
    etag = sha256("being downloaded")
    lock = write(os.path.join(repo_dir, "blobs", etag + ".lock"))
    part = write(os.path.join(repo_dir, "blobs", etag + ".part"), 10)
    age(part, 3)
    locker = children(LOCK, lock)  # hf-hub's lock_file(): flock on blobs/<etag>.lock while it downloads
    code, doc = cli("prune", "--cache-dir", root, "--keep", "1", "--junk", "--yes", "--json")
    units = {u["what"]: u for u in doc["delete"]}
    assert units["revision"]["status"] == "skipped" and "lock held" in units["revision"]["error"], units
    assert part in {u["path"] for u in doc["keep"]}  # its lock is held: kept by the policy already
    assert os.path.exists(part) and os.path.isdir(os.path.join(repo_dir, "snapshots", C1))
    locker.stop()
    code, doc = cli("prune", "--cache-dir", root, "--keep", "1", "--junk", "--yes", "--json")
    assert {u["status"] for u in doc["delete"]} == {"deleted"}, doc["delete"]
    assert not os.path.exists(part) and os.path.exists(lock)  # a lock file is never deleted


def test_junk_takes_what_it_recognises_and_nothing_else(tmp_path):
    root = str(tmp_path / "hub")
    repo_dir = llama_repo(root)
    blobs = os.path.join(repo_dir, "blobs")
    gone = [
        write(os.path.join(blobs, sha256("a") + ".downloadInProgress"), 11),
        write(os.path.join(blobs, sha256("b") + ".part"), 12),
        write(os.path.join(blobs, sha256("c") + ".sync.part"), 13),
        write(os.path.join(blobs, sha256("orphan")), 14),
        write(os.path.join(repo_dir, "refs", "main.tmp"), C1.encode()),
    ]
    stay = [
        write(os.path.join(blobs, sha256("b") + ".lock")),
        write(os.path.join(blobs, sha256("d") + ".bak"), 15),
        write(os.path.join(blobs, "sha256:" + sha256("e")), 16),
        write(os.path.join(blobs, "notes.txt"), 17),
    ]
    for path in gone + stay:
        age(path, 30)
    code, plan = cli("prune", "--cache-dir", root, "--junk", "--dry-run", "--json")
    assert code == 0
    assert set(_units(plan, "delete")) == set(gone)
    code, done = cli("prune", "--cache-dir", root, "--junk", "--yes", "--json")
    assert code == 0 and {u["status"] for u in done["delete"]} == {"deleted"}
    assert [p for p in gone if os.path.lexists(p)] == [] and all(os.path.exists(p) for p in stay)
    item = hf.scan(root).items[0]
    assert item.refs.keys() == {"main"} and item.size_bytes == 300


def test_deleting_a_revision_beside_a_leftover_ref_tmp(tmp_path):
    """A revision main names, with llama.cpp's refs/main.tmp naming it too: deleting it sees the refs the plan saw."""
    root = str(tmp_path / "hub")
    old_oid, new_oid = sha256("old"), sha256("new")
    repo_dir = repo(
        root,
        "models--org--m-GGUF",
        snapshots={C1: {"m.gguf": old_oid}, C2: {"m.gguf": new_oid}},
        blobs={old_oid: 100, new_oid: 200},
        refs={"main": C1, "v2": C2},
    )
    write(os.path.join(repo_dir, "refs", "main.tmp"), C1.encode())
    code, doc = cli("rm", f"org/m-GGUF@{C1}", "--cache-dir", root, "--yes", "--json")
    assert code == 0, doc
    (unit,) = [u for u in doc["delete"] if u["what"] == "revision"]
    assert unit["status"] == "deleted", unit
    assert not os.path.exists(os.path.join(repo_dir, "snapshots", C1))


# ---------------------------------------------------------------------------------------------
# Beside repos the real huggingface_hub downloaded


def test_a_llama_cpp_repo_in_a_real_hub_cache_matches_scan_cache_dir(tmp_path):
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        build_rich_cache(hub, root)
    repo_dir = llama_repo(root, "bartowski--m-GGUF")
    write(os.path.join(repo_dir, "refs", "main.tmp"), C1.encode())  # scan_cache_dir reads it as a ref "main.tmp"
    partial = write(os.path.join(repo_dir, "blobs", sha256("next") + ".downloadInProgress"), 999)
    ours = assert_same_as_hub(root)
    llama = next(i for i in ours.items if i.id == "bartowski/m-GGUF")
    assert llama.refs.keys() == {"main"}
    assert partial in {p.path for p in ours.partial_files}
    assert not any(o.path.startswith(repo_dir) for o in ours.orphan_files)


def test_prune_junk_run_through_the_cli_leaves_a_real_hub_cache_loadable(tmp_path):
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        build_rich_cache(hub, root)
    repo_dir = llama_repo(root)
    stale = write(os.path.join(repo_dir, "blobs", sha256("gone") + ".downloadInProgress"), 10)
    age(stale, 5)
    result = run_cli("prune", "--cache-dir", root, "--junk", "--yes")
    assert result.exit_code == 0, result.output
    assert not os.path.exists(stale)
    assert_same_as_hub(root)
