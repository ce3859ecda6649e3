"""``hfcache prune --name GLOB --type TYPE``: a scope narrows what a prune may delete, and nothing else.

Out of the scope nothing is deleted and nothing is listed (the plan does not speak of it),
while the quotas go on measuring what they measure: ``--max-size`` the whole cache,
``--min-free`` the whole file system. On caches built by the real huggingface_hub client,
and (for junk of every sort) on hand-built inventories, as the policy tests build them.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from huggingface_hub import scan_cache_dir

import hfcache.prune
from hfcache.model import CacheInventory, Inventory, Item, Leftover, OrphanFile, PartialFile, SharedPayload
from hfcache.plan.build import make_plan
from hfcache.plan.query import Scope, matching_glob
from hfcache.plan.settings import Policy, Settings
from tests.fakehub import FakeHub
from tests.support import (
    DAY,
    NOW,
    age_everything,
    assert_kept_revisions_load_offline,
    build_rich_cache,
    cli,
    get,
    payload,
    rev,
    run_cli,
)
from tests.trees import commit, write


@pytest.fixture
def rich_root(tmp_path):
    """build_rich_cache's hub cache, plus stale junk in two repos (a partial, a removed revision's leftovers)."""
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        build_rich_cache(hub, root)
    old = time.time() - 3 * DAY
    for folder in ("models--org--model", "models--org--moving", "datasets--org--data"):
        stale = write(os.path.join(root, folder, "blobs", "f" * 40 + ".incomplete"), 700)
        os.utime(stale, (old, old))
        write(os.path.join(root, folder, "trees", commit(f"gone from {folder}") + ".json"), b'{"files": {}}')
    return root


def hub_freed(root: str, plan: dict) -> int:
    revisions = [u["revision"] for u in plan["delete"] if u["what"] == "revision"]
    return scan_cache_dir(root).delete_revisions(*revisions).expected_freed_size if revisions else 0


def prune(root: str, *args: str) -> dict:
    code, plan = cli("prune", "--cache-dir", root, *args, "--dry-run", "--json")
    assert code == 0, plan
    assert isinstance(plan, dict)
    return plan


def units(plan: dict, part: str) -> set[tuple[str, str | None, str]]:
    return {(u["id"], u["revision"], u["path"]) for u in plan[part]}


def in_scope(unit: dict, globs: tuple[str, ...]) -> bool:
    return unit["id"] is not None and matching_glob(unit["id"], globs) is not None


POLICIES = {
    "keep-1": ["--keep", "1"],
    "max-age": ["--max-age", "30d"],
    "junk": ["--junk"],
    "keep-1-max-age-junk": ["--keep", "1", "--max-age", "30d", "--junk"],
}
SCOPES = {
    "one repo": ("org/model",),
    "a glob, any case": ("ORG/MOD*",),
    "two globs": ("org/moving", "*/data"),
}


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("policy", POLICIES)
def test_a_scope_is_the_whole_plan_restricted_to_it(rich_root, policy, scope):
    """Without a quota, a scoped plan is exactly the unscoped plan's units inside the scope: no more, no fewer."""
    age_everything(rich_root, 60, but=("models--org--moving",))
    globs = SCOPES[scope]
    whole = prune(rich_root, *POLICIES[policy])
    scoped = prune(rich_root, *POLICIES[policy], *(a for g in globs for a in ("--name", g)))
    for part in ("delete", "keep"):
        inside = {(u["id"], u["revision"], u["path"]) for u in whole[part] if in_scope(u, globs)}
        assert units(scoped, part) == inside, part
        assert all(in_scope(u, globs) for u in scoped[part]), part
    assert any(not in_scope(u, globs) for u in whole["delete"]), "the scope leaves something the policy selects"
    assert scoped["delete"], "and takes something"
    assert scoped["reclaim_bytes"] == sum(u["reclaim_bytes"] for u in scoped["delete"])
    junkless = {**scoped, "delete": [u for u in scoped["delete"] if u["what"] == "revision"]}
    assert sum(u["reclaim_bytes"] for u in junkless["delete"]) == hub_freed(rich_root, junkless)


