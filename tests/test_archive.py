"""Archiving cold models and bringing them back (issue 21): ``prune --archive-to DEST``, ``archive ls``, ``restore``.

Caches built by the real huggingface_hub client (and torch's own download function); after
archive then restore, ``hf_hub_download(..., local_files_only=True)`` must return the same
bytes, and ``scan_cache_dir`` must see a clean cache.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from huggingface_hub import hf_hub_download

from hfcache.archive.restore import restore_manifest
from hfcache.archive.store import Archive
from tests.fakehub import FakeHub
from tests.support import age_everything, assert_same_as_hub, build_rich_cache, cli, contents, payload, run_cli


@pytest.fixture
def rich(tmp_path):
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        commits = build_rich_cache(hub, root)
    return root, commits


def loads_offline(root: str, repo_id: str, filename: str, revision: str, **kw) -> bytes:
    path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=root, local_files_only=True, **kw)
    with open(path, "rb") as f:
        return f.read()


def test_archive_then_restore_gives_the_library_the_same_files_offline(rich, tmp_path):
    root, c = rich
    before = contents(root)
    dest = str(tmp_path / "archive")
    age_everything(root, 90)
    code, plan = cli("prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", dest, "--yes", "--json")
    assert code == 0, plan
    gone = [u for u in plan["delete"] if u["what"] == "revision"]
    assert gone and all(u["status"] == "deleted" for u in gone)
    assert all(any("archive: copied to" in r for r in u["reasons"]) for u in gone)
    code, left = cli("scan", "--cache-dir", root, "--revisions", "--json")
    assert sum(len(i["revisions"]) for i in left["caches"][0]["items"]) == 0  # every revision left the cache
    code, listing = cli("archive", "ls", dest, "--json")
    assert code == 0
    archived = {(u["id"], u["revision"]) for u in listing["units"]}
    assert archived == {(u["id"], u["revision"]) for u in gone}
    # Each blob once, by content: objects are fewer than the files of all the units.
    objects = [f for _, _, fs in os.walk(os.path.join(dest, "objects")) for f in fs]
    files = {f["sha256"] for u in listing["units"] for f in u["files"]}
    assert len(objects) == len(files)

    code, out = cli("restore", dest, *sorted({f"{i}@{r}" for i, r in archived}), "--cache-dir", root, "--json")
    assert code == 0, out
    assert all(u["status"] == "restored" for u in out["units"])
    assert_same_as_hub(root)  # scan_cache_dir: clean, and every figure as ours
    after = contents(root)
    for path, data in before.items():
        if "/blobs/" in path or "/snapshots/" in path:
            assert after.get(path) == data, path
    # The library loads every restored revision offline, by tag, branch, PR ref and commit.
    assert loads_offline(root, "org/model", "model.safetensors", "v1.0") == payload(3000, 1)
    assert loads_offline(root, "org/model", "config.json", "v1.1") == b'{"v": 2}'
    assert loads_offline(root, "org/model", "model.safetensors", "main") == payload(4000, 3)
    assert loads_offline(root, "org/model", "config.json", "refs/pr/1") == b'{"pr": 1}'
    assert loads_offline(root, "org/moving", "weights.bin", c["d1"]) == payload(1500, 4)
    assert loads_offline(root, "org/pinned", "w.bin", c["pinned"]) == payload(1200, 6)
    assert loads_offline(root, "org/data", "data/train.csv", "main", repo_type="dataset") == b"a,b\n1,2\n"


def test_a_kill_or_a_failure_while_archiving_never_loses_a_unit(rich, tmp_path, monkeypatch):
    """The archive breaks part-way (a full disk, a network error): the units not archived stay, whole."""
    root, _ = rich
    dest = str(tmp_path / "archive")
    age_everything(root, 90)
    calls: dict[str, object] = {"n": 0, "bad": None}
    real = Archive.put_manifest

    def flaky(self, manifest):
        # The second unit's manifest finds the disk full, and again when that unit is tried on its own
        # (a unit that found the destination full is tried once more alone: archive_plan).
        calls["n"] += 1
        if calls["n"] == 2:
            calls["bad"] = manifest["revision"]
        if manifest["revision"] == calls["bad"]:
            raise OSError(28, "No space left on device")
        return real(self, manifest)

    monkeypatch.setattr(Archive, "put_manifest", flaky)
    code, plan = cli("prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", dest, "--yes", "--json")
    assert code in (0, 1), plan
    kept = [u for u in plan["keep"] if any("archive:" in r for r in u["reasons"])]
    deleted = [u for u in plan["delete"] if u.get("status") == "deleted"]
    assert len(kept) == 1 and deleted
    assert os.path.isdir(kept[0]["path"])  # whole in the cache
    listing = json.loads(run_cli("archive", "ls", dest, "--json").stdout)
    assert {u["revision"] for u in listing["units"]} == {u["revision"] for u in deleted}


def test_a_manifest_that_would_write_outside_the_root_is_refused(tmp_path):
    archive = Archive(str(tmp_path / "a"))
    archive.ensure()
    root = str(tmp_path / "root")
    for evil in (
        {"files": [{"place": "../escape", "sha256": "0" * 64, "size": 1}]},
        {"files": [{"place": "/etc/passwd", "sha256": "0" * 64, "size": 1}]},
        {"links": [{"place": "models--a--b/snapshots/c/f", "target": "../../../../etc/passwd"}]},
        {"texts": [{"place": "x/../../y", "text": "z"}]},
    ):
        result = restore_manifest(archive, {"kind": "huggingface", "id": "a/b", "revision": "c", **evil}, root)
        assert result.error and "refused" in result.error
    assert not os.path.exists(tmp_path / "escape") and not os.path.exists(root + "/x")


def test_restore_never_writes_through_a_symlinked_folder(rich, tmp_path):
    root, _ = rich
    dest = str(tmp_path / "archive")
    age_everything(root, 90)
    code, plan = cli("prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", dest, "--yes", "--json")
    assert code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    repo = os.path.join(root, "models--org--model")
    if os.path.exists(repo):
        import shutil

        shutil.rmtree(repo)
    os.symlink(elsewhere, repo)  # planted where the restore will write
    code, out = cli("restore", dest, "org/model", "--cache-dir", root, "--json")
    assert code == 1
    assert os.listdir(elsewhere) == []


@pytest.mark.integration
def test_an_s3_archive_with_the_real_client_round_trips(rich, s3, tmp_path):
    root, c = rich
    before = contents(root)
    age_everything(root, 90)
    code, plan = cli("prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", s3, "--yes", "--json")
    assert code == 0, plan
    gone = [u for u in plan["delete"] if u["what"] == "revision"]
    assert gone and all(u["status"] == "deleted" for u in gone)
    code, listing = cli("archive", "ls", s3, "--json")
    assert code == 0 and {u["revision"] for u in listing["units"]} == {u["revision"] for u in gone}
    code, out = cli("restore", s3, "org/model", "org/moving@" + c["d1"], "--cache-dir", root, "--json")
    assert code == 0, out
    assert all(u["status"] == "restored" for u in out["units"])
    assert loads_offline(root, "org/model", "model.safetensors", "v1.0") == payload(3000, 1)
    assert loads_offline(root, "org/moving", "weights.bin", c["d1"]) == payload(1500, 4)
    for path, data in contents(root).items():
        if "/blobs/" in path:
            assert before.get(path) == data, path  # every restored blob byte-identical


KILLABLE = """
import os, sys, time
delay = float(sys.argv[1])
def slow(f):
    def slowed(*args, **kwargs):
        time.sleep(delay)
        return f(*args, **kwargs)
    return slowed
