"""The TensorFlow Hub cache (``tfhub``), on trees laid out exactly as tensorflow_hub writes them.

Source read: tensorflow/hub at 26c94f6 (tensorflow_hub 0.16.x), ``tensorflow_hub/resolver.py``
and ``compressed_module_resolver.py``. What each helper below writes, and where from:

* ``compressed_module_resolver._module_dir``: the module folder is ``sha1(handle).hexdigest()``
  in ``resolver.tfhub_cache_dir(use_temp=True)``: ``$TFHUB_CACHE_DIR`` (an empty one counts as
  unset: ``os.getenv(env_var, "") or FLAGS[...]``), else ``<tempfile.gettempdir()>/tfhub_modules``;
* ``resolver.atomic_download``: the lock ``<module>.lock`` (``_lock_filename``), holding
  ``"%s.%d.%s" % (socket.gethostname(), os.getpid(), task_uid)`` (``_lock_file_contents``), is
  written first (``atomic_write_string_to_file(..., overwrite=False)``, through a temporary
  ``<lock>.tmp<uuid hex>``: ``tf_utils.atomic_write_string_to_file``); the module is unpacked into
  ``<module>.<task_uid>.tmp`` (``_temp_download_dir``, ``task_uid = uuid.uuid4().hex``); then the
  descriptor ``<module>.descriptor.txt`` is written (``_write_module_descriptor_file``:
  ``"Module: %s\\nDownload Time: %s\\nDownloader Hostname: %s (PID:%d)"``), the temporary folder
  renamed to the module folder, and the lock removed. A module folder that exists but is empty
  counts as absent (``check_module_exists``) and is deleted before the next download.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from hfcache.caches import tfhub
from hfcache.errors import NotACache
from tests.support import DAY, assert_deletable_paths_fit_their_shapes, run_cli
from tests.trees import write

HANDLE_V4 = "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/4"
HANDLE_V5 = "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5"
KAGGLE = "https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/035-128-classification/2"
GCS = "gs://my-bucket/modules/encoder.tar.gz"


def module_dir(root: str, handle: str) -> str:
    """``compressed_module_resolver._module_dir``."""
    return os.path.join(root, hashlib.sha1(handle.encode("utf8")).hexdigest())


def descriptor(root: str, handle: str, *, pid: int = 4242) -> str:
    """``resolver._write_module_descriptor_file``, beside the module folder."""
    text = "Module: %s\nDownload Time: %s\nDownloader Hostname: %s (PID:%d)" % (  # noqa: UP031 - TF Hub's own format
        handle,
        str(datetime.datetime.today()),
        socket.gethostname(),
        pid,
    )
    return write(module_dir(root, handle) + ".descriptor.txt", text.encode())


def lock(root: str, handle: str, *, host: str | None = None, pid: int | None = None, task: str | None = None) -> str:
    """``resolver._lock_filename`` with ``_lock_file_contents``: ``<host>.<pid>.<task uid>``."""
    owner = (host or socket.gethostname(), os.getpid() if pid is None else pid, task or uuid.uuid4().hex)
    text = "%s.%d.%s" % owner  # noqa: UP031 - TF Hub's own format
    return write(module_dir(root, handle) + ".lock", text.encode())


def module(root: str, handle: str, size: int = 1000, *, days_old: float = 0.0) -> str:
    """A downloaded module: a SavedModel unpacked and renamed into place, then its descriptor."""
    folder = module_dir(root, handle)
    write(os.path.join(folder, "saved_model.pb"), size)
    write(os.path.join(folder, "variables", "variables.data-00000-of-00001"), size * 3)
    write(os.path.join(folder, "variables", "variables.index"), 40)
    descriptor(root, handle)
    if days_old:
        age(folder, days_old)
        age(folder + ".descriptor.txt", days_old)
    return folder


def age(path: str, days: float) -> None:
    when = time.time() - days * DAY
    paths = [path]
    for dirpath, dirs, files in os.walk(path):
        paths += [os.path.join(dirpath, n) for n in dirs + files]
    for p in paths:
        os.utime(p, (when, when), follow_symlinks=False)


def dead_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


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


def test_default_root_is_tfhub_cache_dir_else_the_temp_folder(tmp_path):
    tmp = str(tmp_path / "t")
    os.makedirs(tmp)
    assert tfhub.default_root({"TFHUB_CACHE_DIR": "/data/tfhub", "TMPDIR": tmp}) == "/data/tfhub"
    # tempfile.gettempdir(): TMPDIR, TEMP, TMP, then /tmp, /var/tmp, /usr/tmp; the first usable folder.
    assert tfhub.default_root({"TMPDIR": tmp}) == os.path.join(tmp, "tfhub_modules")
    assert tfhub.default_root({"TFHUB_CACHE_DIR": "", "TMPDIR": tmp}) == os.path.join(tmp, "tfhub_modules")
    assert tfhub.default_root({"TMPDIR": str(tmp_path / "missing"), "TEMP": tmp}) == os.path.join(tmp, "tfhub_modules")
    assert tfhub.default_root({"TMPDIR": "", "TEMP": "", "TMP": tmp}) == os.path.join(tmp, "tfhub_modules")
    assert tfhub.default_root({}) == os.path.join("/tmp", "tfhub_modules")
    # TF Hub takes TFHUB_CACHE_DIR as it is (gfile.MakeDirs): no "~" expansion; a relative one is relative.
    assert tfhub.default_root({"TFHUB_CACHE_DIR": "rel/hub"}) == os.path.abspath("rel/hub")


def test_the_tests_never_see_the_real_temp_folder(isolated_home):
    assert tfhub.default_root(os.environ).startswith(isolated_home + os.sep)  # (conftest sets TFHUB_CACHE_DIR)


def test_without_tfhub_cache_dir_the_scan_looks_in_the_temp_folder(isolated_home, tmp_path):
    tmp = str(tmp_path / "tmp")
    folder = module(os.path.join(tmp, "tfhub_modules"), HANDLE_V5)
    done = run_cli("scan", "--kind", "tfhub", "--json", env={"TFHUB_CACHE_DIR": None, "TMPDIR": tmp})
    assert done.exit_code == 0, done.output
    [cache] = json.loads(done.stdout)["caches"]
    assert cache["root"] == os.path.dirname(folder) and [i["id"] for i in cache["items"]] == [HANDLE_V5[:-2]]


# ---------------------------------------------------------------------------------------------
# Scanning


def test_modules_grouped_by_handle_with_their_versions(tmp_path):
    root = str(tmp_path / "tfhub_modules")
    v4 = module(root, HANDLE_V4, 1000)
    v5 = module(root, HANDLE_V5, 2000)
    kaggle = module(root, KAGGLE, 300)
    gcs = module(root, GCS, 50)
    bare = module_dir(root, "https://tfhub.dev/lost/descriptor/1")
    write(os.path.join(bare, "saved_model.pb"), 70)  # its descriptor was removed by someone

    cache = tfhub.scan(root)
    items = {i.id: i for i in cache.items}
    assert set(items) == {
        "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector",
        "https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/035-128-classification",
        GCS,
        os.path.basename(bare),
    }
    resnet = items["https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector"]
    assert resnet.type == "module" and resnet.path == root
    assert [(r.revision, r.version) for r in resnet.revisions] == [("5", "5"), ("4", "4")]  # newest first
    assert resnet.revisions[0].unit_paths == (v5, v5 + ".descriptor.txt")
    assert resnet.revisions[1].size_bytes == apparent(v4, v4 + ".descriptor.txt")
    assert items[KAGGLE.rsplit("/", 1)[0]].revisions[0].unit_paths == (kaggle, kaggle + ".descriptor.txt")
    unversioned = items[GCS]
    assert unversioned.revisions[0].revision == os.path.basename(gcs) and unversioned.revisions[0].version is None
    lost = items[os.path.basename(bare)]
    assert lost.deletable and "no descriptor" in lost.revisions[0].warnings[0].message
    assert cache.size_bytes == apparent(root) == sum(i.size_bytes for i in cache.items)
    assert cache.partial_files == () and root in cache.protected
    assert_deletable_paths_fit_their_shapes(cache)


def test_downloads_in_progress_debris_and_unknown_entries(tmp_path):
    root = str(tmp_path / "tfhub_modules")
    # A download running in this process: its lock names this host and a live process.
    task = uuid.uuid4().hex
    running = module_dir(root, HANDLE_V5)
    lock(root, HANDLE_V5, task=task)
    write(f"{running}.{task}.tmp/variables/variables.data-00000-of-00001", 500)
    # A download killed: the lock names a process that is gone, its folder stays.
    killed_task = uuid.uuid4().hex
    killed = module_dir(root, KAGGLE)
    lock(root, KAGGLE, pid=dead_pid(), task=killed_task)
    write(f"{killed}.{killed_task}.tmp/saved_model.pb", 60)
    # A crash between the descriptor and the rename: a descriptor without a module.
    descriptor(root, GCS)
    # An empty module folder: TF Hub treats it as absent and deletes it before downloading.
    os.makedirs(module_dir(root, "https://tfhub.dev/empty/1"))
    # The temporary file of atomic_write_string_to_file, left by a kill.
    write(module_dir(root, HANDLE_V4) + ".lock.tmp" + uuid.uuid4().hex, b"host.1.x")
    write(os.path.join(root, "notes.txt"), 5)
    write(os.path.join(root, "my-model", "saved_model.pb"), 7)

    cache = tfhub.scan(root)
    partials = {os.path.basename(p.path): p for p in cache.partial_files}
    base = os.path.basename
    tmp = partials[f"{base(running)}.{task}.tmp"]
    assert tmp.scheme == "extracting" and tmp.lock_held is True and tmp.size_bytes == 500  # (the tar is unpacked into it)
    assert tmp.item_id == base(running)  # (no descriptor before the download ends: the handle is not known yet)
    assert partials[f"{base(running)}.lock"].lock_held is True
    assert partials[f"{base(killed)}.{killed_task}.tmp"].lock_held is False
    assert partials[f"{base(killed)}.lock"].lock_held is False
    assert partials[f"{base(module_dir(root, GCS))}.descriptor.txt"].item_id == GCS
    assert base(module_dir(root, "https://tfhub.dev/empty/1")) in partials
    assert any(name.startswith(base(module_dir(root, HANDLE_V4)) + ".lock.tmp") for name in partials)
    unknown = {i.id: i for i in cache.items}
    assert set(unknown) == {"notes.txt", "my-model"}
    assert not any(i.deletable for i in unknown.values()) and all(i.type == "unknown" for i in unknown.values())
    assert_deletable_paths_fit_their_shapes(cache)


def test_a_stale_lock_beside_a_module_goes_with_it(tmp_path):
    root = str(tmp_path / "tfhub_modules")
    folder = module(root, HANDLE_V5)
    stale = lock(root, HANDLE_V5, pid=dead_pid())
    cache = tfhub.scan(root)
    [item] = cache.items
    assert item.revisions[0].unit_paths == (folder, folder + ".descriptor.txt", stale)
    assert cache.partial_files == ()
    os.remove(stale)
    held = lock(root, HANDLE_V5, pid=os.getpid())  # a process of this host holds it: not the unit's, shown held
    cache = tfhub.scan(root)
    assert cache.items[0].revisions[0].unit_paths == (folder, folder + ".descriptor.txt")
    assert [(p.path, p.lock_held) for p in cache.partial_files] == [(held, True)]


def test_a_folder_that_is_not_a_tfhub_cache_is_refused(tmp_path):
    write(str(tmp_path / "home" / "cv.pdf"), 10)
    with pytest.raises(NotACache):
        tfhub.scan(str(tmp_path / "home"))
    assert tfhub.scan(str(tmp_path / "nowhere"), explicit=False).exists is False
    assert tfhub.looks_like_cache(str(tmp_path / "home")) is False
    root = str(tmp_path / "elsewhere")
    module(root, HANDLE_V4)
    assert tfhub.looks_like_cache(root)


# ---------------------------------------------------------------------------------------------
# Pruning through the CLI


def prune(*args: str) -> dict:
    done = run_cli("prune", "--kind", "tfhub", *args, "--yes", "--json")
    assert done.exit_code in (0, 1), done.output
    return json.loads(done.stdout)


def test_prune_by_age_deletes_exactly_the_old_modules(isolated_home, monkeypatch):
    root = os.environ["TFHUB_CACHE_DIR"]
    old = module(root, HANDLE_V4, days_old=60)
    stale = lock(root, HANDLE_V4, pid=dead_pid())
    age(stale, 60)
    new = module(root, HANDLE_V5)
    unknown = write(os.path.join(root, "my-model", "saved_model.pb"), 7)
    age(os.path.dirname(unknown), 90)

    unit_bytes = apparent(old, old + ".descriptor.txt", stale)  # the module, its descriptor, its stale lock
    doc = prune("--max-age", "30d")
    assert [(u["path"], u["status"]) for u in doc["delete"]] == [(old, "deleted")]
    assert doc["delete"][0]["freed_bytes"] == doc["delete"][0]["reclaim_bytes"] == unit_bytes > 4040
    assert not os.path.lexists(old) and not os.path.lexists(old + ".descriptor.txt") and not os.path.lexists(stale)
    assert os.path.isdir(new) and os.path.isfile(new + ".descriptor.txt") and os.path.isfile(unknown)
    assert sorted(os.listdir(root)) == sorted(
        [os.path.basename(new), os.path.basename(new) + ".descriptor.txt", "my-model", ".hfcache-prune.lock"]
    )


@pytest.mark.parametrize("how", ["held", "recent"])
def test_a_module_whose_lock_is_held_or_recent_is_never_deleted(isolated_home, how):
    root = os.environ["TFHUB_CACHE_DIR"]
    old = module(root, HANDLE_V4, days_old=60)
    if how == "held":  # this host, a live process: however old the lock file is
        age(lock(root, HANDLE_V4, pid=os.getpid()), 60)
    else:  # another host's lock, taken an hour ago: its owner cannot be asked
        age(lock(root, HANDLE_V4, host="other-node.example", pid=1), 1 / 24)

    doc = prune("--max-age", "30d")
    if how == "held":  # planned (a held lock is not part of the unit), then skipped at the moment of deletion
        [unit] = doc["delete"]
        assert unit["status"] == "skipped" and "lock held" in unit["error"], unit
    else:  # the unit holds the lock of another host: an hour old, it makes the module an hour old too
        assert doc["delete"] == []
    assert os.path.isdir(old) and os.path.isfile(old + ".descriptor.txt")


def test_a_lock_taken_after_the_plan_stops_the_module(isolated_home, tmp_path):
    """``hfcache apply`` of a plan made before another host started downloading the module."""
    root = os.environ["TFHUB_CACHE_DIR"]
    old = module(root, HANDLE_V4, days_old=60)
    plan = str(tmp_path / "plan.json")
    made = run_cli("prune", "--kind", "tfhub", "--max-age", "30d", "--dry-run", "--plan-out", plan)
    assert made.exit_code == 0, made.output
    lock(root, HANDLE_V4, host="other-node.example", pid=1)
    done = run_cli("apply", plan, "--yes", "--json")
    assert done.exit_code == 0, done.output
    [unit] = json.loads(done.stdout)["delete"]
    assert unit["status"] == "skipped", unit  # (the fresh scan puts the new lock in the unit: "changed since the plan")
    assert os.path.isdir(old)


def test_when_a_lock_keeps_its_module(tmp_path):
    root = str(tmp_path / "tfhub_modules")
    now, grace = time.time(), DAY
    held = lock(root, HANDLE_V4, pid=os.getpid())
    age(held, 60)
    assert "lock held" in tfhub.lock_busy(held, grace, now)
    other = lock(root, HANDLE_V5, host="other-node.example", pid=1)
    assert "moved" in tfhub.lock_busy(other, grace, now)
    age(other, 2)
    assert tfhub.lock_busy(other, grace, now) is None  # past the grace period, owner unknown: stale
    task = uuid.uuid4().hex
    growing = lock(root, KAGGLE, host="other-node.example", pid=1, task=task)
    age(growing, 2)
    write(f"{module_dir(root, KAGGLE)}.{task}.tmp/variables/v.data", 10)  # its download still writes
    assert "moved" in tfhub.lock_busy(growing, grace, now)
    dead = lock(root, GCS, pid=dead_pid())
    assert "moved" in tfhub.lock_busy(dead, grace, now)  # ended here, but recent: another PID namespace?
    age(dead, 2)
    assert tfhub.lock_busy(dead, grace, now) is None
    assert tfhub.lock_busy(os.path.join(root, "none.lock"), grace, now) is None


def test_a_module_a_process_has_open_is_skipped(isolated_home):
    root = os.environ["TFHUB_CACHE_DIR"]
    old = module(root, HANDLE_V4, days_old=60)
    held = os.path.join(old, "variables", "variables.index")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; f = open(sys.argv[1], 'rb'); print('ready', flush=True); sys.stdin.read()", held],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        age(old, 60)  # (opening it moved nothing, but be sure)
        doc = prune("--max-age", "30d")
    finally:
        holder.communicate("")
    [unit] = doc["delete"]
    assert unit["status"] == "skipped" and "in use" in unit["error"]
    assert os.path.isfile(held)


def test_junk_after_the_grace_period_only_and_never_a_live_download(isolated_home):
    root = os.environ["TFHUB_CACHE_DIR"]
    # Debris of a crash two days ago: a descriptor without its module, an empty module folder.
    debris = descriptor(root, GCS)
    empty = module_dir(root, "https://tfhub.dev/empty/1")
    os.makedirs(empty)
    killed_task = uuid.uuid4().hex
    killed_lock = lock(root, KAGGLE, pid=dead_pid(), task=killed_task)
    killed_tmp = write(f"{module_dir(root, KAGGLE)}.{killed_task}.tmp/saved_model.pb", 60)
    for path in (debris, empty, killed_lock, os.path.dirname(killed_tmp)):
        age(path, 2)
    # A download running now, in this process, whose files stopped moving two days ago.
    task = uuid.uuid4().hex
    live_lock = lock(root, HANDLE_V5, task=task)
    live_tmp = write(f"{module_dir(root, HANDLE_V5)}.{task}.tmp/saved_model.pb", 80)
    age(live_lock, 2)
    age(os.path.dirname(live_tmp), 2)
    # A crash an hour ago: within the grace period.
    young = descriptor(root, "https://tfhub.dev/young/1")
    age(young, 1 / 24)

    doc = prune("--junk")
    status = {u["path"]: u["status"] for u in doc["delete"]}
    assert status == {
        debris: "deleted",
        empty: "deleted",
        killed_lock: "deleted",
        os.path.dirname(killed_tmp): "deleted",
    }
    kept = {k["path"] for k in doc["keep"]}
    assert {live_lock, os.path.dirname(live_tmp), young} <= kept
    assert os.path.isfile(live_lock) and os.path.isfile(live_tmp) and os.path.isfile(young)
    assert not any(os.path.lexists(p) for p in (debris, empty, killed_lock, killed_tmp))
