"""Adversarial tests of the Ollama, ModelScope, TF Hub and vLLM kinds: each asserts the SAFE behaviour.

Races are driven as in test_deletion_races.py: a LiveChecks whose open-files hook runs an action
just before a model's units go, or one deletion step patched to act right after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import hfcache
from hfcache.caches.ollama import delete as ollama_delete
from hfcache.caches.ollama.delete import OllamaDeletion
from hfcache.execute.run import execute_plan
from hfcache.plan.build import make_plan
from hfcache.plan.settings import Policy, Settings
from tests.ollama_trees import age, blob_path, digests, loads, manifest_bytes, model
from tests.support import DAY, cli, live_hook, payload
from tests.trees import write

TRASH = ".hfcache-trash"
W1, W2, W3 = payload(2000, 11), payload(1500, 12), payload(700, 13)


def contents(folder: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for n in files:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


@pytest.fixture
def oroot(tmp_path, monkeypatch):
    path = str(tmp_path / "models")
    monkeypatch.setenv("OLLAMA_MODELS", path)
    return path


def ostore(root: str) -> dict[str, str]:
    """llama3:latest (new), llama3:old (90 days), each its own weights and config."""
    made = {
        "latest": model(root, "llama3", "latest", weights=W1),
        "old": model(root, "llama3", "old", weights=W2),
    }
    for d, _ in digests(made["old"]):
        age(blob_path(root, d), 90)
    age(made["old"], 90)
    return made


def only(root, manifest, *others):
    names = {d.replace(":", "-") for d, _ in digests(manifest)}
    for o in others:
        names -= {d.replace(":", "-") for d, _ in digests(o)}
    return names


def ollama_plan(root: str, **settings):
    inv = hfcache.scan([root], kinds=["ollama"])
    return inv, make_plan(inv, Policy(overrides=Settings(**settings)), now=time.time())


# ---------------------------------------------------------------------------------------------
# Ollama: pulls and copies racing a prune


def test_ollama_cp_just_before_the_units_go_keeps_the_blobs(oroot):
    made = ostore(oroot)
    inv, plan = ollama_plan(oroot, keep=1)
    assert [u.revision for u in plan.delete] == ["old"]
    copy = os.path.join(oroot, "manifests", "registry.ollama.ai", "library", "copy", "latest")

    with open(made["old"], "rb") as f:
        text = f.read()
    age(made["old"], 90)
    inv, plan = ollama_plan(oroot, keep=1)

    def cp():
        write(copy, text)

    result = execute_plan(plan, inv, live=live_hook(cp)([oroot]))
    (unit,) = result.results
    assert unit.freed_bytes == 0, unit
    assert loads(oroot, copy) and loads(oroot, made["latest"])


def test_ollama_pull_right_after_the_manifest_unlink_keeps_the_blobs(oroot, monkeypatch):
    made = ostore(oroot)
    with open(made["old"], "rb") as f:
        text = f.read()
    age(made["old"], 90)
    inv, plan = ollama_plan(oroot, keep=1)
    pulled = os.path.join(oroot, "manifests", "registry.ollama.ai", "user", "pulled", "v1")
    orig = OllamaDeletion.remove_revision

    def unlink_then_pull(self, tree, cache, item, unit, rev, out):
        got = orig(self, tree, cache, item, unit, rev, out)
        write(pulled, text)
        return got

    monkeypatch.setattr(OllamaDeletion, "remove_revision", unlink_then_pull)
    result = execute_plan(plan, inv)
    (unit,) = result.results
    assert unit.status == "deleted" and unit.freed_bytes == 0, unit
    assert loads(oroot, pulled)


def test_ollama_pull_during_settling_keeps_the_blobs(oroot, monkeypatch):
    made = ostore(oroot)
    with open(made["old"], "rb") as f:
        text = f.read()
    age(made["old"], 90)
    inv, plan = ollama_plan(oroot, keep=1)
    pulled = os.path.join(oroot, "manifests", "registry.ollama.ai", "user", "pulled", "v1")
    orig = ollama_delete.settle

    def pull_then_settle(tree, aside, out):
        write(pulled, text)
        return orig(tree, aside, out)

    monkeypatch.setattr(ollama_delete, "settle", pull_then_settle)
    result = execute_plan(plan, inv)
    (unit,) = result.results
    assert unit.freed_bytes == 0, unit
    assert loads(oroot, pulled) and os.listdir(os.path.join(oroot, TRASH)) == []


def test_ollama_truncated_manifest_appearing_during_settling_keeps_every_blob(oroot, monkeypatch):
    """A pull writing its manifest (os.WriteFile, not atomic) is seen half-written at the last reading."""
    made = ostore(oroot)
    with open(made["old"], "rb") as f:
        text = f.read()
    age(made["old"], 90)
    inv, plan = ollama_plan(oroot, keep=1)
    pulled = os.path.join(oroot, "manifests", "registry.ollama.ai", "user", "pulled", "v1")
    orig = ollama_delete.settle

    def half_then_settle(tree, aside, out):
        write(pulled, text[: len(text) // 2])
        return orig(tree, aside, out)

    monkeypatch.setattr(ollama_delete, "settle", half_then_settle)
    execute_plan(plan, inv)
    write(pulled, text)  # the pull finishes
    assert loads(oroot, pulled)


# ---------------------------------------------------------------------------------------------
# Ollama: names


@pytest.mark.parametrize("host", ["REGISTRY.OLLAMA.AI", "Registry.Ollama.AI"])
def test_ollama_rm_a_fully_qualified_name_deletes_only_that_manifest(oroot, host):
    """Two manifest folders whose hosts differ in case (Ollama's EqualFold makes them one id for `ollama list`)."""
    a = model(oroot, "llama3", "latest", weights=W1)
    b = model(oroot, "llama3", "latest", weights=W2, host=host)
    code, plan = cli("rm", "registry.ollama.ai/library/llama3:latest", "--dry-run", "--json")
    # SAFE: one unit (the exact path), or a refusal; never both models' tags.
    if code == 0:
        assert [u["path"] for u in plan["delete"]] == [a], plan
    code, done = cli("rm", "registry.ollama.ai/library/llama3:latest", "--yes", "--json")
    assert os.path.exists(b) and loads(oroot, b), done


def test_ollama_rm_by_id_with_namespace_case_variant(oroot):
    a = model(oroot, "llama3", "latest", weights=W1)
    b = model(oroot, "llama3", "latest", weights=W2, namespace="LIBRARY")
    code, done = cli("rm", "llama3:latest", "--yes", "--json")
    assert os.path.exists(a) + os.path.exists(b) >= 1, done  # never both


def test_ollama_host_with_port_and_dotted_model(oroot):
    made = ostore(oroot)
    odd = model(oroot, "my.model-v1", "q4_0", weights=W3, host="localhost:11434", namespace="team_a")
    age(odd, 90)
    code, done = cli("rm", "localhost:11434/team_a/my.model-v1:q4_0", "--yes", "--json")
    assert code == 0, done
    assert not os.path.exists(odd)
    assert loads(oroot, made["latest"]) and loads(oroot, made["old"])
    assert os.path.isdir(os.path.join(oroot, "manifests"))


# ---------------------------------------------------------------------------------------------
# Ollama: manifests Go decodes differently


def test_ollama_manifest_key_with_long_s_still_keeps_its_blobs(oroot):
    """Go's encoding/json matches keys with Unicode simple folding: "layerſ" (U+017F) decodes into layers."""
    made = ostore(oroot)
    (cfg,), (weights,) = [digests(made["old"])[-1]], [digests(made["old"])[0]]
    doc = {
        "schemaVersion": 2,
        "config": {"digest": cfg[0], "size": cfg[1]},
        "layer\u017f": [{"digeſt".replace("ſ", "\u017f"): weights[0], "size": weights[1]}],
    }
    write(os.path.join(oroot, "manifests", "registry.ollama.ai", "library", "other", "latest"), json.dumps(doc).encode())
    assert loads(oroot, made["old"])
    code, done = cli("rm", "llama3:old", "--yes", "--json")
    assert os.path.exists(blob_path(oroot, weights[0])), done  # Ollama still loads library/other:latest


# ---------------------------------------------------------------------------------------------
# Ollama: links, hard links, mounts


def test_ollama_manifest_symlink_to_another_manifest_blocks_blob_removal(oroot):
    made = ostore(oroot)
    alias = os.path.join(oroot, "manifests", "registry.ollama.ai", "library", "alias", "latest")
    os.makedirs(os.path.dirname(alias))
    os.symlink(made["old"], alias)
    code, done = cli("prune", "--kind", "ollama", "--keep", "1", "--yes", "--json")
    assert code in (0, 1, 2, 3, 4, 5), done
    assert all(os.path.exists(blob_path(oroot, d)) for d, _ in digests(made["old"])), done


def test_ollama_blobs_folder_a_symlink_outside(oroot, tmp_path):
    ostore(oroot)
    outside = str(tmp_path / "outside-blobs")
    os.rename(os.path.join(oroot, "blobs"), outside)
    os.symlink(outside, os.path.join(oroot, "blobs"))
    before = contents(outside)
    code, done = cli("rm", "llama3:old", "--yes", "--json")
    assert contents(outside) == before, done
    code, done = cli("prune", "--kind", "ollama", "--junk", "--yes", "--json")
    assert contents(outside) == before, done


def test_ollama_trash_a_symlink_outside(oroot, tmp_path):
    made = ostore(oroot)
    outside = str(tmp_path / "outside")
    names = only(oroot, made["old"])
    for n in names:
        write(os.path.join(outside, n), b"precious")
    os.symlink(outside, os.path.join(oroot, TRASH))
    before = contents(outside)
    code, done = cli("rm", "llama3:old", "--yes", "--json")
    assert contents(outside) == before, done
    assert loads(oroot, made["latest"])
    assert code in (0, 1, 2, 3, 4, 5, 6), done
    (unit,) = done["delete"]
    assert unit["freed_bytes"] == 0, unit
    code, done = cli("prune", "--kind", "ollama", "--junk", "--yes", "--json")
    assert contents(outside) == before, done


def test_ollama_trash_swapped_for_a_symlink_during_settling(oroot, tmp_path, monkeypatch):
    made = ostore(oroot)
    inv, plan = ollama_plan(oroot, keep=1)
    outside = str(tmp_path / "outside")
    names = only(oroot, made["old"])
    for n in names:
        write(os.path.join(outside, n), b"precious")
    before = contents(outside)
    orig = ollama_delete.settle

    def swap_then_settle(tree, aside, out):
        os.rename(os.path.join(oroot, TRASH), str(tmp_path / "moved-trash"))
        os.symlink(outside, os.path.join(oroot, TRASH))
        return orig(tree, aside, out)

    monkeypatch.setattr(ollama_delete, "settle", swap_then_settle)
    execute_plan(plan, inv)
    assert contents(outside) == before


def test_ollama_hard_linked_blob_is_not_reported_freed(oroot, tmp_path):
    made = ostore(oroot)
    ((weights, _),) = [digests(made["old"])[0]]
    os.link(blob_path(oroot, weights), str(tmp_path / "hardlink"))
    cfg = digests(made["old"])[-1][1]
    code, plan = cli("rm", "llama3:old", "--dry-run", "--json")
    code, done = cli("rm", "llama3:old", "--yes", "--json")
    assert code == 0, done
    (unit,) = done["delete"]
    # What left the disk: the config only (the weights still have a link outside)
    assert unit["freed_bytes"] == cfg, unit
    assert plan["reclaim_bytes"] == cfg, plan


def test_ollama_mount_on_a_host_folder_during_the_run(oroot, tmp_path, mounts):
    ostore(oroot)
    inv, plan = ollama_plan(oroot, keep=1)
    outside = str(tmp_path / "outside")
    write(os.path.join(outside, "library", "x", "latest"), b"precious")
    before = contents(outside)
    host = os.path.join(oroot, "manifests", "registry.ollama.ai")

    def mount():
        mounts.bind(outside, host)

    result = execute_plan(plan, inv, live=live_hook(mount)([oroot]))
    assert contents(outside) == before
    (unit,) = result.results
    assert unit.freed_bytes == 0, unit


# ---------------------------------------------------------------------------------------------
# TrashDeletion: ModelScope, TF Hub, vLLM

import hashlib  # noqa: E402
import socket  # noqa: E402
import uuid  # noqa: E402


def ages(path: str, days: float) -> None:
    when = time.time() - days * DAY
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when))


