"""The ModelScope cache (``modelscope``), both layouts, on trees laid out exactly as its clients write them.

Sources read: modelscope 1.40.2 (a shim over modelscope-hub 0.5.1) and modelscope 1.37.0, the
last release that wrote the old layout, from their PyPI wheels:

* new layout, ``modelscope_hub/_download.py`` ``DownloadManager``: ``_repo_cache_dir_path``
  (``<cache>/<type>s/<owner>--<name>``), ``_download_file`` / ``download_repo``
  (``.../snapshots/<revision or "master">/<file path>``), ``_incomplete_path``
  (``<file>.incomplete``, renamed into place), ``_parallel_download`` (parts
  ``<file>_<start>_<end>``, merged into ``<file>.parallel_tmp``), ``_lock_path``
  (``<cache>/.lock/file_<sha256 of "modelscope-hub-download-lock-v2\\0file\\0<type>\\0<repo id>\\0<file
  path>">.lock``, a ``filelock.FileLock``); ``config.py`` ``HubConfig.cache_dir``:
  ``$MODELSCOPE_CACHE``, else ``~/.cache/modelscope``; ``modelscope/hub/__init__.py``
  ``_sync_config``: ``$MS_CACHE_HOME`` when ``MODELSCOPE_CACHE`` is unset;
* old layout, modelscope 1.37.0 ``hub/file_download.py`` ``create_temporary_directory_and_cache``
  (``<cache>/models/._____temp/<owner>/<name>/`` for downloads in progress, resumed with
  ``Range`` by ``http_get_model_file``; ``ModelFileSystemCache(<cache>/models, owner,
  name.replace(".", "___"))``), ``hub/utils/caching.py`` (``.mdl`` written when the folder is
  first used, ``.msc`` on every file put, ``.mv`` = ``"Revision:%s,CreatedAt:%s"`` after a
  snapshot), ``hub/snapshot_download.py`` (the lock ``<cache>/.lock/<repo id with / -> ___>``),
  ``utils/file_utils.py`` (``<cache>`` = ``$MODELSCOPE_CACHE``, else
  ``~/.cache/modelscope/hub``), ``move_legacy_cache_to_standard_dir`` (older still:
  ``<hub>/<owner>/<name>/`` without ``models/``); modelscope-hub's ``_find_legacy_repo_dir``
  still writes into such a folder when it is not empty.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time

import pytest

from hfcache.caches import modelscope
from hfcache.errors import NotACache
from tests.support import DAY, assert_deletable_paths_fit_their_shapes, run_cli
from tests.trees import write

MIB = 1024 * 1024


def file_lock(root: str, repo_type: str, repo_id: str, file_path: str) -> str:
    """``DownloadManager._lock_path`` (modelscope-hub 0.5.1), by hand."""
    key = "\0".join(("modelscope-hub-download-lock-v2", "file", repo_type, repo_id, file_path))
    return os.path.join(root, ".lock", f"file_{hashlib.sha256(key.encode('utf-8')).hexdigest()}.lock")


def snapshot(root: str, repo_id: str, revision: str, files: dict[str, int], section: str = "models") -> str:
    """``download_repo`` into ``<root>/<section>/<owner>--<name>/snapshots/<revision>/``."""
    folder = os.path.join(root, section, repo_id.replace("/", "--"), "snapshots", revision)
    for name, size in files.items():
        write(os.path.join(folder, name), size)
    os.makedirs(folder, exist_ok=True)
    return folder


def old_folder(cache: str, repo_id: str, files: dict[str, int], *, revision: str | None = "v1.0.0", section: str = "models"):
    """modelscope <= 1.37: ``<cache>/<section>/<owner>/<name with . -> ___>/`` with ``.mdl``, ``.msc``, ``.mv``."""
    owner, name = repo_id.split("/", 1)
    folder = os.path.join(cache, section, owner, name.replace(".", "___")) if section else os.path.join(cache, owner, name)
    write(os.path.join(folder, ".mdl"), b"\x80\x04\x95pickled {'id': ...}")  # (a pickle: never read by hfcache)
    write(os.path.join(folder, ".msc"), b"\x80\x04\x95pickled [{'Path': ..., 'Revision': ...}]")
    if revision is not None:
        write(os.path.join(folder, ".mv"), f"Revision:{revision},CreatedAt:1700000000".encode())
    for path, size in files.items():
        write(os.path.join(folder, path), size)
    return folder


def age(path: str, days: float) -> None:
    when = time.time() - days * DAY
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when))


def apparent(*paths: str) -> int:
    total = 0
    for path in paths:
        if not os.path.isdir(path):
            total += os.lstat(path).st_size
            continue
        for folder, _, files in os.walk(path):
            total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    return total


# ---------------------------------------------------------------------------------------------
# Where the cache is


def test_default_roots_follow_the_clients(tmp_path):
    home = {"HOME": "/home/me", "XDG_CACHE_HOME": "/xdg"}  # (neither client reads XDG_CACHE_HOME)
    assert modelscope.default_roots(home) == ["/home/me/.cache/modelscope"]
    assert modelscope.default_roots({**home, "MODELSCOPE_CACHE": "~/ms"}) == ["/home/me/ms"]
    assert modelscope.default_roots({**home, "MODELSCOPE_CACHE": "", "MS_CACHE_HOME": "/legacy"}) == ["/legacy"]
    assert modelscope.default_roots({**home, "MODELSCOPE_CACHE": "/a", "MS_CACHE_HOME": "/legacy"}) == ["/a"]
    # MS_CACHE_HOME moves only what goes through the modelscope package; modelscope-hub alone keeps the default.
    real_home = str(tmp_path)
    os.makedirs(tmp_path / ".cache" / "modelscope")
    assert modelscope.default_roots({"HOME": real_home, "MS_CACHE_HOME": "/legacy"}) == [
        "/legacy",
        f"{real_home}/.cache/modelscope",
    ]


# ---------------------------------------------------------------------------------------------
# The new layout (modelscope >= 1.38, modelscope-hub)


def test_new_layout_repos_revisions_and_partial_downloads(tmp_path):
    root = str(tmp_path / "ms")
    master = snapshot(root, "Qwen/Qwen3-0.6B", "master", {"config.json": 100, "model.safetensors": 5000, "sub/tok.json": 30})
    tagged = snapshot(root, "Qwen/Qwen3-0.6B", "v1.0.2", {"config.json": 90})
    data = snapshot(root, "owner/data", "master", {"train.csv": 700}, section="datasets")
    studio = snapshot(root, "me/demo", "master", {"app.py": 10}, section="studios")
    # A download running into master now: its partial, and its flock held (in this process).
    partial = write(os.path.join(master, "big.bin.incomplete"), 400)
    lock_path = file_lock(root, "model", "Qwen/Qwen3-0.6B", "big.bin")
    write(lock_path)
    # A parallel download killed: its parts (160 MiB parts, the last one shorter) and no target.
    part0 = write(os.path.join(master, f"w2.bin_0_{160 * MIB - 1}"), 1000)
    part1 = write(os.path.join(master, f"w2.bin_{160 * MIB}_{160 * MIB + 99}"), 100)
    merging = write(os.path.join(tagged, "w3.bin.parallel_tmp"), 50)
    write(file_lock(root, "model", "Qwen/Qwen3-0.6B", "w2.bin"))  # (a lock is tested only when its file exists)
    # Not parts: the target is there (a finished file), or the numbers are not a part's.
    write(os.path.join(master, "w4.bin"), 8)
    write(os.path.join(master, "w4.bin_0_9"), 8)
    write(os.path.join(master, "layer_3_7"), 4)
    write(os.path.join(root, ".download_state", ".ms_download_" + "a" * 64 + ".json"), 40)

    with open(lock_path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        cache = modelscope.scan(root)
    items = {(i.type, i.id): i for i in cache.items}
    assert set(items) == {("model", "Qwen/Qwen3-0.6B"), ("dataset", "owner/data"), ("studio", "me/demo")}
    qwen = items[("model", "Qwen/Qwen3-0.6B")]
    assert qwen.path == os.path.dirname(os.path.dirname(master)) and qwen.unit_paths == (qwen.path,)
    assert [(r.revision, r.version, r.default) for r in qwen.revisions] == [("v1.0.2", "1.0.2", False), ("master", None, True)]
    assert qwen.revisions[1].unit_paths == (master,) and qwen.revisions[1].size_bytes == apparent(master)
    assert items[("dataset", "owner/data")].revisions[0].unit_paths == (data,)
    assert items[("studio", "me/demo")].revisions[0].unit_paths == (studio,)
    partials = {p.path: p for p in cache.partial_files}
    assert set(partials) == {partial, part0, part1, merging}
    assert partials[partial].scheme == "resumable" and partials[partial].lock_path == lock_path
    assert partials[partial].lock_held is True and partials[partial].item_id == "Qwen/Qwen3-0.6B"
    assert partials[part0].scheme == "temporary" and partials[part0].lock_path == file_lock(
        root, "model", "Qwen/Qwen3-0.6B", "w2.bin"
    )
    assert partials[part0].lock_held is False and partials[merging].lock_path is None  # (no lock file: none to test)
    assert (
        cache.size_bytes
        == sum(i.size_bytes for i in cache.items)
        == apparent(os.path.join(root, "models"), os.path.join(root, "datasets"), os.path.join(root, "studios"))
    )
    for needed in (root, os.path.join(root, ".lock"), os.path.join(root, ".download_state"), os.path.join(root, "models")):
        assert needed in cache.protected
    assert cache.warnings == ()
    assert_deletable_paths_fit_their_shapes(cache)


# ---------------------------------------------------------------------------------------------
# The old layout (modelscope <= 1.37), where the new engine still finds it


def test_old_layouts_under_the_default_root(tmp_path):
    root = str(tmp_path / "modelscope")  # ~/.cache/modelscope: the old SDK's cache was ~/.cache/modelscope/hub
    hub = os.path.join(root, "hub")
    qwen = old_folder(hub, "Qwen/Qwen3-0.6B", {"config.json": 100, "model.safetensors": 3000})
    ds = old_folder(hub, "owner/ds.v2", {"data/train.csv": 500}, revision=None, section="datasets")
    oldest = old_folder(hub, "damo/bert-base", {"pytorch_model.bin": 900}, revision="master", section="")
    # A download the old SDK left half-way (resumed by Range next time), and its repo lock.
    temp = write(os.path.join(hub, "models", "._____temp", "Qwen", "Qwen2.5-7B", "model-00001.safetensors"), 777)
    os.makedirs(os.path.join(hub, "models", "._____temp", "Qwen", "Qwen3-0.6B"))  # emptied by a finished download
    write(os.path.join(hub, ".lock", "Qwen___Qwen2.5-7B"))
    # modelscope-hub reusing the old folder (_find_legacy_repo_dir): its partial there, its lock in <root>/.lock.
    reused = write(os.path.join(qwen, "extra.bin.incomplete"), 60)
    write(file_lock(root, "model", "Qwen/Qwen3-0.6B", "extra.bin"))
    # What else the modelscope package keeps in its cache: never an item, never deleted.
    write(os.path.join(hub, "ast_indexer"), 2000)
    write(os.path.join(hub, ".modelscope_plugins"), 10)
    write(os.path.join(hub, "modelscope_modules", "m", "__init__.py"), 10)
    odd = write(os.path.join(hub, "datasets", "downloads", "abc123"), 77)  # MsDataset's, not a hub download
    noise = write(os.path.join(hub, "models", "Qwen", "copied-by-hand", "w.bin"), 5)  # no .mdl: not ModelScope's

    cache = modelscope.scan(root)
    items = {(i.type, i.id): i for i in cache.items if i.type != "unknown"}
    assert set(items) == {("model", "Qwen/Qwen3-0.6B"), ("dataset", "owner/ds.v2"), ("model", "damo/bert-base")}
    q = items[("model", "Qwen/Qwen3-0.6B")]
    assert q.path == qwen and q.unit_paths == (qwen,) and len(q.revisions) == 1
    assert (q.revisions[0].revision, q.revisions[0].version) == ("v1.0.0", "1.0.0")  # from .mv, read without moving atime
    assert q.size_bytes == apparent(qwen)  # the files, .mdl, .msc, .mv and the partial inside it
    assert items[("dataset", "owner/ds.v2")].revisions[0].revision == "master"  # no .mv: modelscope's own default
    assert items[("dataset", "owner/ds.v2")].path == ds
    assert items[("model", "damo/bert-base")].path == oldest
    partials = {p.path: p for p in cache.partial_files}
    assert set(partials) == {os.path.dirname(temp), reused}
    assert partials[os.path.dirname(temp)].item_id == "Qwen/Qwen2.5-7B"
    assert partials[os.path.dirname(temp)].lock_path == os.path.join(hub, ".lock", "Qwen___Qwen2.5-7B")
    assert partials[os.path.dirname(temp)].lock_held is False
    assert partials[reused].lock_path == file_lock(root, "model", "Qwen/Qwen3-0.6B", "extra.bin")
    unknown = {i.path for i in cache.items if i.type == "unknown"}
    assert unknown == {os.path.dirname(odd), os.path.dirname(noise)}
    for needed in ("hub", "hub/.lock", "hub/ast_indexer", "hub/modelscope_modules", "hub/models/._____temp"):
        assert os.path.join(root, needed) in cache.protected
    assert_deletable_paths_fit_their_shapes(cache)


def test_old_layout_at_a_modelscope_cache_root(tmp_path):
    """With MODELSCOPE_CACHE set, both layouts share <root>/models/: <owner>--<name>/ is new, <owner>/<name>/ old."""
    root = str(tmp_path / "ms")
    new = snapshot(root, "Qwen/Qwen3-0.6B", "master", {"config.json": 10})
    old = old_folder(root, "Qwen/Qwen2.5-7B", {"config.json": 20})
    flat = old_folder(root, "damo/nlp", {"w.bin": 30}, section="")  # {cache}/{owner}/{name}/ (find_reusable_legacy_repo_dir)
    cache = modelscope.scan(root)
    found = {i.id: i for i in cache.items}
    assert set(found) == {"Qwen/Qwen3-0.6B", "Qwen/Qwen2.5-7B", "damo/nlp"}
    assert found["Qwen/Qwen3-0.6B"].revisions[0].unit_paths == (new,)
    assert found["Qwen/Qwen2.5-7B"].unit_paths == (old,) and found["damo/nlp"].unit_paths == (flat,)
    assert_deletable_paths_fit_their_shapes(cache)


def test_what_is_and_is_not_a_modelscope_cache(tmp_path):
    write(str(tmp_path / "home" / "cv.pdf"), 10)
    with pytest.raises(NotACache):
        modelscope.scan(str(tmp_path / "home"))
    assert modelscope.scan(str(tmp_path / "nowhere"), explicit=False).exists is False
    keras = str(tmp_path / "keras")
    write(os.path.join(keras, "models", "resnet50.h5"), 5)
    write(os.path.join(keras, "datasets", "foo_extracted", "foo", "a.txt"), 5)
    kaggle = str(tmp_path / "kaggle")
    write(os.path.join(kaggle, "models", "keras", "gemma", "keras", "2b", "1", "w.h5"), 5)
    assert not modelscope.looks_like_cache(keras) and not modelscope.looks_like_cache(kaggle)
    for made in (
        lambda r: snapshot(r, "a/b", "master", {"x": 1}),
        lambda r: old_folder(os.path.join(r, "hub"), "a/b", {"x": 1}),
        lambda r: write(file_lock(r, "model", "a/b", "x")),
    ):
        root = str(tmp_path / f"ms{id(made)}")
        made(root)
        assert modelscope.looks_like_cache(root), os.listdir(root)


def test_cache_dir_of_a_modelscope_root_is_scanned_as_modelscope(isolated_home, tmp_path):
    """Keras, datasets and kagglehub also look at models/, datasets/ or *.lock: ModelScope is recognised before them."""
    root = str(tmp_path / "ms")
    snapshot(root, "Qwen/Qwen3-0.6B", "master", {"config.json": 10})
    write(file_lock(root, "model", "Qwen/Qwen3-0.6B", "config.json"))
    done = run_cli("scan", "--cache-dir", root, "--json")
    assert done.exit_code == 0, done.output
    [cache] = json.loads(done.stdout)["caches"]
    assert cache["kind"] == "modelscope" and [i["id"] for i in cache["items"]] == ["Qwen/Qwen3-0.6B"]


# ---------------------------------------------------------------------------------------------
# Pruning through the CLI


def prune(*args: str) -> dict:
    done = run_cli("prune", "--kind", "modelscope", *args, "--yes", "--json")
    assert done.exit_code in (0, 1), done.output
    return json.loads(done.stdout)


def test_prune_by_age_deletes_exactly_the_planned_units(isolated_home, monkeypatch, tmp_path):
    root = str(tmp_path / "ms")
    monkeypatch.setenv("MODELSCOPE_CACHE", root)
    old_rev = snapshot(root, "Qwen/Qwen3-0.6B", "v1.0.0", {"model.safetensors": 3000})
    new_rev = snapshot(root, "Qwen/Qwen3-0.6B", "master", {"model.safetensors": 3100})
    gone = snapshot(root, "org/old", "master", {"w.bin": 200})
    old = old_folder(root, "damo/legacy", {"w.bin": 300})
    unknown = write(os.path.join(root, "models", "Qwen", "copied-by-hand", "w.bin"), 5)
    lock_file = write(file_lock(root, "model", "org/old", "w.bin"))
    for path in (old_rev, os.path.dirname(os.path.dirname(gone)), old, os.path.dirname(unknown)):
        age(path, 60)

    doc = prune("--max-age", "30d")
    assert sorted((u["path"], u["status"]) for u in doc["delete"]) == sorted(
        [(old_rev, "deleted"), (gone, "deleted"), (old, "deleted")]
    )
    assert all(u["freed_bytes"] == u["reclaim_bytes"] > 0 for u in doc["delete"])
    assert not os.path.lexists(old_rev) and os.path.isdir(new_rev)
    assert not os.path.lexists(os.path.dirname(os.path.dirname(gone)))  # its last revision: the repo folder went too
    assert not os.path.lexists(old) and os.path.isfile(unknown) and os.path.isfile(lock_file)
    assert os.path.isdir(os.path.join(root, "models")) and not os.path.lexists(os.path.join(root, ".hfcache-trash"))


def test_a_model_being_downloaded_or_open_is_skipped(isolated_home, monkeypatch, tmp_path):
    root = str(tmp_path / "ms")
    monkeypatch.setenv("MODELSCOPE_CACHE", root)
    busy = snapshot(root, "Qwen/busy", "v1", {"a.bin": 100})
    snapshot(root, "Qwen/busy", "master", {"a.bin": 100})
    partial = write(os.path.join(root, "models", "Qwen--busy", "snapshots", "master", "b.bin.incomplete"), 10)
    lock_path = write(file_lock(root, "model", "Qwen/busy", "b.bin"))
    opened = snapshot(root, "Qwen/opened", "v1", {"a.bin": 100})
    snapshot(root, "Qwen/opened", "master", {"a.bin": 100})
    old_sdk = old_folder(root, "damo/old", {"w.bin": 100})
    old_lock = write(os.path.join(root, ".lock", "damo___old"))  # snapshot_download's lock, modelscope <= 1.37
    for path in (busy, opened, old_sdk, partial):
        age(path, 60)

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, lock_path, old_lock, os.path.join(opened, "a.bin")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        doc = prune("--max-age", "30d")
    finally:
        holder.communicate("")
    status = {u["path"]: (u["status"], u.get("error", "")) for u in doc["delete"]}
    assert status[busy][0] == "skipped" and "lock held" in status[busy][1]
    assert status[opened][0] == "skipped" and "in use" in status[opened][1]
    assert status[old_sdk][0] == "skipped" and "lock" in status[old_sdk][1]
    assert os.path.isdir(busy) and os.path.isdir(opened) and os.path.isdir(old_sdk) and os.path.isfile(partial)


# A process holding two flocks (a file download's, and the old SDK's repo lock) and a file open.
HOLD = """
import fcntl, sys
held = [open(p, "rb") for p in sys.argv[1:]]
for f in held[:2]:
    fcntl.flock(f, fcntl.LOCK_EX)
