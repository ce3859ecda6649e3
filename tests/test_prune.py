"""``hfcache prune`` and ``apply`` end to end, on caches built by the real huggingface_hub client.

Every plan's freed total must equal huggingface_hub's own ``expected_freed_size`` for the
same revisions, executing it must lower the hub's ``size_on_disk`` by exactly that, and
every revision kept must still load offline afterwards.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from huggingface_hub import scan_cache_dir

import hfcache.prune
from tests.fakehub import FakeHub
from tests.support import (
    DAY,
    age_everything,
    assert_kept_revisions_load_offline,
    build_rich_cache,
    cli,
    get,
    payload,
    publish,
)
from tests.trees import commit, write


@pytest.fixture
def rich_root(tmp_path):
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        build_rich_cache(hub, root)
    return root


def hub_freed(root: str, plan: dict) -> int:
    revisions = [u["revision"] for u in plan["delete"] if u["what"] == "revision"]
    return scan_cache_dir(root).delete_revisions(*revisions).expected_freed_size if revisions else 0


POLICIES = {
    "keep-2": (["--keep", "2"], None),
    "keep-1-per-major": (["--keep", "1", "--keep-per", "major"], None),
    "max-age": (["--max-age", "30d"], lambda root: age_everything(root, 60, but=("models--org--moving",))),
    "max-size": (["--max-size", "9kB"], None),
    "protect": (["--max-age", "30d", "--protect", "org/mod*"], lambda root: age_everything(root, 60)),
}


@pytest.mark.parametrize("name", POLICIES)
def test_plan_matches_huggingface_hub_and_kept_models_still_load(rich_root, name, monkeypatch):
    args, prepare = POLICIES[name]
    if prepare:
        prepare(rich_root)
    before = scan_cache_dir(rich_root)
    code, plan = cli("prune", "--cache-dir", rich_root, *args, "--dry-run", "--json")
    assert code == 0, plan
    assert plan["version"] == 1 and plan["dry_run"] is True
    assert plan["delete"], "every policy here selects something"
    assert plan["reclaim_bytes"] == sum(u["reclaim_bytes"] for u in plan["delete"])
    assert plan["reclaim_bytes"] == hub_freed(rich_root, plan)
    assert all(u["reasons"] for u in plan["delete"] + plan["keep"])
    assert set(scan_cache_dir(rich_root).repos) == set(before.repos), "a dry run deletes nothing"

    code, done = cli("prune", "--cache-dir", rich_root, *args, "--yes", "--json")
    assert code == 0, done
    assert done["dry_run"] is False
    assert [u["path"] for u in done["delete"]] == [u["path"] for u in plan["delete"]]
    assert {u["status"] for u in done["delete"]} == {"deleted"}, [u["error"] for u in done["delete"] if u["status"] != "deleted"]
    assert done["freed_bytes"] == sum(u["freed_bytes"] for u in done["delete"])
    assert done["freed_bytes"] >= done["reclaim_bytes"]  # + the refs files, which the hub does not count
    assert before.size_on_disk - scan_cache_dir(rich_root).size_on_disk == plan["reclaim_bytes"]
    deleted = {u["revision"] for u in done["delete"]}
    assert_kept_revisions_load_offline(rich_root, before, deleted, monkeypatch)


def test_keep_2_keeps_the_two_newest_and_main(rich_root):
    code, plan = cli("prune", "--cache-dir", rich_root, "--keep", "2", "--dry-run", "--json")
    model = [u for u in plan["delete"] if u["id"] == "org/model"]
    # org/model has four revisions: v1.0 (also a short-hash ref), v1.1, main and refs/pr/1
    assert len(model) == 2 and all("older than the 2 latest of org/model" in u["reasons"][0] for u in model)
    kept = {(u["id"], tuple(u["refs"])) for u in plan["keep"]}
    assert ("org/model", ("main",)) in kept
    assert ("org/pinned", ()) in kept, "a revision pinned by commit is never junk, and --keep keeps it"


def test_min_free_uses_the_file_system_free_space(rich_root, monkeypatch):
    before = scan_cache_dir(rich_root)
    monkeypatch.setattr(hfcache.prune, "disk_of", lambda root: hfcache.prune.Disk(1, 10**9, 10**6 - 5000))
    code, plan = cli("prune", "--cache-dir", rich_root, "--min-free", "1MB", "--dry-run", "--json")
    assert code == 0
    assert plan["reclaim_bytes"] >= 5000
    assert plan["reclaim_bytes"] == hub_freed(rich_root, plan)
    assert all(u["reasons"][0].startswith("min-free: least recently used") for u in plan["delete"])
    assert before.size_on_disk == scan_cache_dir(rich_root).size_on_disk


def test_junk_removes_stale_partials_and_leftovers_only(rich_root, monkeypatch):
    repo = os.path.join(rich_root, "models--org--model")
    old = time.time() - 3 * DAY
    stale = write(os.path.join(repo, "blobs", "f" * 40 + ".incomplete"), 700)
    fresh = write(os.path.join(repo, "blobs", "e" * 40 + ".0123abcd.incomplete"), 300)
    gone = commit("removed long ago")
    leftover = write(os.path.join(repo, "trees", gone + ".json"), b'{"format_version": 1, "files": {}}')
    write(os.path.join(repo, ".no_exist", gone, "adapter_config.json"))
    os.utime(stale, (old, old))
    before = scan_cache_dir(rich_root)
    code, plan = cli("prune", "--cache-dir", rich_root, "--junk", "--dry-run", "--json")
    assert code == 0
    assert {u["what"] for u in plan["delete"]} == {"partial", "leftover"}
    assert {u["path"] for u in plan["delete"]} == {stale, leftover, os.path.join(repo, ".no_exist", gone)}
    assert [u["path"] for u in plan["keep"]] == [fresh]
    assert plan["reclaim_bytes"] == 700 + os.path.getsize(leftover)
    code, done = cli("prune", "--cache-dir", rich_root, "--junk", "--yes", "--json")
    assert code == 0 and done["freed_bytes"] == plan["reclaim_bytes"]
    assert not os.path.exists(stale) and os.path.exists(fresh)
    assert_kept_revisions_load_offline(rich_root, before, set(), monkeypatch)


def test_a_policy_file(rich_root, tmp_path, monkeypatch):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nkeep: 3\ncaches:\n  huggingface:\n    models:\n      'org/model': {keep: 1}\n")
    before = scan_cache_dir(rich_root)
    code, plan = cli("prune", "--cache-dir", rich_root, "--config", str(policy), "--dry-run", "--json")
    assert code == 0
    assert {u["id"] for u in plan["delete"]} == {"org/model"}
    assert len(plan["delete"]) == 2  # of its four revisions, org/model keeps its newest and main
    assert plan["reclaim_bytes"] == hub_freed(rich_root, plan)
    assert plan["policy"][0] == f"file: {policy}"
    # the command line overrides the file
    code, wider = cli("prune", "--cache-dir", rich_root, "--config", str(policy), "--keep", "1", "--dry-run", "--json")
    assert {u["id"] for u in wider["delete"]} == {"org/model", "org/moving"}
    code, done = cli("prune", "--cache-dir", rich_root, "--config", str(policy), "--yes", "--json")
    assert code == 0
    assert_kept_revisions_load_offline(rich_root, before, {u["revision"] for u in done["delete"]}, monkeypatch)


def test_no_terminal_and_no_yes_refuses_and_deletes_nothing(rich_root):
    before = scan_cache_dir(rich_root)
    code, out = cli("prune", "--cache-dir", rich_root, "--keep", "1")
    assert code == 2
    assert "refusing to delete without confirmation" in out
    assert scan_cache_dir(rich_root).size_on_disk == before.size_on_disk


def test_an_empty_policy_is_refused(rich_root):
    code, out = cli("prune", "--cache-dir", rich_root, "--dry-run")
    assert code == 2 and "no policy given" in out


def test_max_age_by_atime_is_refused_on_a_noatime_mount(rich_root, monkeypatch):
    monkeypatch.setattr(hfcache.prune, "frozen_atimes", lambda root: "a noatime mount (/)")
    code, out = cli("prune", "--cache-dir", rich_root, "--max-age", "30d", "--dry-run")
    assert code == 2 and "noatime" in out and "--age-by mtime" in out
    code, out = cli("prune", "--cache-dir", rich_root, "--max-age", "30d", "--age-by", "mtime", "--dry-run")
    assert code == 0


def test_saved_plan_is_applied_unit_by_unit(rich_root, tmp_path, monkeypatch):
    saved = str(tmp_path / "plan.json")
    before = scan_cache_dir(rich_root)
    code, plan = cli("prune", "--cache-dir", rich_root, "--keep", "1", "--plan-out", saved, "--dry-run", "--json")
    assert code == 0 and json.load(open(saved)) == plan
    # One unit is read after the plan was made: apply skips it rather than deleting a model in use.
    used = next(u for u in plan["delete"] if u["id"] == "org/moving")
    blob = os.path.realpath(next(os.scandir(used["path"])).path)
    st = os.stat(blob)
    os.utime(blob, (time.time() + 60, st.st_mtime))
    code, done = cli("apply", saved, "--yes", "--json")
    assert code == 0, done
    status = {u["path"]: (u["status"], u["error"]) for u in done["delete"]}
    assert status.pop(used["path"]) == ("skipped", "read since the plan was made")
    assert {s for s, _ in status.values()} == {"deleted"}
    assert os.path.isdir(used["path"])
    assert_kept_revisions_load_offline(
        rich_root, before, {u["revision"] for u in done["delete"] if u["status"] == "deleted"}, monkeypatch
    )
    # applying it again finds nothing left to do: every unit is gone or skipped
    code, again = cli("apply", saved, "--yes", "--json")
    assert {u["status"] for u in again["delete"]} == {"skipped"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ('{"version": 2, "delete": []}', "not an hfcache plan"),
        ('{"version": 1, "delete": [{}]}', "missing field"),
    ],
)
def test_a_bad_plan_file_is_one_line_and_exit_2(tmp_path, content, message):
    bad = tmp_path / "plan.json"
    bad.write_text(content)
    code, out = cli("apply", str(bad), "--yes")
    assert code == 2 and message in out and "Traceback" not in out


def test_shared_payloads_are_swept_by_the_hubs_own_protocol(tmp_path, monkeypatch):
    """Deleting every repo linking to a shared payload frees it once; a payload still linked stays."""

    root = str(tmp_path / "hub")
    same = payload(5000, 8)
    with FakeHub() as hub:
        pointers = {}
        for repo_id in ("org/a", "org/b"):
            hub.push(repo_id, {"model.safetensors": same})
            pointers[repo_id] = get(hub, root, repo_id, "model.safetensors")
            hub.push(repo_id, {"model.safetensors": payload(100, len(repo_id))})
            get(hub, root, repo_id, "model.safetensors")
        for pointer in pointers.values():
            publish(root, pointer, "a1" * 32, len(same))
    before = scan_cache_dir(root)
    code, plan = cli("prune", "--cache-dir", root, "--keep", "1", "--dry-run", "--json")
    assert plan["reclaim_bytes"] == hub_freed(root, plan) == 5000  # the payload, once, for both repos
    code, done = cli("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json")
    assert code == 0 and done["freed_bytes"] >= 5000
    assert not os.path.exists(os.path.join(root, "blobs", "a1", "a1" * 32))
    assert before.size_on_disk - scan_cache_dir(root).size_on_disk == 5000
    assert_kept_revisions_load_offline(root, before, {u["revision"] for u in done["delete"]}, monkeypatch)