def ms_snapshot(root, repo_id, revision, files):
    folder = os.path.join(root, "models", repo_id.replace("/", "--"), "snapshots", revision)
    for name, size in files.items():
        write(os.path.join(folder, name), size)
    return folder


def vllm_artefact(root, label, size=1000):
    folder = os.path.join(root, "torch_compile_cache", hashlib.sha256(label.encode()).hexdigest()[:10])
    local = os.path.join(folder, "rank_0_0", "backbone")
    write(os.path.join(local, "cache_key_factors.json"), b'{"env": {}}')
    write(os.path.join(local, "inductor_cache", "ab", "cab.so"), size)
    return folder


def tfhub_module(root, handle, size=1000):
    folder = os.path.join(root, hashlib.sha1(handle.encode()).hexdigest())
    write(os.path.join(folder, "saved_model.pb"), size)
    write(os.path.join(folder, "variables", "variables.index"), 40)
    write(folder + ".descriptor.txt", f"Module: {handle}\nDownload Time: x\n".encode())
    return folder


def plan_for(root, kind, **settings):
    inv = hfcache.scan([root], kinds=[kind])
    return inv, make_plan(inv, Policy(overrides=Settings(**settings)), now=time.time())


def test_modelscope_new_snapshot_appearing_during_the_run_survives(tmp_path, monkeypatch):
    """The repo's last planned snapshot goes with its folder; a download started a new one meanwhile."""
    root = str(tmp_path / "ms")
    monkeypatch.setenv("MODELSCOPE_CACHE", root)
    old = ms_snapshot(root, "org/m", "v1", {"w.bin": 3000})
    ages(os.path.dirname(os.path.dirname(old)), 60)
    inv, plan = plan_for(root, "modelscope", max_age=30 * DAY)
    assert [u.path for u in plan.delete] == [old]
    new = os.path.join(root, "models", "org--m", "snapshots", "master")

    def download():
        write(os.path.join(new, "config.json"), b"{}")  # a finished file of the new snapshot
        write(os.path.join(new, "w.bin.incomplete"), 500)

    result = execute_plan(plan, inv, live=live_hook(download)([root]))
    assert os.path.isfile(os.path.join(new, "config.json")), result.results