# Every step of an archive's writes (a temporary file made durable, moved into place) and of a deletion, slowed.
os.replace, os.fsync, os.unlink, os.rmdir, os.rename = (slow(f) for f in (os.replace, os.fsync, os.unlink, os.rmdir, os.rename))
sys.argv = ["hfcache", *sys.argv[2:]]
from hfcache.cli import main
main()
"""


def _archived_whole(dest: str, item_id: str, commit: str) -> bool:
    """A manifest for the revision, and every object it names there with the right bytes."""
    import hashlib

    archive = Archive(dest)
    folder = os.path.dirname(archive.manifest_path("huggingface", item_id, commit, "x"))
    if not os.path.isdir(folder) or not os.listdir(folder):
        return False
    (name,) = os.listdir(folder)  # one machine, one content: one manifest
    manifest = json.load(open(os.path.join(folder, name)))
    for f in manifest["files"]:
        with open(archive.object_path(f["sha256"]), "rb") as obj:
            if hashlib.sha256(obj.read()).hexdigest() != f["sha256"]:
                return False
    return True


def _whole_in_cache(root: str, template: dict[str, bytes], repo: str, commit: str) -> bool:
    prefix = f"{repo}/snapshots/{commit}/"
    for path, data in template.items():
        if path.startswith(prefix):
            try:  # through the snapshot's link, as the library reads it; without moving its access time
                fd = os.open(os.path.join(root, path), os.O_RDONLY | getattr(os, "O_NOATIME", 0))
                with os.fdopen(fd, "rb") as f:
                    if f.read() != data:
                        return False
            except OSError:
                return False
    return True


def test_kill_9_at_any_moment_of_an_archiving_prune_never_loses_a_revision(rich, tmp_path):
    """Never neither: after each kill every revision is whole in the cache or archived whole; a re-run finishes."""
    import random
    import shutil
    import signal
    import subprocess
    import sys
    import time

    template_root, _ = rich
    template = contents(template_root)
    revisions = [
        (e.name, s.name)
        for e in os.scandir(template_root)
        if e.name.startswith(("models--", "datasets--", "spaces--"))
        for s in os.scandir(os.path.join(e.path, "snapshots"))
    ]
    ids = {repo: repo.split("--", 1)[1].replace("--", "/") for repo, _ in revisions}
    rng = random.Random(21)
    for round_ in range(6):
        root, dest = str(tmp_path / f"hub{round_}"), str(tmp_path / f"archive{round_}")
        shutil.copytree(template_root, root, symlinks=True)
        age_everything(root, 90)
        args = ["prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", dest, "--yes", "--log", str(tmp_path / "a.log")]
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLABLE, "0.01", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.3, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for repo, commit in revisions:
            assert _whole_in_cache(root, template, repo, commit) or _archived_whole(dest, ids[repo], commit), (
                round_,
                repo,
                commit,
            )
        # A second run finishes the job: everything archived, nothing left in the cache's snapshots.
        code, plan = cli(*args, "--json")
        assert code == 0, plan
        for repo, commit in revisions:
            assert _archived_whole(dest, ids[repo], commit), (round_, repo, commit)
            assert not os.path.exists(os.path.join(root, repo, "snapshots", commit)), (round_, repo, commit)


def test_scan_shows_archived_revisions_beside_the_cached_ones(rich, tmp_path):
    root, c = rich
    dest = str(tmp_path / "archive")
    age_everything(root, 90, but=("models--org--model",))
    code, plan = cli("prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", dest, "--yes", "--json")
    assert code == 0, plan
    gone = {(u["id"], u["revision"]) for u in plan["delete"] if u["what"] == "revision"}
    code, doc = cli("scan", "--cache-dir", root, "--archive", dest, "--json")
    assert code == 0, doc
    assert {(m["id"], m["revision"]) for m in doc["archived"]} == gone
    assert all(i["id"] != "org/moving" for i in doc["caches"][0]["items"])  # (gone from the cache, listed as archived)
    code, doc = cli("scan", "--cache-dir", root, "--archive", dest, "--name", "org/moving", "--json")
    assert {m["id"] for m in doc["archived"]} == {"org/moving"}
    out = run_cli("scan", "--cache-dir", root, "--archive", dest).stdout
    assert "Archived in" in out and "org/pinned" in out
    assert run_cli("scan", "--cache-dir", root, "--archive", str(tmp_path)).exit_code == 2  # not an archive


def test_archive_to_per_model_in_the_policy_file(rich, tmp_path):
    """archive_to in a model rule: those models leave by the archive, the others are deleted as usual."""
    root, _ = rich
    dest = str(tmp_path / "archive")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'version: 1\nmax_age: 30d\nmodels:\n  "org/moving": {{archive_to: "{dest}"}}\n')
    age_everything(root, 90)
    code, plan = cli("prune", "--cache-dir", root, "--config", str(policy), "--yes", "--json")
    assert code == 0, plan
    archived = {u["id"] for u in plan["delete"] if any("archive: copied" in r for r in u["reasons"])}
    deleted = {u["id"] for u in plan["delete"] if u["status"] == "deleted"}
    assert archived == {"org/moving"} and {"org/model", "org/pinned"} <= deleted
    code, listing = cli("archive", "ls", dest, "--json")
    assert {u["id"] for u in listing["units"]} == {"org/moving"}


RESUMABLE = """
import sys, time
import hfcache.archive.store as store
real = store._LocalWriter.write
def slow(self, data):
    real(self, data)
    time.sleep(0.05)