def test_out_of_scope_stays_and_still_loads_after_a_real_run(rich_root, monkeypatch):
    age_everything(rich_root, 60)
    before = scan_cache_dir(rich_root)
    code, done = cli("prune", "--cache-dir", rich_root, "--max-age", "30d", "--junk", "--name", "org/mov*", "--yes", "--json")
    assert code == 0, done
    assert {u["id"] for u in done["delete"]} == {"org/moving"}
    assert {u["status"] for u in done["delete"]} == {"deleted"}
    assert not os.path.exists(os.path.join(rich_root, "models--org--moving"))
    for folder in ("models--org--model", "datasets--org--data"):  # their junk was out of scope: still there
        assert os.path.exists(os.path.join(rich_root, folder, "blobs", "f" * 40 + ".incomplete"))
    deleted = {u["revision"] for u in done["delete"]}
    assert {r.repo_id for r in scan_cache_dir(rich_root).repos} == {r.repo_id for r in before.repos} - {"org/moving"}
    assert_kept_revisions_load_offline(rich_root, before, deleted, monkeypatch)


def test_type_dataset_prunes_only_datasets(tmp_path):
    """A model and a dataset with the same id: --type tells them apart, their junk included."""
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        for repo_type in ("model", "dataset", "space"):
            for n in range(2):
                hub.push("org/same", {"f.bin": payload(100 + n, n)}, repo_type=repo_type)
                get(hub, root, "org/same", "f.bin", repo_type=repo_type)
    old = time.time() - 3 * DAY
    for folder in ("models--org--same", "datasets--org--same"):
        os.utime(write(os.path.join(root, folder, "blobs", "e" * 40 + ".incomplete"), 70), (old, old))
    age_everything(root, 60)
    plan = prune(root, "--max-age", "30d", "--junk", "--type", "dataset")
    assert {(u["type"], u["what"]) for u in plan["delete"]} == {("dataset", "revision"), (None, "partial")}
    assert len([u for u in plan["delete"] if u["what"] == "revision"]) == 2
    assert all(u["path"].startswith(os.path.join(root, "datasets--org--same")) for u in plan["delete"])
    assert plan["keep"] == []
    both = prune(root, "--max-age", "30d", "--junk", "--type", "dataset", "--type", "space", "--name", "org/*")
    assert {u["type"] for u in both["delete"] if u["what"] == "revision"} == {"dataset", "space"}
    assert not any(u["path"].startswith(os.path.join(root, "models--")) for u in both["delete"])
    # scan --type files the partial downloads the same way (it used to go by id: both showed under either type)
    for item_type in ("model", "dataset"):
        code, shown = cli("scan", "--cache-dir", root, "--type", item_type, "--json")
        partial = os.path.join(root, f"{item_type}s--org--same", "blobs", "e" * 40 + ".incomplete")
        assert [p["path"] for p in shown["caches"][0]["partial_files"]] == [partial]


def test_max_size_measures_the_whole_cache_and_evicts_only_in_scope(rich_root):
    total = scan_cache_dir(rich_root).size_on_disk
    moving = 1500 + 1600  # org/moving's two revisions: far less than what the cache holds
    # 1 kB over: org/moving's least recently used revision (the detached one) is enough.
    plan = prune(rich_root, "--max-size", str(total - 1000), "--name", "org/moving")
    assert [(u["id"], u["refs"]) for u in plan["delete"]] == [("org/moving", [])]
    assert plan["delete"][0]["reasons"][0].startswith("max-size: least recently used")
    assert plan["warnings"] == [] and plan["reclaim_bytes"] == 1500
    # Unscoped, the same quota evicts the least recently used of the whole cache instead.
    assert {u["id"] for u in prune(rich_root, "--max-size", str(total - 1000))["delete"]} != {"org/moving"}

    # 5 kB over: the scope cannot get there. Its last revision stays (no --allow-remove-all), and the plan says so.
    short = prune(rich_root, "--max-size", str(total - 5000), "--name", "org/moving")
    assert [u["refs"] for u in short["delete"]] == [[]]
    assert [(u["id"], u["refs"]) for u in short["keep"]] == [("org/moving", ["main"])]
    assert "--allow-remove-all" in short["keep"][0]["reasons"][-1]
    [warning] = short["warnings"]
    assert f"stays 3.5 kB over max_size {(total - 5000) / 1000:.1f} kB" in warning
    assert "everything left is out of the scope or kept by a rule" in warning
    everything = prune(rich_root, "--max-size", str(total - 5000), "--name", "org/moving", "--allow-remove-all")
    assert {u["id"] for u in everything["delete"]} == {"org/moving"} and everything["reclaim_bytes"] == moving
    assert everything["keep"] == []
    assert "stays 1.9 kB over max_size" in everything["warnings"][0]
    assert "out of the scope" in everything["warnings"][0]


