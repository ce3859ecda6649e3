"""``hfcache rm``: named repos and revisions go through prune's plan, question, checks and audit (issue 17, point 4).

Caches are built by huggingface_hub's own ``hf_hub_download`` against the loopback hub, and
what stays is loaded offline afterwards, by commit and by every ref.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from huggingface_hub import scan_cache_dir

from hfcache.caches.registry import KINDS
from hfcache.caches.scan import scan_caches
from hfcache.errors import UsageError
from hfcache.execute.audit import read_log
from hfcache.model import Inventory
from hfcache.plan.removal import Target, parse_target, removal_plan
from tests.fakehub import FakeHub
from tests.support import NOW, assert_kept_revisions_load_offline, build_rich_cache, contents, rev, run_cli, torch_cache
from tests.trees import write


@pytest.fixture
def rich(tmp_path):
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        commits = build_rich_cache(hub, root)
    return root, commits


def _rm(root: str, *args: str, log: str | None = None):
    extra = ["--log", log] if log else []
    return run_cli("rm", *args, "--cache-dir", root, "--json", *extra)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/model", Target("org/model", "org/model")),
        ("org/model@v1.0", Target("org/model@v1.0", "org/model", "v1.0")),
        ("hf://models/org/model@main", Target("hf://models/org/model@main", "org/model", "main", "model", "huggingface")),
        ("hf://datasets/org/data", Target("hf://datasets/org/data", "org/data", None, "dataset", "huggingface")),
        ("hf://spaces/org/demo", Target("hf://spaces/org/demo", "org/demo", None, "space", "huggingface")),
        ("hf://org/model", Target("hf://org/model", "org/model", None, "model", "huggingface")),
    ],
)
def test_targets_as_hf_cache_rm_takes_them(text, expected):
    assert parse_target(text, kinds=KINDS.values()) == expected


@pytest.mark.parametrize("text", ["", "@main", "org/model@", "/etc/passwd", "org/x\nmain", "hf://models/"])
def test_a_target_that_names_nothing_parseable_is_a_usage_error(text):
    with pytest.raises(UsageError):
        parse_target(text, kinds=KINDS.values())


def test_a_whole_repo_goes_and_everything_else_still_loads(rich, tmp_path, monkeypatch):
    root, commits = rich
    before = scan_cache_dir(root)
    log = str(tmp_path / "audit.log")
    result = _rm(root, "org/moving", "--yes", log=log)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {u["revision"] for u in doc["delete"]} == {commits["d1"], commits["d2"]}
    assert all(u["status"] == "deleted" and u["item_removed"] for u in doc["delete"])
    assert not os.path.exists(os.path.join(root, "models--org--moving"))
    assert [r.repo_id for r in scan_cache_dir(root).repos if r.repo_id == "org/moving"] == []
    assert {line["status"] for line in read_log(log) if line["status"] != "started"} == {"deleted"}
    assert_kept_revisions_load_offline(root, before, {commits["d1"], commits["d2"]}, monkeypatch)


def test_one_revision_by_ref_goes_with_its_ref_and_the_plan_says_so(rich, monkeypatch):
    root, commits = rich
    before = scan_cache_dir(root)
    plan = json.loads(_rm(root, "org/model@v1.1", "--dry-run").stdout)
    [unit] = plan["delete"]
    assert unit["revision"] == commits["c2"] and "its refs go too: v1.1" in unit["reasons"][0]
    assert plan["dry_run"] is True and os.path.isdir(unit["path"])  # a dry run deletes nothing
    done = _rm(root, "org/model@v1.1", "--yes")
    assert done.exit_code == 0, done.output
    assert not os.path.exists(unit["path"])
    assert not os.path.exists(os.path.join(root, "models--org--model", "refs", "v1.1"))
    assert_kept_revisions_load_offline(root, before, {commits["c2"]}, monkeypatch)


def test_a_commit_and_an_hf_uri_of_another_type(rich):
    root, commits = rich
    plan = json.loads(_rm(root, f"org/pinned@{commits['pinned']}", "hf://datasets/org/data", "--dry-run").stdout)
    assert {(u["id"], u["type"]) for u in plan["delete"]} == {("org/pinned", "model"), ("org/data", "dataset")}
    # hf://models/org/data names a model, and there is none: nothing at all is removed.
    before = contents(root)
    refused = _rm(root, "hf://models/org/data", "org/pinned", "--yes")
    assert refused.exit_code == 2 and "nothing deleted: 'hf://models/org/data'" in refused.stderr
    assert contents(root) == before


def test_a_typo_removes_nothing_even_beside_real_targets(rich):
    root, _ = rich
    before = contents(root)
    result = _rm(root, "org/model", "org/modle", "--yes")
    assert result.exit_code == 2 and [line for line in result.stderr.splitlines() if line] == [
        "error: not in the caches scanned, so nothing deleted: 'org/modle'"
    ]
    assert contents(root) == before


def test_without_a_terminal_and_without_yes_nothing_goes(rich):
    root, _ = rich
    before = contents(root)
    result = run_cli("rm", "org/moving", "--cache-dir", root)
    assert result.exit_code == 2 and "no terminal" in result.stderr
    assert contents(root) == before


def test_the_safety_checks_of_prune_hold_a_unit_read_since_the_plan_stays(rich, tmp_path):
    """rm goes through execution's live checks: a plan saved, a file read meanwhile, the unit skipped."""
    root, commits = rich
    plan_file = str(tmp_path / "plan.json")
    saved = _rm(root, "org/moving@main", "--dry-run")
    with open(plan_file, "w") as f:
        f.write(saved.stdout)
    [unit] = json.loads(saved.stdout)["delete"]
    blob = os.path.realpath(os.path.join(unit["path"], "weights.bin"))
    st = os.stat(blob)
    os.utime(blob, (st.st_atime + 3600, st.st_mtime))  # read an hour after the plan
    applied = run_cli("apply", plan_file, "--yes", "--json")
    assert applied.exit_code == 0, applied.output
    [result] = json.loads(applied.stdout)["delete"]
    assert result["status"] == "skipped" and "read since the plan" in result["error"]
    assert os.path.isdir(unit["path"])


