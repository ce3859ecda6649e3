"""vLLM's torch.compile cache (``vllm``), on trees laid out exactly as vLLM writes them.

Sources read (vllm-project/vllm, main of 2026 and the 0.8 line):

* ``vllm/envs.py``: ``VLLM_CACHE_ROOT`` is ``os.path.expanduser(os.getenv("VLLM_CACHE_ROOT",
  os.path.join(get_default_cache_root(), "vllm")))``, ``get_default_cache_root()`` is
  ``os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))``. The same
  root holds ``xla_cache/`` (``VLLM_XLA_CACHE_PATH``), ``assets/`` (``VLLM_ASSETS_CACHE``) and,
  from other modules, ``deep_gemm/``, ``mm_caches/``, ``modelinfos/``, ``dummy_cache/``: none of
  them a compile cache;
* ``vllm/compilation/backends.py`` ``VllmBackend.__call__``: one folder per compiled artefact,
  ``torch_compile_cache/<hash_factors(...)[:10]>`` (md5[:10] in 0.8), with
  ``rank_<rank>_<dp_rank>/<prefix>/`` inside holding ``cache_key_factors.json`` and
  ``computation_graph.py``; ``CompilerManager.initialize_cache`` adds ``vllm_compile_cache.py``,
  ``InductorAdaptor.initialize_cache`` (``compiler_interface.py``) ``inductor_cache/`` and
  ``triton_cache/`` (TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR point there);
* ``vllm/compilation/decorators.py`` (``VLLM_USE_AOT_COMPILE``): one folder per artefact,
  ``torch_compile_cache/torch_aot_compile/<sha256 hex>/`` with ``inductor_cache/`` and
  ``rank_<rank>_<dp_rank>/model``, saved through ``model.<pid>.tmp`` and ``os.replace``
  (``save_aot_compiled_function``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from hfcache.caches import vllm
from hfcache.errors import NotACache
from tests.support import DAY, assert_deletable_paths_fit_their_shapes, run_cli, slow_cli
from tests.trees import write


def jit_hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[:10]


def aot_hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def jit_artefact(root: str, label: str, *, prefix: str = "backbone", ranks: int = 1, size: int = 1000) -> str:
    """``VllmBackend.__call__`` + ``initialize_cache``: what one engine configuration leaves."""
    folder = os.path.join(root, "torch_compile_cache", jit_hash(label))
    for rank in range(ranks):
        local = os.path.join(folder, f"rank_{rank}_0", prefix) if prefix else os.path.join(folder, f"rank_{rank}_0")
        write(os.path.join(local, "cache_key_factors.json"), b'{"env": {}}')
        write(os.path.join(local, "computation_graph.py"), 300)
        write(os.path.join(local, "vllm_compile_cache.py"), 120)
        write(os.path.join(local, "inductor_cache", "fxgraph", "ab", "fabc", "entry"), size)
        write(os.path.join(local, "inductor_cache", "ab", "cab.so"), size * 2)
        write(os.path.join(local, "triton_cache", "KERNEL", "kernel.cubin"), size // 2)
    return folder


def aot_artefact(root: str, label: str, *, size: int = 1000) -> str:
    """``decorators.py`` with VLLM_USE_AOT_COMPILE: inductor_cache/ per hash, the model per rank."""
    folder = os.path.join(root, "torch_compile_cache", "torch_aot_compile", aot_hash(label))
    write(os.path.join(folder, "inductor_cache", "triton", "0", "KERNEL", "k.cubin"), size)
    write(os.path.join(folder, "rank_0_0", "model"), size * 4)
    return folder


def others(root: str) -> list[str]:
    """What else vLLM keeps under its cache root: never a compile cache, never deleted."""
    return [
        write(os.path.join(root, "xla_cache", "abc"), 50),
        write(os.path.join(root, "assets", "vllm_public_assets", "cherry_blossom.jpg"), 60),
        write(os.path.join(root, "deep_gemm", "cache", "kernel.so"), 70),
        write(os.path.join(root, "modelinfos", "Qwen3ForCausalLM.json"), 8),
        write(os.path.join(root, "modelscope", "hub", "x"), 9),
    ]


def dead_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def age(path: str, days: float) -> None:
    when = time.time() - days * DAY
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when))


def apparent(*paths: str) -> int:
    total = 0
    for path in paths:
        for folder, _, files in os.walk(path):
            total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    return total


def test_default_root_follows_vllm_envs():
    home = {"HOME": "/home/me"}
    assert vllm.default_root(home) == "/home/me/.cache/vllm"
    assert vllm.default_root({**home, "XDG_CACHE_HOME": "/xdg"}) == "/xdg/vllm"
    assert vllm.default_root({**home, "XDG_CACHE_HOME": "/xdg", "VLLM_CACHE_ROOT": "~/v"}) == "/home/me/v"
    assert vllm.default_root({**home, "VLLM_CACHE_ROOT": ""}) == "/home/me/.cache/vllm"  # empty: unset (see module)


def test_each_hash_folder_is_an_artefact_and_nothing_else_is_touched(tmp_path):
    root = str(tmp_path / "vllm")
    jit = jit_artefact(root, "qwen-tp1", ranks=2)
    old_layout = jit_artefact(root, "llama-0.8", prefix="")  # vLLM 0.8: no prefix folder under the rank
    aot = aot_artefact(root, "qwen-aot")
    saving = write(os.path.join(aot_artefact(root, "saving"), "rank_1_0", f"model.{dead_pid()}.tmp"), 333)
    not_ours = [
        write(os.path.join(root, "torch_compile_cache", "notes.txt"), 4),
        write(os.path.join(root, "torch_compile_cache", "xyz", "file"), 5),  # not a hash
    ]
    empty_hash = os.path.join(root, "torch_compile_cache", jit_hash("empty"))
    os.makedirs(empty_hash)  # made by an engine that died before its rank folder: not recognised
    elsewhere = others(root)
    age(jit, 40)

    cache = vllm.scan(root)
    items = {i.id: i for i in cache.items}
    assert {i: items[i].type for i in items if items[i].type != "unknown"} == {
        jit_hash("qwen-tp1"): "torch-compile",
        jit_hash("llama-0.8"): "torch-compile",
        f"torch_aot_compile/{aot_hash('qwen-aot')}": "aot-compile",
        f"torch_aot_compile/{aot_hash('saving')}": "aot-compile",
    }
    qwen = items[jit_hash("qwen-tp1")]
    assert [r.unit_paths for r in qwen.revisions] == [(jit,)] and qwen.unit_paths == (jit,)
    assert qwen.size_bytes == apparent(jit) and qwen.nb_blobs == 12
    assert time.time() - qwen.last_accessed > 39 * DAY  # age by last access
    assert items[jit_hash("llama-0.8")].revisions[0].unit_paths == (old_layout,)
    assert items[f"torch_aot_compile/{aot_hash('qwen-aot')}"].unit_paths == (aot,)
    [partial] = cache.partial_files
    assert partial.path == saving and partial.scheme == "temporary"
    assert partial.item_id == f"torch_aot_compile/{aot_hash('saving')}"
    unknown = {i.path for i in cache.items if i.type == "unknown"}
    assert unknown == {*not_ours[:1], os.path.dirname(not_ours[1]), empty_hash}
    assert not any(i.deletable for i in cache.items if i.type == "unknown")
    # The rest of vLLM's cache root is neither counted nor ever a unit; each is warned about once.
    every_path = {p for i in cache.items for r in i.revisions for p in r.unit_paths}
    assert not any(p.startswith(os.path.join(root, d)) for p in every_path for d in ("xla_cache", "assets", "deep_gemm"))
    warned = {w.path for w in cache.warnings}
    assert {os.path.join(root, d) for d in ("xla_cache", "assets", "deep_gemm", "modelinfos", "modelscope")} <= warned
    assert cache.size_bytes == apparent(os.path.join(root, "torch_compile_cache"))
    assert all(os.path.exists(p) for p in elsewhere)
    compile_cache = os.path.join(root, "torch_compile_cache")
    for needed in (root, compile_cache, os.path.join(compile_cache, "torch_aot_compile")):
        assert needed in cache.protected
    assert_deletable_paths_fit_their_shapes(cache)


def test_a_folder_without_torch_compile_cache_is_refused(tmp_path):
    write(str(tmp_path / "home" / "cv.pdf"), 10)
    with pytest.raises(NotACache):
        vllm.scan(str(tmp_path / "home"))
    assert vllm.scan(str(tmp_path / "nowhere"), explicit=False).exists is False
    jit_artefact(str(tmp_path / "v"), "x")
    with pytest.raises(NotACache, match="did you mean"):
        vllm.scan(str(tmp_path / "v" / "torch_compile_cache"))


def prune(*args: str) -> dict:
    done = run_cli("prune", "--kind", "vllm", *args, "--yes", "--json")
    assert done.exit_code in (0, 1), done.output
    return json.loads(done.stdout)


def test_prune_by_age_deletes_exactly_the_planned_artefacts(isolated_home, monkeypatch):
    root = os.path.join(isolated_home, "vllm-cache")
    monkeypatch.setenv("VLLM_CACHE_ROOT", root)
    old = jit_artefact(root, "old")
    old_aot = aot_artefact(root, "old-aot")
    new = jit_artefact(root, "new")
    stray = write(os.path.join(root, "torch_compile_cache", "notes.txt"), 4)
    elsewhere = others(root)
    for path in (old, old_aot, stray, *(os.path.dirname(p) for p in elsewhere)):
        age(path, 60)
    os.utime(stray, (time.time() - 90 * DAY,) * 2)

    doc = prune("--max-age", "30d")
    assert sorted((u["path"], u["status"]) for u in doc["delete"]) == sorted([(old, "deleted"), (old_aot, "deleted")])
    assert all(u["freed_bytes"] == u["reclaim_bytes"] > 0 for u in doc["delete"])
    assert not os.path.lexists(old) and not os.path.lexists(old_aot)
    assert os.path.isdir(new) and os.path.isfile(stray) and all(os.path.isfile(p) for p in elsewhere)
    assert os.path.isdir(os.path.join(root, "torch_compile_cache", "torch_aot_compile"))  # vLLM's folders stay
    assert not os.path.lexists(os.path.join(root, ".hfcache-trash"))  # (emptied and gone after each unit)


@pytest.mark.parametrize("how", ["open", "mapped"])
def test_an_artefact_a_running_engine_holds_is_skipped(isolated_home, monkeypatch, how):
    root = os.path.join(isolated_home, ".cache", "vllm")  # the default: $XDG_CACHE_HOME/vllm
    old = jit_artefact(root, "serving")
    held = os.path.join(old, "rank_0_0", "backbone", "inductor_cache", "ab", "cab.so")
    code = (
        "import mmap, sys; f = open(sys.argv[1], 'rb'); "
        + ("m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); " if how == "mapped" else "")
        + "print('ready', flush=True); sys.stdin.read()"
    )
    engine = subprocess.Popen([sys.executable, "-c", code, held], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert engine.stdout.readline().strip() == "ready"
        age(old, 60)  # (mapping a file is an access: the kernel moved its atime; a policy on size would pick it anyway)
        doc = prune("--max-age", "30d")
    finally:
        engine.communicate("")
    [unit] = doc["delete"]
    assert unit["status"] == "skipped" and "in use" in unit["error"], unit
    assert os.path.isfile(held)


def test_an_artefact_being_saved_is_skipped_and_its_leftover_is_junk_later(isolated_home, monkeypatch):
    root = os.path.join(isolated_home, ".cache", "vllm")
    folder = aot_artefact(root, "saving")
    age(folder, 60)
    tmp = write(os.path.join(folder, "rank_0_0", f"model.{dead_pid()}.tmp"), 333)  # being written now
    assert prune("--max-age", "30d")["delete"] == []  # (just written: just used)
    doc = prune("--max-size", "1", "--allow-remove-all")  # a quota takes the least recently used, whatever its age
    [unit] = doc["delete"]
    assert unit["status"] == "skipped" and "an engine may be saving it" in unit["error"], unit
    assert os.path.isfile(tmp)
    age(folder, 3)  # the engine died two days ago: its temporary file is a leftover
    doc = prune("--junk")
    assert [(u["path"], u["status"]) for u in doc["delete"]] == [(tmp, "deleted")]
    assert os.path.isfile(os.path.join(folder, "rank_0_0", "model"))


def test_a_save_whose_engine_still_runs_is_never_junk(isolated_home):
    root = os.path.join(isolated_home, ".cache", "vllm")
    folder = aot_artefact(root, "saving")
    tmp = write(os.path.join(folder, "rank_0_0", f"model.{os.getpid()}.tmp"), 333)  # this process: it runs
    age(folder, 3)
    [partial] = vllm.scan(root).partial_files
    assert partial.lock_held is True
    doc = prune("--junk")
    assert doc["delete"] == [] and [k["path"] for k in doc["keep"]] == [tmp]
    assert os.path.isfile(tmp)


def test_a_prune_killed_between_move_and_removal_is_finished_by_the_next(isolated_home, monkeypatch):
    root = os.path.join(isolated_home, ".cache", "vllm")
    jit_artefact(root, "kept")
    left = write(os.path.join(root, ".hfcache-trash", f"{jit_hash('gone')}.123.0", "rank_0_0", "x"), 10)
    scanned = vllm.scan(root)
    assert any(".hfcache-trash" in w.path for w in scanned.warnings) and not any(
        ".hfcache-trash" in i.path for i in scanned.items
    )
    done = run_cli("prune", "--kind", "vllm", "--max-age", "30d", "--yes")
    assert done.exit_code == 0, done.output
    assert not os.path.lexists(left) and "hfcache-trash" in done.output


def test_a_kill_in_the_middle_of_a_folder_leaves_the_artefact_gone_whole(isolated_home, monkeypatch):
    """Killed while the artefact's files are being unlinked: vLLM finds no half folder, the next prune finishes."""
    root = os.path.join(isolated_home, ".cache", "vllm")
    old = jit_artefact(root, "old", ranks=4)  # 24 files, each removal slowed down
    kept = jit_artefact(root, "kept")
    age(old, 60)
    trash = os.path.join(root, ".hfcache-trash")
    proc = slow_cli(0.05, "prune", "--kind", "vllm", "--max-age", "30d", "--yes")
    deadline = time.time() + 60
    while not (os.path.isdir(trash) and os.listdir(trash)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # a few files gone, most not
    proc.kill()
    proc.communicate()
    assert not os.path.lexists(old) and os.path.isdir(kept)  # moved out whole before the first unlink
    [left] = os.listdir(trash)
    assert apparent(os.path.join(trash, left)) > 0
    scanned = vllm.scan(root)
    assert [i.path for i in scanned.items] == [kept] and any(w.path == trash for w in scanned.warnings)
    done = run_cli("prune", "--kind", "vllm", "--max-age", "30d", "--yes")
    assert done.exit_code == 0, done.output
    assert not os.path.lexists(trash) and os.path.isdir(kept)
