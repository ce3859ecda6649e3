"""``hfcache rm hf://org/name/path``: one file (or folder) of a repo, across its revisions (issue 17, point 4).

The revisions stay, without the file; a blob goes only when no link of the repo reaches it
any more. Caches are built by huggingface_hub's own ``hf_hub_download``; what stays is loaded
offline afterwards. Races are driven through the last hook before a model's units go (the
table of open files), kills by a child process that kills itself at one step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from huggingface_hub import scan_cache_dir

import hfcache
from hfcache.caches.huggingface.trash import TRASH
from hfcache.caches.registry import KINDS
from hfcache.errors import UsageError
from hfcache.execute.run import execute_plan
from hfcache.plan.removal import Target, parse_target, removal_plan
from tests.fakehub import FakeHub
from tests.support import assert_kept_revisions_load_offline, build_rich_cache, contents, live_hook, run_cli
from tests.trees import write

SAFETENSORS = "hf://org/model/model.safetensors"


@pytest.fixture
def rich(tmp_path):
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        commits = build_rich_cache(hub, root)
    return root, commits


def _rm(root: str, *args: str):
    return run_cli("rm", *args, "--cache-dir", root, "--json")


def _repo_bytes(root: str, repo_id: str) -> int:
    return next(r.size_on_disk for r in scan_cache_dir(root).repos if r.repo_id == repo_id)


def _files(root: str, repo_id: str) -> dict[str, set[str]]:
    """commit -> names of its files, as huggingface_hub lists them."""
    repo = next(r for r in scan_cache_dir(root).repos if r.repo_id == repo_id)
    return {r.commit_hash: {str(f.file_path.relative_to(r.snapshot_path)) for f in r.files} for r in repo.revisions}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SAFETENSORS, Target(SAFETENSORS, "org/model", None, "model", "huggingface", "model.safetensors")),
        ("hf://org/model@v1.0/unet/", Target("hf://org/model@v1.0/unet/", "org/model", "v1.0", "model", "huggingface", "unet")),
        (
            "hf://datasets/org/data/data/train.csv",
            Target("hf://datasets/org/data/data/train.csv", "org/data", None, "dataset", "huggingface", "data/train.csv"),
        ),
        (
            "hf://gpt2@main/config.json",
            Target("hf://gpt2@main/config.json", "gpt2", "main", "model", "huggingface", "config.json"),
        ),
        ("hf://org/model/", Target("hf://org/model/", "org/model", None, "model", "huggingface")),
    ],
)
def test_a_path_after_the_repo_names_a_file_as_hf_file_system_does(text, expected):
    assert parse_target(text, kinds=KINDS.values()) == expected


@pytest.mark.parametrize("text", ["hf://org/model/../other/x", "hf://org/model/a//b", "hf://org/model/./x", "hf://org/m@main/.."])
def test_a_path_that_leaves_the_repo_or_is_not_the_hubs_spelling_is_refused(text):
    with pytest.raises(UsageError):
        parse_target(text, kinds=KINDS.values())


def test_a_file_goes_from_every_revision_the_revisions_and_refs_stay_and_the_rest_loads(rich, monkeypatch):
    root, c = rich
    refs = sorted(os.listdir(os.path.join(root, "models--org--model", "refs")))
    size_before, copy_before = _repo_bytes(root, "org/model"), _repo_bytes(root, "org/copy")
    plan = json.loads(_rm(root, SAFETENSORS, "--dry-run").stdout)
    assert {(u["revision"], u["what"], u["file"]) for u in plan["delete"]} == {
        (c[k], "file", "model.safetensors") for k in ("c1", "c2", "c3")
    }
    result = _rm(root, SAFETENSORS, "--yes")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert {u["status"] for u in done["delete"]} == {"deleted"}
    # Counted as huggingface_hub counts: the repo shrank by exactly what was planned and freed.
    assert done["freed_bytes"] == done["reclaim_bytes"] == plan["reclaim_bytes"] == size_before - _repo_bytes(root, "org/model")
    assert plan["reclaim_bytes"] == 7000  # c1/c2's shared blob once, c3's own
    files = _files(root, "org/model")
    assert set(files) == {c["c1"], c["c2"], c["c3"], c["pr"]}  # every revision stays
    assert all("model.safetensors" not in names for names in files.values())
    assert files[c["c1"]] == {"config.json", "unet/diffusion_pytorch_model.bin"}
    assert sorted(os.listdir(os.path.join(root, "models--org--model", "refs"))) == refs
    assert _repo_bytes(root, "org/copy") == copy_before  # the same bytes in another repo: another blob
    assert scan_cache_dir(root).warnings == []
    assert_kept_revisions_load_offline(root, scan_cache_dir(root), set(), monkeypatch)


def test_a_folder_of_one_revision_goes_and_the_folder_with_it(rich, monkeypatch):
    root, c = rich
    result = _rm(root, "hf://org/model@v1.0/unet", "--yes")
    assert result.exit_code == 0, result.output
    [unit] = json.loads(result.stdout)["delete"]
    assert unit["file"] == "unet/diffusion_pytorch_model.bin" and unit["freed_bytes"] == 2048
    snapshot = os.path.join(root, "models--org--model", "snapshots", c["c1"])
    assert sorted(os.listdir(snapshot)) == ["config.json", "model.safetensors"]  # unet/ went, empty
    assert _files(root, "org/model")[c["c2"]] == {"config.json", "model.safetensors"}
    assert_kept_revisions_load_offline(root, scan_cache_dir(root), set(), monkeypatch)


def test_a_blob_another_revision_still_links_stays_and_frees_nothing(rich, monkeypatch):
    root, c = rich
    before = scan_cache_dir(root)
    result = _rm(root, "hf://org/model@v1.1/model.safetensors", "--yes")
    assert result.exit_code == 0, result.output
    [unit] = json.loads(result.stdout)["delete"]
    assert unit["revision"] == c["c2"] and unit["reclaim_bytes"] == unit["freed_bytes"] == 0
    assert "model.safetensors" in _files(root, "org/model")[c["c1"]]  # v1.0 still loads it
    assert_kept_revisions_load_offline(root, scan_cache_dir(root), set(), monkeypatch)
    assert scan_cache_dir(root).size_on_disk == before.size_on_disk


def test_a_file_no_named_revision_holds_removes_nothing(rich):
    root, _ = rich
    before = contents(root)
    for target in ("hf://org/model/nothing.bin", "hf://org/model@v1.1/unet"):
        result = _rm(root, target, "org/moving", "--yes")
        assert result.exit_code == 2 and "nothing deleted" in result.stderr, result.output
        assert contents(root) == before


def test_a_saved_plan_of_files_applies_and_a_forged_path_is_skipped(rich, tmp_path):
    root, c = rich
    saved = json.loads(_rm(root, "hf://org/model@main/model.safetensors", "--dry-run").stdout)
    [unit] = saved["delete"]
    forged = dict(saved, delete=[dict(unit, file="config.json")])  # the path is not that file's entry
    for name, doc in (("forged.json", forged), ("plan.json", saved)):
        with open(tmp_path / name, "w") as f:
            json.dump(doc, f)
    bad = run_cli("apply", str(tmp_path / "forged.json"), "--yes", "--json")
    [result] = json.loads(bad.stdout)["delete"]
    assert result["status"] == "skipped" and "not that revision's entry" in result["error"]
    assert os.path.lexists(unit["path"])
    good = run_cli("apply", str(tmp_path / "plan.json"), "--yes", "--json")
    assert good.exit_code == 0, good.output
    assert json.loads(good.stdout)["delete"][0]["status"] == "deleted"
    assert not os.path.lexists(unit["path"])


@pytest.mark.parametrize("edit", [{"file": "../../x"}, {"file": None}, {"what": "revision"}])
def test_a_plan_file_with_a_malformed_file_unit_is_refused_whole(rich, tmp_path, edit):
    root, _ = rich
    saved = json.loads(_rm(root, SAFETENSORS, "--dry-run").stdout)
    saved["delete"][0].update(edit)
    if edit.get("what") == "revision":
        saved["delete"][0]["file"] = "model.safetensors"  # what says revision, file says file
    with open(tmp_path / "plan.json", "w") as f:
        json.dump(saved, f)
    before = contents(root)
    result = run_cli("apply", str(tmp_path / "plan.json"), "--yes")
    assert result.exit_code == 2 and "file" in result.stderr, result.output
    assert contents(root) == before


# ---------------------------------------------------------------------------------------------
# Races: the disk changes between the plan and each unit


def _plan(root: str, *targets: str):
    inventory = hfcache.scan([root])
    return inventory, removal_plan(inventory, [parse_target(t, kinds=KINDS.values()) for t in targets], now=time.time())


def test_a_folder_swapped_for_a_symlink_during_the_run_redirects_no_deletion(rich, tmp_path):
    root, c = rich
    outside = str(tmp_path / "root-only")
    write(os.path.join(outside, "diffusion_pytorch_model.bin"), b"precious")
    inventory, plan = _plan(root, "hf://org/model@v1.0/unet/diffusion_pytorch_model.bin")
    unet = os.path.join(root, "models--org--model", "snapshots", c["c1"], "unet")

    def plant():
        shutil.rmtree(unet)
        os.symlink(outside, unet)

    before = contents(outside)
    result = execute_plan(plan, inventory, live=live_hook(plant)([]))
    assert contents(outside) == before
    [unit] = result.results
    assert unit.status == "failed" and "symlink" in (unit.error or ""), unit


def test_a_link_a_download_adds_during_the_run_keeps_the_blob(rich, monkeypatch):
    """A new revision reusing the blob (hf_hub_download links an existing blob) after the plan: it stays linked."""
    root, c = rich
    inventory, plan = _plan(root, "hf://org/model@main/model.safetensors")
    [unit] = plan.delete
    assert unit.reclaim_bytes == 4000
    repo = os.path.join(root, "models--org--model")
    blob = os.readlink(unit.path)
    newer = os.path.join(repo, "snapshots", "f" * 40)

    def download():
        os.makedirs(newer)
        os.symlink(blob, os.path.join(newer, "model.safetensors"))

    result = execute_plan(plan, inventory, live=live_hook(download)([]))
    [done] = result.results
    assert done.status == "deleted" and done.freed_bytes == 0
    with open(os.path.join(newer, "model.safetensors"), "rb") as f:
        assert len(f.read()) == 4000  # the new revision's link resolves
    assert not os.path.exists(os.path.join(root, TRASH))  # read before it was set aside: it never moved


def test_a_file_a_process_holds_open_is_skipped(rich):
    root, c = rich
    entry = os.path.join(root, "models--org--model", "snapshots", c["c3"], "model.safetensors")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; f=open(sys.argv[1],'rb'); print('open', flush=True); time.sleep(60)", entry],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        result = _rm(root, "hf://org/model@main/model.safetensors", "--yes")
        [unit] = json.loads(result.stdout)["delete"]
        assert unit["status"] == "skipped" and "in use" in unit["error"], unit
        assert os.path.exists(entry)
    finally:
        holder.kill()
        holder.wait()


KILL_AT = """
import os, signal, sys
from hfcache.fs.ops import Tree
unlink, rename = Tree.unlink, Tree.rename
where = sys.argv[1]
def unlink_then_die(self, path, **kw):
    out = unlink(self, path, **kw)
    if where == "after-link" and "/snapshots/" in path:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