def test_other_kinds_by_their_ids_and_whole_items_only_when_every_revision_is_named():
    """The plan alone (pure): a torch hub repo's revision by id@name, then the repo by its id."""
    cache = torch_cache(
        ("pytorch/vision", [rev("pytorch/vision", "v0.1", days_old=9), rev("pytorch/vision", "main", days_old=1)])
    )
    inventory = Inventory(caches=(cache,), scanned_at=NOW)
    one = removal_plan(inventory, [parse_target("pytorch/vision@v0.1")], now=NOW)
    assert [(u.revision, u.item_removed, u.reclaim_bytes) for u in one.delete] == [("v0.1", False, 100)]
    both = removal_plan(inventory, [parse_target("pytorch/vision@v0.1"), parse_target("pytorch/vision@main")], now=NOW)
    assert sorted((u.revision, u.item_removed) for u in both.delete) == [("main", True), ("v0.1", True)]
    assert removal_plan(inventory, [parse_target("pytorch/vision")], now=NOW).reclaim_bytes == 200
    with pytest.raises(UsageError, match="nothing deleted: 'pytorch/vision@v9'"):
        removal_plan(inventory, [parse_target("pytorch/vision@v9")], now=NOW)


# ---------------------------------------------------------------------------------------------
# What an adversarial pass found (each test seen failing on the first version of rm)


def _hub(tmp_path, name="hub", **refs_of):
    from tests.trees import commit, repo

    root = str(tmp_path / name)
    a, b, m = commit("a"), commit("b"), commit("m")
    repo(root, "models--org--x", snapshots={a: {"w": "ea"}, b: {"w": "eb"}, m: {"w": "em"}},
         blobs={"ea": 10, "eb": 20, "em": 30}, refs={"main": m, "pr/1": a, "refs/pr/1": b})  # fmt: skip
    repo(root, "datasets--org--x", snapshots={a: {"d": "da"}}, blobs={"da": 5}, refs={"main": a})
    return root, a, b, m


def test_a_ref_is_matched_exactly_not_also_as_refs_slash_it(tmp_path):
    root, a, b, _ = _hub(tmp_path)
    plan = json.loads(_rm(root, "org/x@pr/1", "--type", "model", "--dry-run").stdout)
    assert [u["revision"] for u in plan["delete"]] == [a]  # not b, which refs/pr/1 names