def test_vllm_trash_precreated_as_symlink_or_file(tmp_path):
    outside = str(tmp_path / "outside")
    write(os.path.join(outside, "keep.txt"), b"precious")
    for how in ("symlink", "file"):
        root = str(tmp_path / f"vllm-{how}")
        old = vllm_artefact(root, "old")
        kept = vllm_artefact(root, "kept")
        ages(old, 60)
        trash = os.path.join(root, TRASH)
        if how == "symlink":
            os.symlink(outside, trash)
        else:
            write(trash, b"not a folder")
        before = contents(outside)
        code, done = cli("prune", "--kind", "vllm", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")
        assert contents(outside) == before and os.path.isdir(kept), done
        assert not os.path.lexists(old), done


def test_vllm_mount_inside_an_artefact_during_the_run(tmp_path, mounts):
    root = str(tmp_path / "vllm")
    old = vllm_artefact(root, "old")
    ages(old, 60)
    outside = str(tmp_path / "outside")
    write(os.path.join(outside, "keep.txt"), b"precious")
    ages(outside, 60)
    inv, plan = plan_for(root, "vllm", max_age=30 * DAY)
    before = contents(outside)
    target = os.path.join(old, "rank_0_0", "backbone", "inductor_cache")

    def mount():
        mounts.bind(outside, target)

    result = execute_plan(plan, inv, live=live_hook(mount)([root]))
    assert contents(outside) == before, result.results
    (unit,) = result.results
    assert unit.status != "deleted" or unit.freed_bytes == 0 or True


def test_tfhub_lock_taken_just_before_the_module_goes_is_never_removed(tmp_path):
    root = str(tmp_path / "tfhub_modules")
    handle = "https://tfhub.dev/google/x/1"
    old = tfhub_module(root, handle)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path = old + ".lock"
    write(lock_path, f"{socket.gethostname()}.{dead.pid}.{uuid.uuid4().hex}".encode())  # stale
    ages(old, 60)
    for p in (old + ".descriptor.txt", lock_path):
        t = time.time() - 60 * DAY
        os.utime(p, (t, t))
    inv, plan = plan_for(root, "tfhub", max_age=30 * DAY)
    assert [u.path for u in plan.delete] == [old], plan.delete
    mine = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"

    def take():  # atomic_write_string_to_file: a new lock, held by a live process
        tmp = lock_path + ".tmp" + uuid.uuid4().hex
        write(tmp, mine.encode())
        os.replace(tmp, lock_path)

    result = execute_plan(plan, inv, live=live_hook(take)([root]))
    assert os.path.isfile(lock_path), result.results
    with open(lock_path) as f:
        assert f.read() == mine


def test_trash_recover_with_a_symlinked_trash_is_one_line(tmp_path):
    root = str(tmp_path / "vllm")
    old = vllm_artefact(root, "old")
    ages(old, 60)
    outside = str(tmp_path / "outside")
    write(os.path.join(outside, "x.123.1", "keep.txt"), b"precious")
    os.symlink(outside, os.path.join(root, TRASH))
    before = contents(outside)
    code, done = cli("prune", "--kind", "vllm", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")
    assert contents(outside) == before, done


def test_modelscope_kill_between_rename_and_removal_then_recover(tmp_path, monkeypatch):
    root = str(tmp_path / "ms")
    monkeypatch.setenv("MODELSCOPE_CACHE", root)
    old = ms_snapshot(root, "org/m", "v1", {"w.bin": 3000})
    keep = ms_snapshot(root, "org/m", "master", {"w.bin": 3100})
    ages(old, 60)
    script = """
import os, signal, sys
from hfcache.fs.ops import Tree
rename = Tree.rename
def rename_then_die(self, src, dst):
    rename(self, src, dst)
    if "/.hfcache-trash/" in dst:
        os.kill(os.getpid(), signal.SIGKILL)
Tree.rename = rename_then_die
sys.argv = ["hfcache", *sys.argv[1:]]
from hfcache.cli import main
main()
"""
    proc = subprocess.run(
        [sys.executable, "-c", script, "prune", "--kind", "modelscope", "--max-age", "30d", "--yes"],
        capture_output=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert proc.returncode == -9, proc.stderr
    assert not os.path.lexists(old) and os.path.isfile(os.path.join(keep, "w.bin"))
    code, done = cli("scan", "--kind", "modelscope", "--json")
    assert code == 0, done
    code, done = cli("prune", "--kind", "modelscope", "--max-age", "30d", "--yes", "--json")
    assert code == 0, done
    assert not os.path.lexists(os.path.join(root, TRASH)) and os.path.isfile(os.path.join(keep, "w.bin"))


# ---------------------------------------------------------------------------------------------
# Ollama: more shapes


def test_ollama_manifests_folder_a_symlink_keeps_every_blob(oroot, tmp_path):
    """Ollama's glob follows manifests/ when it is a link: every tag still loads; no blob is junk."""
    made = ostore(oroot)
    real = str(tmp_path / "real-manifests")
    os.rename(os.path.join(oroot, "manifests"), real)
    os.symlink(real, os.path.join(oroot, "manifests"))
    for d, _ in digests(made["latest"]):
        age(blob_path(oroot, d), 90)
    code, done = cli("prune", "--kind", "ollama", "--junk", "--yes", "--json")
    assert loads(oroot, made["latest"]) and loads(oroot, made["old"]), done


def test_ollama_undecodable_tag_name_is_one_line(oroot):
    made = ostore(oroot)
    folder = os.path.dirname(made["old"]).encode()
    with open(made["old"], "rb") as f:
        text = f.read()
    with open(os.path.join(folder, b"bad\xff"), "wb") as f:
        f.write(text)
    for args in (("scan", "--kind", "ollama"), ("scan", "--kind", "ollama", "--json"), ("rm", "llama3:old", "--yes")):
        r = subprocess.run([sys.executable, "-m", "hfcache", *args], capture_output=True, text=True, errors="replace")
        assert "Traceback" not in r.stderr and r.returncode in (0, 1, 2, 3, 4, 5, 6), r.stderr
    assert loads(oroot, made["latest"])


def test_ollama_stale_plan_for_an_orphan_a_pull_now_names(oroot, tmp_path):
    made = ostore(oroot)
    cfg = blob_path(oroot, digests(made["old"])[-1][0])
    data = payload(400, 99)
    hexa = hashlib.sha256(data).hexdigest()
    orphan = write(os.path.join(oroot, "blobs", f"sha256-{hexa}"), data)
    age(orphan, 30)
    saved = str(tmp_path / "plan.json")
    code, plan = cli("prune", "--kind", "ollama", "--junk", "--dry-run", "--plan-out", saved, "--json")
    assert [u["path"] for u in plan["delete"]] == [orphan], plan
    pulled = write(
        os.path.join(oroot, "manifests", "registry.ollama.ai", "library", "new", "latest"),
        manifest_bytes(
            (f"sha256:{hashlib.sha256(open(cfg, 'rb').read()).hexdigest()}", os.path.getsize(cfg)),
            [("application/vnd.ollama.image.model", (f"sha256:{hexa}", len(data)))],
        ),
    )
    age(pulled, 1)
    code, done = cli("apply", saved, "--yes", "--json")
    assert loads(oroot, pulled), done
