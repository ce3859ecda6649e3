"""``hfcache verify`` (issue 19): every cached file against the hash its cache keeps for it, offline.

Hub caches are built by huggingface_hub's own ``hf_hub_download`` against the loopback hub
(LFS files named by their sha256, files kept in git by their git blob hash); torch
checkpoints by ``torch.hub.load_state_dict_from_url``. Each kind of damage is made by hand
and must be found, and nothing else flagged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
import time

import pytest

import hfcache
from hfcache.caches.registry import KINDS
from hfcache.verify import reading
from hfcache.verify.reading import hash_file, resident
from hfcache.verify.run import _due, verify
from hfcache.verify.state import State
from tests.fakehub import FakeHub
from tests.support import build_rich_cache, run_cli
from tests.test_real_libraries import Files, need

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def rich(tmp_path):
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        commits = build_rich_cache(hub, root)
    return root, commits


def _verify(root: str, *args: str, state: str):
    result = run_cli("verify", "--cache-dir", root, "--state", state, "--json", *args)
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else result.output


def _files(doc) -> dict[tuple[str, str, str], dict]:
    return {(f["id"], f["revision"], f["name"]): f for c in doc["caches"] for f in c["files"]}


def _blob(root: str, repo: str, commit: str, name: str) -> str:
    return os.path.realpath(os.path.join(root, repo, "snapshots", commit, name))


def _keep_times(path: str):
    st = os.stat(path)
    return lambda: os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_cache_built_by_the_real_client_is_all_ok_and_each_content_is_read_once(rich, tmp_path):
    root, _ = rich
    code, doc = _verify(root, state=str(tmp_path / "state.db"))
    assert code == 0, doc
    files = _files(doc)
    assert {f["status"] for f in files.values()} == {"ok"}
    assert {f["algorithm"] for f in files.values()} == {"sha256", "git-sha1"}  # LFS files and files kept in git
    blobs = {os.stat(f["data"]).st_ino for f in files.values()}
    assert doc["files_hashed"] == len(blobs) < len(files)  # a blob several revisions share: read once


def test_every_kind_of_damage_is_found_and_nothing_else_is_flagged(rich, tmp_path):
    root, c = rich
    state = str(tmp_path / "state.db")
    assert _verify(root, state=state)[0] == 0
    model = "models--org--model"
    flipped = _blob(root, model, c["c3"], "model.safetensors")  # one bit of a 4000-byte LFS blob, same size
    data = bytearray(open(flipped, "rb").read())
    data[1234] ^= 0x01
    with open(flipped, "r+b") as f:
        f.write(data)
    truncated = _blob(root, "models--org--moving", c["d2"], "weights.bin")
    os.truncate(truncated, 100)
    swapped = _blob(root, "models--org--pinned", c["pinned"], "w.bin")  # another blob's bytes, of equal size
    other = _blob(root, model, c["c1"], "unet/diffusion_pytorch_model.bin")
    with open(swapped, "r+b") as f:
        f.write(open(other, "rb").read(os.path.getsize(swapped)))
    git_file = _blob(root, model, c["pr"], "config.json")  # a file kept in git: its git blob hash
    with open(git_file, "r+b") as f:
        f.write(b"X")
    os.remove(
        _blob(
            root,
            "datasets--org--data",
            next(iter(os.listdir(os.path.join(root, "datasets--org--data", "snapshots")))),
            "README.md",
        )
    )

    code, doc = _verify(root, state=state)
    assert code == 8, doc
    bad = {k: f["status"] for k, f in _files(doc).items() if f["status"] != "ok"}
    data_rev = next(iter(os.listdir(os.path.join(root, "datasets--org--data", "snapshots"))))
    assert bad == {
        ("org/model", c["c3"], "model.safetensors"): "corrupt",
        ("org/moving", c["d2"], "weights.bin"): "corrupt",
        ("org/pinned", c["pinned"], "w.bin"): "corrupt",
        ("org/model", c["pr"], "config.json"): "corrupt",
        ("org/data", data_rev, "README.md"): "missing",
    }
    flip = _files(doc)[("org/model", c["c3"], "model.safetensors")]
    assert flip["expected"] == os.path.basename(flipped) and flip["actual"] != flip["expected"] and flip["size_bytes"] == 4000
    assert doc["problems"] == 5
    text = run_cli("verify", "--cache-dir", root, "--state", state, env={"COLUMNS": "80"})
    assert text.exit_code == 8 and "5 ok" not in text.stdout and "1 missing" in text.stdout, text.stdout


def test_a_repeat_run_reads_nothing_unchanged_and_rot_is_found_by_full_or_when_due(rich, tmp_path):
    root, c = rich
    state = str(tmp_path / "state.db")
    assert _verify(root, state=state)[0] == 0
    code, again = _verify(root, state=state)
    assert code == 0 and again["files_hashed"] == 0
    assert {f["hashed"] for f in _files(again).values()} == {False}
    # Bit rot: the content changes, no timestamp moves. Written by hand, then the record made to
    # look as if the times had not moved (ctime cannot be set back).
    blob = _blob(root, "models--org--model", c["c3"], "model.safetensors")
    data = bytearray(open(blob, "rb").read())
    data[0] ^= 0x80
    with open(blob, "r+b") as f:
        f.write(data)
    st = os.stat(blob)
    with sqlite3.connect(state) as db:
        db.execute("UPDATE digests SET mtime_ns = ?, ctime_ns = ? WHERE ino = ?", (st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    assert _verify(root, state=state)[0] == 0  # trusted: unchanged as far as any timestamp says
    code, full = _verify(root, "--full", state=state)
    assert code == 8 and full["files_hashed"] > 1
    inventory = hfcache.scan([root])
    later = verify(inventory, kinds=KINDS, state=State(state), clock=lambda: time.time() + 31 * 86400)
    assert later.problems == 1  # read again once its digest was a month old


def test_a_month_of_nightly_runs_reads_everything_again_spread_over_a_fortnight():
    keys = [(2049, ino) for ino in range(1000, 3000)]
    due_on = [next(day for day in range(1, 40) if _due(k, 0.0, day * 86400.0, 30 * 86400.0)) for k in keys]
    assert min(due_on) >= 15 and max(due_on) <= 30
    assert max(due_on.count(d) for d in set(due_on)) < len(keys) / 8  # no night reads more than an eighth


def test_verify_moves_no_access_time_even_without_o_noatime(rich, tmp_path, monkeypatch):
    root, _ = rich
    blobs = [os.path.join(d, n) for d, _, names in os.walk(root) if d.endswith("blobs") for n in names]
    old = time.time() - 30 * 86400
    for b in blobs:
        os.utime(b, (old, os.stat(b).st_mtime))
    before = {b: (os.stat(b).st_atime_ns, os.stat(b).st_mtime_ns) for b in blobs}
    assert _verify(root, "--full", state=str(tmp_path / "a.db"))[0] == 0
    monkeypatch.setattr(reading, "_NOATIME", 0)  # as for another user's file: read plainly, the atime put back
    assert _verify(root, "--full", state=str(tmp_path / "b.db"))[0] == 0
    assert {b: (os.stat(b).st_atime_ns, os.stat(b).st_mtime_ns) for b in blobs} == before


def test_pages_the_read_brought_in_are_dropped_and_those_already_cached_stay(tmp_path):
    cold, hot = str(tmp_path / "cold.bin"), str(tmp_path / "hot.bin")
    for path in (cold, hot):
        with open(path, "wb") as f:
            f.write(os.urandom(8 * 1024 * 1024))
            f.flush()
            os.fsync(f.fileno())
    fd = os.open(cold, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    assert sum(1 for p in resident(fd, os.fstat(fd).st_size) or b"" if p) < 64, "cannot evict here"
    os.close(fd)
    with open(hot, "rb") as f:
        f.read()
    hash_file(cold, ["sha256"])
    hash_file(hot, ["sha256"])
    for path, expect in ((cold, "few"), (hot, "all")):
        fd = os.open(path, os.O_RDONLY)
        pages = resident(fd, os.fstat(fd).st_size) or bytearray()
        os.close(fd)
        cached = sum(1 for p in pages if p & 1)
        assert (cached < len(pages) // 8) if expect == "few" else (cached == len(pages)), (path, cached, len(pages))


def test_a_torch_checkpoint_is_checked_by_the_sha256_prefix_in_its_name(tmp_path):
    torch = need("torch")
    server = Files()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        root = str(tmp_path / "torch" / "hub")
        names = []
        for n in (10, 20):
            buf = io.BytesIO()
            torch.save({"w": torch.zeros(n)}, buf)
            name = f"net{n}-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.pth"
            server.files[f"/{name}"] = buf.getvalue()
            torch.hub.load_state_dict_from_url(
                f"{server.url}/{name}", model_dir=os.path.join(root, "checkpoints"), progress=False, check_hash=True
            )
            names.append(name)
    finally:
        server.shutdown()
        server.server_close()
    bad = os.path.join(root, "checkpoints", names[1])
    with open(bad, "ab") as f:
        f.write(b"\0")
    code, doc = _verify(root, state=str(tmp_path / "s.db"))
    assert code == 8
    assert {f["name"]: f["status"] for f in _files(doc).values()} == {names[0]: "ok", names[1]: "corrupt"}
    assert {f["algorithm"] for f in _files(doc).values()} == {"sha256-prefix"}


def test_selection_by_name_and_revision(rich, tmp_path):
    root, c = rich
    code, doc = _verify(root, "--name", "org/model", "--revision", "v1.0", state=str(tmp_path / "s.db"))
    assert code == 0 and {(k[0], k[1]) for k in _files(doc)} == {("org/model", c["c1"])}
    code, doc = _verify(root, "--revision", c["d1"][:8], state=str(tmp_path / "s.db"))
    assert {(k[0], k[1]) for k in _files(doc)} == {("org/moving", c["d1"])}


@pytest.mark.parametrize("damage", ["garbage", "directory"])
def test_a_state_database_that_cannot_be_used_is_a_warning_and_the_verify_still_runs(rich, tmp_path, damage):
    root, _ = rich
    state = str(tmp_path / "state.db")
    if damage == "garbage":
        with open(state, "wb") as f:
            f.write(b"this is not sqlite" * 100)
    else:
        os.makedirs(state)
    result = run_cli("verify", "--cache-dir", root, "--state", state)
    assert result.exit_code == 0, result.output
    assert "state database" in result.stderr
    if damage == "garbage":  # moved aside, started afresh: the next run remembers
        assert any(n.startswith("state.db.corrupt-") for n in os.listdir(tmp_path))
        code, doc = _verify(root, state=state)
        assert code == 0 and doc["files_hashed"] == 0 and doc["warnings"] == []


def test_a_state_file_inside_a_cache_is_refused(rich):
    root, _ = rich
    result = run_cli("verify", "--cache-dir", root, "--state", os.path.join(root, "state.db"))
    assert result.exit_code == 2 and not os.path.exists(os.path.join(root, "state.db"))


def test_metrics_export_the_last_verify_of_each_cache(rich, tmp_path):
    from tests.test_metrics import parse

    root, c = rich
    state = str(tmp_path / "state.db")
    os.truncate(_blob(root, "models--org--moving", c["d2"], "weights.bin"), 10)
    started = time.time()
    assert _verify(root, state=state)[0] == 8
    result = run_cli("metrics", "--cache-dir", root, "--state", state)
    assert result.exit_code == 0, result.output
    metrics = parse(result.stdout)
    [(labels, corrupt)] = metrics["hfcache_last_verify_corrupt_files"]
    assert labels["root"] == os.path.realpath(root) and corrupt == 1
    assert metrics["hfcache_last_verify_missing_files"][0][1] == 0
    assert metrics["hfcache_last_verify_timestamp_seconds"][0][1] >= int(started)
    quiet = run_cli("metrics", "--cache-dir", root, "--state", str(tmp_path / "none.db"))
    assert "hfcache_last_verify" not in quiet.stdout  # (that database has the usage history only)
    off = run_cli("metrics", "--cache-dir", root, "--state", "off")
    assert off.exit_code == 0 and "hfcache_last_verify" not in off.stdout and not os.path.exists("off")


def test_repair_takes_the_damage_out_keeps_it_in_quarantine_and_the_library_downloads_a_good_copy(tmp_path, monkeypatch):
    from huggingface_hub import scan_cache_dir

    from hfcache.execute.audit import read_log
    from tests.support import assert_kept_revisions_load_offline, get

    root, state, log = str(tmp_path / "hub"), str(tmp_path / "state.db"), str(tmp_path / "logs" / "audit.log")
    with FakeHub() as hub:
        c = build_rich_cache(hub, root)
        corrupt = _blob(root, "models--org--model", c["c1"], "model.safetensors")  # shared by v1.0 and v1.1
        with open(corrupt, "r+b") as f:
            f.write(b"\xff")
        dangling = os.path.join(root, "models--org--moving", "snapshots", c["d2"], "weights.bin")
        os.remove(os.path.realpath(dangling))
        before = scan_cache_dir(root)

        dry = run_cli("verify", "--cache-dir", root, "--state", state, "--repair", "--dry-run", "--json", "--log", log)
        assert dry.exit_code == 8, dry.output
        planned = json.loads(dry.stdout)["delete"]
        assert {(u["revision"], u["file"]) for u in planned} == {
            (c["c1"], "model.safetensors"),
            (c["c2"], "model.safetensors"),
            (c["d2"], "weights.bin"),
        }
        assert all(u["reasons"][0].startswith("verify: ") for u in planned)

        done = run_cli("verify", "--cache-dir", root, "--state", state, "--repair", "--yes", "--json", "--log", log)
        assert done.exit_code == 0, done.output
        assert {u["status"] for u in json.loads(done.stdout)["delete"]} == {"deleted"}
        [kept] = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(tmp_path, "logs", "quarantine")) for n in names]
        assert open(kept, "rb").read(1) == b"\xff"  # the corrupt content, kept for inspection
        assert not os.path.exists(corrupt) and not os.path.lexists(dangling)
        assert {r["status"] for r in read_log(log) if r["status"] != "started"} == {"deleted"}
        assert run_cli("verify", "--cache-dir", root, "--state", state).exit_code == 0
        # Every other file still loads offline, and the library fetches good copies of the rest.
        assert_kept_revisions_load_offline(root, scan_cache_dir(root), set(), monkeypatch)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        get(hub, root, "org/model", "model.safetensors", "v1.0")
        get(hub, root, "org/moving", "weights.bin")
    code, doc = _verify(root, "--full", state=state)
    assert code == 0 and {f["status"] for f in _files(doc).values()} == {"ok"}, doc
    after = scan_cache_dir(root)
    assert after.warnings == [] and "org/moving" in {r.repo_id for r in after.repos}  # it was unreadable before the repair
    assert {r.repo_id for r in before.repos} < {r.repo_id for r in after.repos}


def test_repair_starts_nothing_when_the_quarantine_cannot_be_written(rich, tmp_path):
    from tests.support import contents

    root, c = rich
    os.truncate(_blob(root, "models--org--moving", c["d2"], "weights.bin"), 10)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "quarantine").write_text("a file where the folder should be")
    before = contents(root)
    result = run_cli(
        "verify", "--cache-dir", root, "--state", str(tmp_path / "s.db"), "--repair", "--yes", "--log", str(logs / "audit.log")
    )
    assert result.exit_code == 9, result.output
    assert "nothing repaired" in result.stderr
    after = contents(root)
    after.pop(".locks/hfcache-prune.lock", None)
    assert after == before


def test_ollama_blobs_are_checked_by_their_sha256_names_and_repair_removes_every_tag_naming_a_bad_one(tmp_path):
    from tests.ollama_trees import blob_path, digests, model

    root = str(tmp_path / "ollama")
    shared = b"W" * 5000
    a = model(root, "llama3", "8b", weights=shared)
    b = model(root, "llama3", "latest", weights=shared)
    c = model(root, "phi3", "latest", weights=b"P" * 3000)
    state = str(tmp_path / "s.db")
    code, doc = _verify(root, state=state)
    assert code == 0 and {f["algorithm"] for f in _files(doc).values()} == {"sha256"}
    weights = blob_path(root, digests(a)[0][0])  # the weights both tags name
    with open(weights, "r+b") as f:
        f.write(b"X")
    code, doc = _verify(root, state=state)
    assert code == 8
    assert {(k[0], k[1]) for k, f in _files(doc).items() if f["status"] == "corrupt"} == {("llama3", "8b"), ("llama3", "latest")}
    done = run_cli("verify", "--cache-dir", root, "--state", state, "--repair", "--yes", "--log", str(tmp_path / "log" / "a.log"))
    assert done.exit_code == 0, done.output
    assert not os.path.exists(a) and not os.path.exists(b) and not os.path.exists(weights) and os.path.exists(c)
    assert _verify(root, state=state)[0] == 0


def test_a_corrupted_shared_store_payload_is_found_through_every_repo_linking_to_it(tmp_path):
    """huggingface_hub's own publish_blob_to_shared_store: the repo blobs become links to one payload."""
    from tests.support import get, payload, publish

    root = str(tmp_path / "hub")
    same = payload(5000, 8)
    with FakeHub() as hub:
        pointers = []
        for repo_id in ("org/a", "org/b"):
            hub.push(repo_id, {"model.safetensors": same})
            pointers.append(get(hub, root, repo_id, "model.safetensors"))
    for pointer in pointers:
        publish(root, pointer, "a1" * 32, len(same))
    state = str(tmp_path / "s.db")
    code, doc = _verify(root, state=state)
    assert code == 0 and doc["files_hashed"] == 1  # one payload, read once for both repos
    payload_file = os.path.realpath(pointers[0])
    assert "models--" not in payload_file and payload_file == os.path.realpath(pointers[1])  # in the shared store
    with open(payload_file, "r+b") as f:
        f.write(b"!")
    code, doc = _verify(root, state=state)
    assert code == 8
    assert {(f["id"], f["status"]) for f in _files(doc).values()} == {("org/a", "corrupt"), ("org/b", "corrupt")}


def test_a_repeat_run_marks_rows_seen_at_most_once_a_day(rich, tmp_path):
    root, _ = rich
    state = str(tmp_path / "s.db")
    inventory = hfcache.scan([root])
    verify(inventory, kinds=KINDS, state=State(state), clock=lambda: 1_000_000.0)
    seen = lambda: {r[0] for r in sqlite3.connect(state).execute("SELECT seen_at FROM digests")}  # noqa: E731
    assert seen() == {1_000_000.0}
    verify(inventory, kinds=KINDS, state=State(state), clock=lambda: 1_000_000.0 + 3600)
    assert seen() == {1_000_000.0}  # an hour later: nothing written back
    verify(inventory, kinds=KINDS, state=State(state), clock=lambda: 1_000_000.0 + 2 * 86400)
    assert seen() == {1_000_000.0 + 2 * 86400}


def test_nothing_cached_is_said_and_is_no_error(isolated_home, tmp_path):
    result = run_cli("verify", "--state", str(tmp_path / "s.db"))
    assert result.exit_code == 0 and "No model caches found" in result.stderr, result.output