def test_a_uri_names_the_type_it_says_and_type_may_not_say_otherwise(tmp_path):
    root, *_ = _hub(tmp_path)
    before = contents(root)
    refused = _rm(root, "hf://models/org/x", "--type", "dataset", "--yes")
    assert refused.exit_code == 2 and "names a model, not a dataset" in refused.stderr
    plan = json.loads(_rm(root, "hf://datasets/org/x", "--dry-run").stdout)
    assert {u["type"] for u in plan["delete"]} == {"dataset"}
    assert contents(root) == before


@pytest.mark.parametrize("text", ["hf://models/org/x@", "hf://models/", "hf://datasets", "org/x@"])
def test_an_empty_revision_or_name_in_a_uri_is_refused_not_the_whole_repo(tmp_path, text):
    root, *_ = _hub(tmp_path)
    before = contents(root)
    result = _rm(root, text, "--yes")
    assert result.exit_code == 2 and contents(root) == before


def test_a_uri_names_only_its_own_kinds_items(tmp_path, isolated_home):
    """hf:// names hub repos: an item of the same id and type in the datasets library's cache stays."""
    root, *_ = _hub(tmp_path)
    found = removal_plan(
        Inventory(caches=(*scan_caches([root]).caches, _other_kind_cache("org/x", "dataset")), scanned_at=NOW),
        [parse_target("hf://datasets/org/x", kinds=KINDS.values())],
        now=NOW,
    )
    assert {u.kind for u in found.delete} == {"huggingface"}


def _other_kind_cache(ident: str, item_type: str):
    from hfcache.model import CacheInventory, Item, Revision

    rev = Revision("default", f"/other/{ident}/default", size_bytes=1, reclaimable_bytes=1)
    return CacheInventory(
        "datasets", "/other", items=(Item("datasets", ident, item_type, f"/other/{ident}", 1, revisions=(rev,)),)
    )


def test_an_id_in_two_kinds_needs_kind(tmp_path):
    root, *_ = _hub(tmp_path)
    inventory = Inventory(caches=(*scan_caches([root]).caches, _other_kind_cache("org/x", "model")), scanned_at=NOW)
    with pytest.raises(UsageError, match="more than one kind of cache .*--kind"):
        removal_plan(inventory, [parse_target("org/x", item_type="model")], now=NOW)
    chosen = removal_plan(inventory, [parse_target("org/x", item_type="model")], now=NOW, chosen_kinds=["huggingface"])
    assert chosen.delete  # --kind given: what the scan of that kind holds


def test_ids_as_scan_shows_them_round_trip_through_rm():
    """An id with an @ in it (a Keras file) or a URL (a datasets download) is named as scan shows it."""
    for ident in ("models/foo@bar.h5", "https://example.org/data/train.csv"):
        inventory = Inventory(caches=(_other_kind_cache(ident, "download"),), scanned_at=NOW)
        plan = removal_plan(inventory, [parse_target(ident, kinds=KINDS.values())], now=NOW)
        assert [u.id for u in plan.delete] == [ident]


def test_a_plugin_whose_uri_parser_raises_does_not_stop_rm():
    class Broken:
        kind = "broken"

        def parse_uri(self, text):
            raise ValueError("boom")

    assert parse_target("org/x@main", kinds=[Broken(), *KINDS.values()]) == Target("org/x@main", "org/x", "main")


def test_a_target_not_found_is_quoted_in_the_error(tmp_path):
    root, *_ = _hub(tmp_path)
    result = _rm(root, "org/none@\x1b[31mred", "--dry-run")
    assert result.exit_code == 2 and "\x1b" not in result.stderr and "'org/none@\\x1b[31mred'" in result.stderr


def test_a_named_model_that_stays_is_said_on_stderr_and_exits_1(rich):
    """Damaged (a ref to a commit that is not there): kept, with the reason, and rm does not pass for done."""
    root, _ = rich
    write(os.path.join(root, "models--org--moving", "refs", "v9"), b"f" * 40)
    result = run_cli("rm", "org/moving", "--cache-dir", root, "--yes")
    assert result.exit_code == 1
    assert "org/moving@" in result.stderr and "stays: damaged" in result.stderr