print("ready", flush=True)
sys.stdin.read()
"""


def test_junk_after_the_grace_period_when_its_lock_is_free(isolated_home, monkeypatch, tmp_path):
    root = str(tmp_path / "ms")
    monkeypatch.setenv("MODELSCOPE_CACHE", root)
    snap = snapshot(root, "Qwen/Qwen3-0.6B", "master", {"config.json": 10})
    stale = write(os.path.join(snap, "a.bin.incomplete"), 100)
    write(file_lock(root, "model", "Qwen/Qwen3-0.6B", "a.bin"))
    young = write(os.path.join(snap, "b.bin.incomplete"), 100)
    temp = write(os.path.join(root, "models", "._____temp", "Qwen", "Qwen2.5-7B", "model.safetensors"), 300)
    held = write(os.path.join(snap, "c.bin.incomplete"), 100)
    held_lock = write(file_lock(root, "model", "Qwen/Qwen3-0.6B", "c.bin"))
    for path in (stale, os.path.dirname(temp), held):
        age(path, 2)
    os.utime(young, (time.time() - 3600,) * 2)

    with open(held_lock, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        doc = prune("--junk")
    assert sorted((u["path"], u["status"]) for u in doc["delete"]) == sorted(
        [(stale, "deleted"), (os.path.dirname(temp), "deleted")]
    )
    assert {young, held} <= {k["path"] for k in doc["keep"]}
    assert os.path.isfile(young) and os.path.isfile(held) and os.path.isfile(os.path.join(snap, "config.json"))
    assert os.path.isdir(os.path.join(root, "models", "._____temp"))


# ---------------------------------------------------------------------------------------------
# The real client: paths and locks as modelscope-hub and modelscope compute them


@pytest.mark.integration
def test_the_real_clients_paths_are_what_the_scan_reads(isolated_home, tmp_path):
    hub_config = (
        importlib.import_module("modelscope_hub.config") if os.environ.get("CI") else pytest.importorskip("modelscope_hub.config")
    )
    from pathlib import Path

    from modelscope.hub.utils.caching import ModelFileSystemCache
    from modelscope_hub._cache_manager import scan_cache
    from modelscope_hub._download import DownloadManager, _incomplete_path

    root = str(tmp_path / "ms")
    manager = DownloadManager(None, hub_config.HubConfig(cache_dir=Path(root)))
    repo_dir = manager._repo_cache_dir(repo_id="Qwen/Qwen3-0.6B", repo_type="model")
    snap = repo_dir / "snapshots" / "master"
    write(str(snap / "config.json"), 10)
    write(str(snap / "sub" / "model.safetensors"), 2000)
    partial = _incomplete_path(snap / "sub" / "big.bin")
    write(str(partial), 30)
    lock_path = manager._lock_path("Qwen/Qwen3-0.6B", "model", file_path="sub/big.bin")
    write(str(lock_path))
    # The old SDK's writer for an old-layout folder, which modelscope-hub then finds and reuses.
    old_models = os.path.join(root, "models")
    legacy = ModelFileSystemCache(old_models, "damo", "nlp_v1___0")
    source = write(str(tmp_path / "download" / "w.bin"), 500)
    legacy.put_file({"Path": "w.bin", "Revision": "abc"}, source)
    legacy.save_model_version({"Revision": "v1.0", "CreatedAt": 1700000000})
    assert manager._find_legacy_repo_dir("damo/nlp_v1.0", "model", Path(root)) == Path(old_models, "damo", "nlp_v1___0")

    cache = modelscope.scan(root)
    found = {i.id: i for i in cache.items}
    assert set(found) == {"Qwen/Qwen3-0.6B", "damo/nlp_v1.0"}
    [p] = cache.partial_files
    assert (p.path, p.lock_path) == (str(partial), str(lock_path))
    theirs = {r.repo_id: r for r in scan_cache(Path(root)).repos}
    assert found["Qwen/Qwen3-0.6B"].size_bytes == theirs["Qwen/Qwen3-0.6B"].size_on_disk
    # modelscope-hub's scan_cache takes models/damo for a new-layout repo named "damo" (its owner--name
    # decoding of a folder with no "--"), so it counts the old folder under that name.
    assert found["damo/nlp_v1.0"].size_bytes == theirs["damo"].size_on_disk
    assert found["damo/nlp_v1.0"].revisions[0].revision == "v1.0"


def test_the_scan_says_which_partial_downloads_its_revisions_count(isolated_home, monkeypatch, tmp_path):
    root = str(tmp_path / "ms")
    monkeypatch.setenv("MODELSCOPE_CACHE", root)
    snap = snapshot(root, "Qwen/Qwen3-0.6B", "master", {"config.json": 10})
    write(os.path.join(snap, "a.bin.incomplete"), 100)  # in the revision: counted in it, removed with it
    write(os.path.join(root, "models", "._____temp", "Qwen", "Qwen2.5-7B", "w.bin"), 300)  # in none
    done = run_cli("scan", "--kind", "modelscope")
    assert done.exit_code == 0, done.output
    assert "cache total 110 Bytes" in done.stdout
    assert "not in any revision: 1 partial download (300 Bytes)" in done.stdout
    assert "inside revisions, counted in them: 1 partial download (100 Bytes)" in done.stdout