def rename_then_die(self, src, dst):
    rename(self, src, dst)
    if where == "after-set-aside" and "+blob." in dst:
        os.kill(os.getpid(), signal.SIGKILL)
Tree.unlink, Tree.rename = unlink_then_die, rename_then_die
sys.argv = ["hfcache", *sys.argv[2:]]
from hfcache.cli import main
main()
"""


@pytest.mark.parametrize("where", ["after-link", "after-set-aside"])
def test_a_kill_mid_file_leaves_a_cache_that_loads_and_the_next_runs_finish(rich, monkeypatch, where):
    root, c = rich
    target = "hf://org/model@main/model.safetensors"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT, where, "rm", target, "--cache-dir", root, "--yes"], capture_output=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    assert_kept_revisions_load_offline(root, scan_cache_dir(root), set(), monkeypatch)  # nothing dangles
    blobs = os.path.join(root, "models--org--model", "blobs")
    before = set(os.listdir(blobs))
    # What the kill left is junk the next runs take: an orphan blob, or a blob in the trash.
    result = run_cli("prune", "--cache-dir", root, "--junk", "--junk-grace", "0s", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert os.listdir(os.path.join(root, TRASH)) == []
    assert len(before - set(os.listdir(blobs))) == (1 if where == "after-link" else 0)
    assert _repo_bytes(root, "org/model") == sum(
        os.path.getsize(os.path.join(blobs, b)) for b in os.listdir(blobs)
    )  # no orphan left: every blob is some revision's
    assert_kept_revisions_load_offline(root, scan_cache_dir(root), set(), monkeypatch)


def test_a_file_of_a_damaged_model_stays_and_is_said_with_its_name(rich):
    root, c = rich
    write(os.path.join(root, "models--org--moving", "refs", "v9"), b"f" * 40)  # a ref to no commit: damage
    before = contents(root)
    result = run_cli("rm", "hf://org/moving/weights.bin", "--cache-dir", root, "--yes")
    assert result.exit_code == 1
    assert f"org/moving@{c['d2']} weights.bin stays: damaged" in result.stderr, result.stderr
    after = contents(root)
    after.pop(".locks/hfcache-prune.lock", None)  # taken to finish what an interrupted run may have left
    assert after == before