store._LocalWriter.write = slow
store.CHUNK = 256 * 1024
archive = store.Archive(sys.argv[2])
archive.ensure()
archive.put_file(sys.argv[1], check=("sha256", sys.argv[3]))
"""


def test_a_killed_copy_of_a_big_file_goes_on_where_it_stopped(tmp_path):
    """Uploads are resumable: kill -9 part-way through a file, and the next run copies only the rest of it."""
    import hashlib
    import signal
    import subprocess
    import sys
    import time

    data = payload(8 * 1024 * 1024, 7)
    sha = hashlib.sha256(data).hexdigest()
    source = tmp_path / "blob"
    source.write_bytes(data)
    dest = str(tmp_path / "archive")
    child = subprocess.Popen([sys.executable, "-c", RESUMABLE, str(source), dest, sha])
    part = os.path.join(dest, "tmp", f"{sha}.part")
    deadline = time.monotonic() + 30
    while not (os.path.exists(part) and os.path.getsize(part) >= 2 * 1024 * 1024):
        assert time.monotonic() < deadline and child.poll() is None, "the copy never got going"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    had = os.path.getsize(part)
    assert 0 < had < len(data)
    archive = Archive(dest)
    archive.ensure()
    got, size, sent = archive.put_file(str(source), check=("sha256", sha))
    assert (got, size) == (sha, len(data)) and sent == len(data) - had  # only the rest was copied
    assert open(archive.object_path(sha), "rb").read() == data and not os.path.exists(part)


def test_modelscope_revisions_old_and_new_layouts_round_trip(tmp_path, monkeypatch):
    """Kinds with folder units (ModelScope's snapshots and its old layout's folders with .mdl, .msc, .mv) leave by
    the archive and come back byte for byte, as its clients laid them out (tests/test_modelscope.py reads those)."""
    import time

    from tests.trees import write

    root = str(tmp_path / "ms")
    monkeypatch.setenv("MODELSCOPE_CACHE", root)
    snap = os.path.join(root, "models", "Qwen--Qwen3-0.6B", "snapshots", "v1.0.0")
    write(os.path.join(snap, "model.safetensors"), 3000)
    write(os.path.join(snap, "tokenizer", "vocab.json"), 200)
    os.makedirs(os.path.join(root, "models", "Qwen--Qwen3-0.6B", "snapshots", "master"))
    write(os.path.join(root, "models", "Qwen--Qwen3-0.6B", "snapshots", "master", "model.safetensors"), 3100)
    old = os.path.join(root, "models", "damo", "legacy___v2")
    write(os.path.join(old, ".mdl"), b"\x80\x04\x95pickled")
    write(os.path.join(old, ".msc"), b"\x80\x04\x95pickled list")
    write(os.path.join(old, ".mv"), b"Revision:v1.0.0,CreatedAt:1700000000")
    write(os.path.join(old, "w.bin"), 300)
    when = time.time() - 60 * 86400
    for top in (snap, old):
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                os.utime(os.path.join(folder, name), (when, when))
        os.utime(top, (when, when))
    before = contents(root)
    dest = str(tmp_path / "archive")
    code, plan = cli("prune", "--kind", "modelscope", "--max-age", "30d", "--archive-to", dest, "--yes", "--json")
    assert code == 0, plan
    assert sorted(u["path"] for u in plan["delete"]) == sorted([snap, old])
    assert all(u["status"] == "deleted" for u in plan["delete"]) and not os.path.exists(snap) and not os.path.exists(old)
    code, out = cli("restore", dest, "Qwen/Qwen3-0.6B", "damo/legacy.v2", "--cache-dir", root, "--json")
    assert code == 0 and [u["status"] for u in out["units"]] == ["restored", "restored"], out
    after = contents(root)
    assert {p: d for p, d in after.items() if not p.startswith(".")} == {p: d for p, d in before.items() if not p.startswith(".")}


def _round_trip(kind: str, root: str, dest: str, planned: list[str]) -> None:
    """Archive the old units of ``kind`` by age, then restore every archived unit: the cache's files as they were."""
    before = contents(root)
    code, plan = cli("prune", "--kind", kind, "--max-age", "30d", "--archive-to", dest, "--yes", "--json")
    assert code == 0, plan
    assert sorted((u["path"], u["status"]) for u in plan["delete"]) == sorted((p, "deleted") for p in planned)
    assert not any(os.path.lexists(p) for p in planned)
    code, listing = cli("archive", "ls", dest, "--json")
    assert code == 0 and len(listing["units"]) == len(planned), listing
    wanted = [f"{u['id']}@{u['revision']}" for u in listing["units"]]
    code, out = cli("restore", dest, *wanted, "--json")
    assert code == 0 and [u["status"] for u in out["units"]] == ["restored"] * len(planned), out
    after = contents(root)
    ours = (".hfcache", ".locks")  # hfcache's own lock and trash, made by the prune
    assert {p: d for p, d in after.items() if not p.startswith(ours)} == {
        p: d for p, d in before.items() if not p.startswith(ours)
    }
    code, scan = cli("scan", "--kind", kind, "--revisions", "--json")
    found = {r["path"] for c in scan["caches"] for i in c["items"] for r in i["revisions"]}
    assert set(planned) <= found  # the kind's own scan sees each restored unit again