def test_min_free_measures_the_whole_file_system_and_evicts_only_in_scope(rich_root, monkeypatch):
    monkeypatch.setattr(hfcache.prune, "disk_of", lambda root: hfcache.prune.Disk(1, 10**9, 10**6 - 2000))
    plan = prune(rich_root, "--min-free", "1MB", "--name", "org/moving", "--allow-remove-all")
    assert {u["id"] for u in plan["delete"]} == {"org/moving"}
    assert plan["reclaim_bytes"] == 3100 and plan["warnings"] == []
    monkeypatch.setattr(hfcache.prune, "disk_of", lambda root: hfcache.prune.Disk(1, 10**9, 10**6 - 5000))
    short = prune(rich_root, "--min-free", "1MB", "--name", "org/moving", "--allow-remove-all")
    assert short["reclaim_bytes"] == 3100
    [warning] = short["warnings"]
    assert "the file system stays 1.9 kB short of min_free" in warning and "out of the scope" in warning


def test_the_plan_states_its_scope_and_a_saved_plan_keeps_it(rich_root, tmp_path):
    saved = str(tmp_path / "plan.json")
    plan = prune(rich_root, "--keep", "1", "--name", "org/mo*", "--name", "*/data", "--type", "model", "--plan-out", saved)
    scope_line = "scope: only items of type model whose id matches 'org/mo*' or '*/data'"
    assert scope_line in plan["policy"]
    assert json.load(open(saved))["policy"] == plan["policy"]
    shown = run_cli("apply", saved, "--dry-run")
    assert shown.exit_code == 0 and scope_line in shown.stdout
    table = run_cli("prune", "--cache-dir", rich_root, "--keep", "1", "--type", "dataset", "--dry-run")
    assert "scope: only items of type dataset" in table.stdout
    assert not any(line.startswith("scope") for line in prune(rich_root, "--keep", "1")["policy"]), "no scope, no line"