def test_a_model_removed_whole_takes_its_stale_junk_and_its_folder(rich, tmp_path):
    """An old partial download in the repo: it goes with the model, not left behind in a repo shell."""
    root, _ = rich
    partial = write(os.path.join(root, "models--org--moving", "blobs", "deadbeef.incomplete"), 500)
    os.utime(partial, (1_000_000_000, 1_000_000_000))  # long stale, its lock free
    result = _rm(root, "org/moving", "--yes")
    assert result.exit_code == 0, result.output
    assert not os.path.exists(os.path.join(root, "models--org--moving"))
    assert "org/moving" not in {r.repo_id for r in scan_cache_dir(root).repos}
    assert _rm(root, "org/moving", "--dry-run").exit_code == 2  # gone: nothing left to name


def test_a_fresh_partial_download_keeps_the_repo_folder_and_is_said(rich):
    """A partial written a moment ago may be a download under way: it stays, and so does the folder around it."""
    root, _ = rich
    partial = write(os.path.join(root, "models--org--moving", "blobs", "cafebabe.incomplete"), 500)
    result = _rm(root, "org/moving", "--yes")
    assert os.path.exists(partial)
    doc = json.loads(result.stdout)
    assert all(u["status"] in ("deleted", "skipped") for u in doc["delete"])


def test_the_spellings_hf_cache_rm_reads_name_the_same_revisions(tmp_path):
    """A bare commit, hf cache ls's ids (model/org/name), an unencoded refs/pr/N in a URI, as huggingface_hub reads them."""
    root, a, b, m = _hub(tmp_path)

    def planned(*targets: str) -> set[tuple[str, str]]:
        result = _rm(root, *targets, "--dry-run")
        assert result.exit_code == 0, result.output
        return {(u["type"], u["revision"]) for u in json.loads(result.stdout)["delete"]}

    assert planned(b) == {("model", b)}  # a commit alone: that revision, wherever it is
    assert planned(a) == {("model", a), ("dataset", a)}  # in both repos that hold it
    assert planned(a.upper(), "--type", "dataset") == {("dataset", a)}
    assert planned("model/org/x@main") == {("model", m)}
    assert planned("dataset/org/x") == {("dataset", a)}
    assert planned("hf://org/x@refs/pr/1") == planned("hf://org/x@refs%2Fpr%2F1") == {("model", b)}


def test_an_id_matches_without_case_only_when_nothing_matches_it_exactly_and_only_one_does(tmp_path):
    from tests.trees import commit, repo

    root, a, *_ = _hub(tmp_path)
    assert {u["id"] for u in json.loads(_rm(root, "ORG/X", "--type", "model", "--dry-run").stdout)["delete"]} == {"org/x"}
    repo(root, "models--Org--X", snapshots={commit("c"): {"w": "ec"}}, blobs={"ec": 1}, refs={"main": commit("c")})
    exact = json.loads(_rm(root, "Org/X", "--dry-run").stdout)["delete"]
    assert {u["id"] for u in exact} == {"Org/X"}
    before = contents(root)
    refused = _rm(root, "ORG/X", "--type", "model", "--yes")
    assert refused.exit_code == 2 and "none exactly" in refused.stderr, refused.output
    assert contents(root) == before


@pytest.mark.parametrize("text", ["hf://model/org/x", "hf://dataset/org/x"])
def test_a_singular_type_prefix_is_refused_as_the_hub_refuses_it(tmp_path, text):
    root, *_ = _hub(tmp_path)
    before = contents(root)
    result = _rm(root, text, "--yes")
    assert result.exit_code == 2 and contents(root) == before


def test_a_repo_with_no_revision_only_what_probes_recorded_goes_whole_with_its_orphans(tmp_path):
    """transformers probing a repo whose files do not exist leaves refs and .no_exist/ only; rm names it and it goes."""
    from tests.trees import commit

    root, *_ = _hub(tmp_path)
    ghost = os.path.join(root, "models--org--ghost")
    write(os.path.join(ghost, ".no_exist", commit("g"), "adapter_config.json"), b"")
    write(os.path.join(ghost, "refs", "main"), commit("g").encode())
    write(os.path.join(ghost, "blobs", "e" * 40), b"x" * 100)  # an old orphan: it goes with the repo
    old = time.time() - 10 * 86400
    os.utime(os.path.join(ghost, "blobs", "e" * 40), (old, old))
    assert "models--org--ghost" in os.listdir(root)
    result = _rm(root, "org/ghost", "--yes")
    assert result.exit_code == 0, result.output
    assert {u["what"] for u in json.loads(result.stdout)["delete"]} == {"orphan", "leftover"}
    assert "models--org--ghost" not in os.listdir(root)
    assert "models--org--x" in os.listdir(root)