def test_tfhub_modules_round_trip(isolated_home, tmp_path):
    """A TF Hub module (its SavedModel folder and its descriptor) leaves by the archive and comes back as TF Hub wrote it."""
    from tests.test_tfhub import HANDLE_V4, HANDLE_V5, module

    root = os.environ["TFHUB_CACHE_DIR"]
    old = module(root, HANDLE_V4, days_old=60)
    module(root, HANDLE_V5)
    _round_trip("tfhub", root, str(tmp_path / "archive"), [old])
    assert os.path.isfile(old + ".descriptor.txt") and os.path.isfile(os.path.join(old, "variables", "variables.index"))


def test_vllm_compile_artefacts_round_trip(isolated_home, tmp_path, monkeypatch):
    """vLLM's compiled artefacts (a JIT one with its ranks' Inductor and Triton caches, an AOT one) come back whole."""
    from tests.test_vllm import age, aot_artefact, jit_artefact

    root = os.path.join(isolated_home, "vllm-cache")
    monkeypatch.setenv("VLLM_CACHE_ROOT", root)
    old = jit_artefact(root, "old", ranks=2)
    old_aot = aot_artefact(root, "old-aot")
    jit_artefact(root, "new")
    for path in (old, old_aot):
        age(path, 60)
    _round_trip("vllm", root, str(tmp_path / "archive"), [old, old_aot])