def test_policy_file_rules_keep_applying_inside_the_scope(rich_root, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nkeep: 3\nprotect: ['org/pinned']\nmodels:\n  'org/model': {keep: 1}\n")
    config = ("--config", str(policy))
    plan = prune(rich_root, *config, "--name", "org/model")
    assert {u["id"] for u in plan["delete"]} == {"org/model"} and len(plan["delete"]) == 2
    assert plan["policy"][0] == f"file: {policy}"
    assert prune(rich_root, *config, "--name", "org/moving")["delete"] == []  # keep: 3 there
    age_everything(rich_root, 60)
    protected = prune(rich_root, *config, "--max-age", "30d", "--name", "org/p*")
    assert protected["delete"] == []
    [kept] = protected["keep"]  # protected inside the scope: listed as kept, as before
    assert kept["id"] == "org/pinned" and kept["reasons"][-1] == "protect: model matches 'org/pinned'"


def test_a_glob_matching_nothing_warns_and_deletes_nothing(rich_root):
    """A scheduled prune of a model not downloaded yet: a warning, exit 0, an empty plan."""
    age_everything(rich_root, 60)
    before = scan_cache_dir(rich_root).size_on_disk
    result = run_cli("prune", "--cache-dir", rich_root, "--max-age", "1s", "--name", "nobody/*", "--yes", "--json")
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["delete"] == [] and plan["keep"] == []
    expected = "scope: no item in the caches scanned matches 'nobody/*': nothing of it to prune"
    assert plan["warnings"] == [expected]
    assert f"warning: {expected}" in result.stderr
    assert scan_cache_dir(rich_root).size_on_disk == before
    # One glob of two matching nothing is said too; the other one prunes.
    plan = prune(rich_root, "--max-age", "1s", "--allow-remove-all", "--name", "org/moving", "--name", "org/typo")
    assert {u["id"] for u in plan["delete"]} == {"org/moving"}
    assert plan["warnings"] == ["scope: no item in the caches scanned matches 'org/typo': nothing of it to prune"]
    # A type that exists, but not with that name.
    plan = prune(rich_root, "--max-age", "1s", "--type", "space", "--name", "org/model")
    assert plan["warnings"] == ["scope: no item of type space in the caches scanned matches 'org/model': nothing of it to prune"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type", "banana"], "unknown item type 'banana'; known here: model, dataset, space, kernel"),
        (["--kind", "keras", "--type", "checkpoint"], "unknown item type 'checkpoint'; known here: model, dataset"),
    ],
)
def test_a_bad_type_is_one_line_and_exit_2(rich_root, args, message):
    before = scan_cache_dir(rich_root).size_on_disk
    result = run_cli("prune", "--cache-dir", rich_root, "--max-age", "1s", *args, "--yes")
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert message in line
    assert scan_cache_dir(rich_root).size_on_disk == before


# -- junk of every sort, on a hand-built inventory -------------------------------------------------


def test_junk_is_in_scope_with_its_item_and_cache_wide_junk_is_out():
    old = NOW - 3 * DAY
    model = Item("huggingface", "org/a", "model", "/c/models--org--a", revisions=(rev("a", "r", days_old=1),))
    dataset = Item("huggingface", "org/a", "dataset", "/c/datasets--org--a", revisions=(rev("d", "r", days_old=1),))
    other = Item("huggingface", "org/b", "model", "/c/models--org--b")
    cache = CacheInventory(
        "huggingface",
        "/c",
        items=(model, dataset, other),
        partial_files=(
            PartialFile("/c/models--org--a/blobs/e1.incomplete", "org/a", 10, old, "resumable"),
            PartialFile("/c/datasets--org--a/blobs/e2.incomplete", "org/a", 20, old, "resumable"),
            PartialFile("/c/models--org--c/blobs/e3.incomplete", "org/c", 40, old, "resumable"),  # no item (yet)
            PartialFile("/c/tmp_123", None, 80, old, "temporary"),
        ),
        orphan_files=(OrphanFile("/c/models--org--a/blobs/o1", "org/a", 100, old, old),),
        unreferenced_payloads=(SharedPayload("/c/blobs/aa/" + "a" * 64, 1000, old, old, has_manifest=True),),
        leftovers=(Leftover("/c/models--org--b", "org/b", None, 0, old),),
    )
    inventory = Inventory((cache,), NOW)
    policy = Policy(overrides=Settings(junk=True))

    def deleted(scope: Scope) -> list[str]:
        return sorted(u.path.rsplit("/", 2)[-1] for u in make_plan(inventory, policy, now=NOW, scope=scope).delete)

    everything = ["a" * 64, "e1.incomplete", "e2.incomplete", "e3.incomplete", "models--org--b", "o1", "tmp_123"]
    assert deleted(Scope()) == everything
    assert deleted(Scope(names=("org/a",))) == ["e1.incomplete", "e2.incomplete", "o1"]
    assert deleted(Scope(names=("org/*",))) == ["e1.incomplete", "e2.incomplete", "e3.incomplete", "models--org--b", "o1"]
    # not org/c's partial under a type: no item says what org/c is
    assert deleted(Scope(types=frozenset({"model"}))) == ["e1.incomplete", "models--org--b", "o1"]
    assert deleted(Scope(types=frozenset({"dataset"}), names=("org/a",))) == ["e2.incomplete"]