def test_restore_never_writes_a_unit_into_a_cache_of_another_kind(rich, tmp_path):
    """A hub revision restored with --cache-dir naming a torch hub cache would be lost to both libraries: exit 2."""
    from tests.trees import write

    root, _ = rich
    dest = str(tmp_path / "archive")
    age_everything(root, 90)
    code, _ = cli("prune", "--cache-dir", root, "--max-age", "30d", "--archive-to", dest, "--yes", "--json")
    assert code == 0
    torch_root = str(tmp_path / "torch" / "hub")
    write(os.path.join(torch_root, "checkpoints", "resnet18-f37072fd.pth"), 100)
    torch_before = contents(torch_root)
    result = run_cli("restore", dest, "org/model@v1.0", "--cache-dir", torch_root)
    assert result.exit_code == 2 and "no --cache-dir is a cache of kind huggingface" in result.output, result.output
    result = run_cli("restore", dest, "org/model@v1.0", "--cache-dir", torch_root, "--kind", "huggingface")
    assert result.exit_code == 2, result.output  # --kind does not make a torch cache a hub one
    assert contents(torch_root) == torch_before
    # Among several --cache-dir, the one of its kind; an empty new folder only when --kind says so.
    fresh = str(tmp_path / "fresh")
    os.makedirs(fresh)
    code, out = cli("restore", dest, "org/model@v1.0", "--cache-dir", torch_root, "--cache-dir", root, "--json")
    assert code == 0 and out["units"][0]["status"] == "restored", out
    assert loads_offline(root, "org/model", "model.safetensors", "v1.0") == payload(3000, 1)
    assert run_cli("restore", dest, "org/pinned", "--cache-dir", torch_root, "--cache-dir", fresh).exit_code == 2
    two = ("--cache-dir", torch_root, "--cache-dir", fresh)
    code, out = cli("restore", dest, "org/pinned", *two, "--kind", "huggingface", "--json")
    assert code == 0 and out["units"][0]["root"] == fresh, out
    assert contents(torch_root) == torch_before
    assert run_cli("restore", dest, "org/model", "--kind", "torch").exit_code == 2  # no torch unit by that id
    assert run_cli("restore", dest, "org/model", "--kind", "nope").exit_code == 2


def _datasets_tree(root: str) -> None:
    from tests.trees import sha256, write

    squad = f"{root}/rajpurkar___squad/plain_text/0.0.0"
    write(f"{squad}/{'1' * 16}/dataset_info.json", 100)
    write(f"{squad}/{'1' * 16}/squad-train.arrow", 4000)
    write(f"{squad}/{'2' * 16}/squad-train.arrow", 4100)
    name = f"{sha256('url')}.{sha256('etag')}"
    write(f"{root}/downloads/{name}", 3000)
    write(f"{root}/downloads/{name}.json", json.dumps({"url": "https://example.com/data.zip", "etag": "e"}).encode())


def _kagglehub_tree(root: str) -> None:
    from tests.trees import write

    var = f"{root}/models/keras/gemma/keras/gemma_2b_en"
    write(f"{var}/1/model.weights.h5", 1000)
    write(f"{var}/1.complete")
    write(f"{var}/2/model.weights.h5", 1200)
    write(f"{var}/.complete/2/model.weights.h5.complete")
    write(f"{root}/datasets/owner/titanic/versions/5/train.csv", 600)
    write(f"{root}/datasets/owner/titanic/5.complete")


def _legacy_tree(root: str) -> None:
    import hashlib

    from tests.trees import sha256, write

    url = "https://huggingface.co/bert-base-uncased/resolve/main/pytorch_model.bin"
    for etag, size in (("e1", 400), ("e2", 500)):
        name = f"{hashlib.sha256(url.encode()).hexdigest()}.{sha256(etag)}"
        write(f"{root}/{name}", size)
        write(f"{root}/{name}.json", json.dumps({"url": url, "etag": etag}).encode())
    write(f"{root}/version.txt", b"1")


def _llama_tree(root: str) -> None:
    from tests.test_llamacpp_flat import flat_cache

    flat_cache(root)


@pytest.mark.parametrize(
    ("kind", "build"),
    [
        ("datasets", _datasets_tree),
        ("kagglehub", _kagglehub_tree),
        ("transformers-legacy", _legacy_tree),
        ("llama-cpp-flat", _llama_tree),
    ],
)
def test_every_other_kind_with_deletion_shapes_round_trips(tmp_path, kind, build):
    """Each unit a prune of these kinds removes goes to the archive first, and comes back byte for byte."""
    root = str(tmp_path / "cache")
    build(root)
    age_everything(root, 90)
    before = contents(root)
    dest = str(tmp_path / "archive")
    args = ("--cache-dir", root, "--kind", kind)
    code, plan = cli("prune", *args, "--max-age", "30d", "--allow-remove-all", "--archive-to", dest, "--yes", "--json")
    assert code == 0, plan
    gone = [u for u in plan["delete"] if u["what"] == "revision"]
    assert gone and all(u["status"] == "deleted" for u in gone), plan
    code, listing = cli("archive", "ls", dest, "--json")
    assert code == 0 and len(listing["units"]) == len(gone), listing
    code, out = cli("restore", dest, *[f"{u['id']}@{u['revision']}" for u in listing["units"]], *args, "--json")
    assert code == 0 and {u["status"] for u in out["units"]} == {"restored"}, out
    ours = (".hfcache",)
    assert {p: d for p, d in contents(root).items() if not p.startswith(ours)} == {
        p: d for p, d in before.items() if not p.startswith(ours)
    }


def test_an_interrupt_while_archiving_stops_it_and_no_unfinished_unit_gets_a_manifest(rich, tmp_path, monkeypatch):
    """Ctrl-C (or a bug) in the middle of a prune's archiving propagates (the prune then deletes nothing), and no
    unit whose copies did not all finish gets a manifest."""
    import hfcache
    import hfcache.archive.run as run_mod
    from hfcache.caches.registry import registry
    from hfcache.plan.build import make_plan
    from hfcache.plan.settings import Policy, Settings

    root, _ = rich
    age_everything(root, 90)
    inventory = hfcache.scan([root])
    plan = make_plan(inventory, Policy(overrides=Settings(max_age=86400.0, allow_remove_all=True)), now=time.time())
    assert len([u for u in plan.delete if u.what == "revision"]) > 3
    real = run_mod._put
    copied = []
    monkeypatch.setattr(run_mod, "LOCAL_COPIES", 1)

    def put(archive, stored):
        if len(copied) == 2:
            raise KeyboardInterrupt
        copied.append(stored.place)
        return real(archive, stored)

    monkeypatch.setattr(run_mod, "_put", put)
    dest = str(tmp_path / "archive")
    with pytest.raises(KeyboardInterrupt):
        run_mod.archive_plan(plan, inventory, Archive(dest), registry().kinds)
    assert len(copied) == 2
    for m in Archive(dest).manifests():  # a manifest only for a unit all of whose files were copied
        assert {f["place"] for f in m["files"]} <= set(copied)
