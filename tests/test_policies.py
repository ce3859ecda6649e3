"""Retention policies and their combination, table-driven on hand-built units (borg's prune tests are the model)."""

from __future__ import annotations

import os

import pytest

from hfcache.model import (
    CacheInventory,
    Disk,
    Inventory,
    Item,
    Leftover,
    OrphanFile,
    PartialFile,
    Revision,
    ScanWarning,
    SharedPayload,
)
from hfcache.output.words import describe, describe_all
from hfcache.plan.build import make_plan
from hfcache.plan.policies import Candidate, Case, Decision, Rule, junk, keep_latest, max_age, protect
from hfcache.plan.settings import MinFree, Policy, Settings
from tests.support import (
    DAY,
    NOW,
    THREE,
    rev,
    torch_cache,
)


def cand(name: str, *, item: str = "m", version: str | None = None, days_old: float = 0, default: bool = False) -> Candidate:
    t = NOW - days_old * DAY
    return Candidate(f"/c/{item}/{name}", item, name, version=version, last_accessed=t, last_modified=t, default=default)


def kept(decisions) -> list[str]:
    return sorted(p.rsplit("/", 1)[1] for p, d in decisions.items() if d.keep)


def selected(decisions) -> list[str]:
    return sorted(p.rsplit("/", 1)[1] for p, d in decisions.items() if not d.keep)


# -- keep-latest -----------------------------------------------------------------------------

VERSIONED = [
    cand("a", version="1.0.0", days_old=1),  # newest by date, oldest by version
    cand("b", version="1.0.1", days_old=5),
    cand("c", version="1.2.0", days_old=4),
    cand("d", version="2.0.0", days_old=3),
    cand("e", version="2.0.1", days_old=2),
    cand("f", version="3.0.0rc1", days_old=6),
]


@pytest.mark.parametrize(
    ("n", "per", "expected_kept"),
    [
        (1, None, ["f"]),
        (2, None, ["e", "f"]),
        (10, None, ["a", "b", "c", "d", "e", "f"]),
        (1, "major", ["c", "e", "f"]),  # newest of each major: 1.2.0, 2.0.1, 3.0.0rc1
        (2, "major", ["b", "c", "d", "e", "f"]),
        (1, "minor", ["b", "c", "e", "f"]),  # 1.0 -> 1.0.1, 1.2 -> 1.2.0, 2.0 -> 2.0.1, 3.0 -> rc1
    ],
)
def test_keep_latest_by_version(n, per, expected_kept):
    decisions = keep_latest(VERSIONED, n=n, per=per)
    assert kept(decisions) == expected_kept
    assert selected(decisions) == sorted(set("abcdef") - set(expected_kept))


def test_keep_latest_falls_back_to_dates_when_one_revision_has_no_version():
    units = [cand("a", version="1.0", days_old=1), cand("b", version="2.0", days_old=3), cand("c", days_old=2)]
    assert kept(keep_latest(units, n=2)) == ["a", "c"]
    # with --keep-per a revision without a version is kept: it belongs to no series
    decisions = keep_latest(units, n=1, per="major")
    assert kept(decisions) == ["a", "b", "c"]
    assert decisions["/c/m/c"].case is Case.UNVERSIONED
    assert describe(decisions["/c/m/c"]) == "keep-latest: no version, so no major series to rank it in"


def test_keep_latest_always_keeps_main_and_never_compares_models():
    units = [
        cand("old-main", days_old=9, default=True),
        cand("new", days_old=1),
        cand("mid", days_old=5),
        cand("x", item="other", days_old=100),
    ]
    decisions = keep_latest(units, n=1)
    assert kept(decisions) == ["new", "old-main", "x"]
    assert selected(decisions) == ["mid"]
    assert decisions["/c/m/old-main"][:3] == (Rule.KEEP_LATEST, Case.DEFAULT, True)
    assert describe(decisions["/c/m/mid"]) == "keep-latest: older than the 1 latest of m (by last modified)"


def test_keep_latest_refuses_zero():
    with pytest.raises(ValueError):
        keep_latest(VERSIONED, n=0)


# -- max-age, protect --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit_days", "age_by", "expected"),
    [
        (30, "atime", ["old"]),
        (10, "atime", ["mid", "old"]),
        (20, "atime", ["old"]),  # exactly 20 days is not older than 20 days
        (30, "mtime", ["mid", "old"]),
    ],
)
def test_max_age(limit_days, age_by, expected):
    t = NOW - 20 * DAY
    units = [
        Candidate("/c/m/new", "m", "new", last_accessed=NOW - DAY, last_modified=NOW - DAY),
        Candidate("/c/m/mid", "m", "mid", last_accessed=t, last_modified=NOW - 40 * DAY),
        Candidate("/c/m/old", "m", "old", last_accessed=NOW - 60 * DAY, last_modified=NOW - 60 * DAY),
    ]
    assert selected(max_age(units, now=NOW, older_than=limit_days * DAY, age_by=age_by)) == expected


def test_protect_matches_ids_case_insensitively():
    units = [cand("a", item="meta-llama/Llama-3"), cand("b", item="org/meta-llama-copy"), cand("c", item="Meta-Llama/x")]
    assert sorted(protect(units, globs=["meta-llama/*"])) == ["/c/Meta-Llama/x/c", "/c/meta-llama/Llama-3/a"]


# -- combinations on whole inventories ---------------------------------------------------------


def plan_of(cache: CacheInventory | list[CacheInventory], disks=None, **settings):
    caches = cache if isinstance(cache, list) else [cache]
    protect_globs = tuple(settings.pop("protect_globs", ()))
    policy = Policy(overrides=Settings(**settings), protect=protect_globs)
    return make_plan(Inventory(tuple(caches), NOW), policy, now=NOW, disks=disks)


def names(units) -> list[str]:
    return sorted(u.revision for u in units)


@pytest.mark.parametrize(
    ("settings", "deleted", "kept_listed"),
    [
        ({"keep": 2}, ["a"], ["b", "c", "x"]),
        ({"max_age": 30 * DAY}, ["a", "b", "x"], []),  # max-age may empty a model
        ({"keep": 2, "max_age": 30 * DAY}, ["a"], ["b", "c", "x"]),  # the keep rule saves b and x from max-age
        ({"keep": 1, "max_age": 30 * DAY, "protect_globs": ["n"]}, ["a", "b"], ["c", "x"]),
        ({"max_size": 150}, ["a", "b"], ["c", "x"]),  # LRU; the last revision of each model stays (200 > 150)
        ({"max_size": 150, "allow_remove_all": True}, ["a", "b", "x"], []),  # x, a, b by last access: 100 <= 150
        ({"max_size": 10_000}, [], []),
    ],
)
def test_policy_combinations(settings, deleted, kept_listed):
    plan = plan_of(THREE, **settings)
    assert names(plan.delete) == deleted
    assert names(plan.keep) == kept_listed
    assert plan.reclaim_bytes == 100 * len(deleted)
    assert all(u.reasons for u in (*plan.delete, *plan.keep))


def test_protection_is_shown_when_it_saves_a_selected_unit():
    plan = plan_of(THREE, max_age=30 * DAY, protect_globs=["m"])
    assert names(plan.delete) == ["x"]
    saved = {u.revision: describe_all(u.reasons) for u in plan.keep}
    assert saved.keys() == {"a", "b"}
    assert saved["a"][0].startswith("max-age: not accessed for 90d")
    assert saved["a"][1] == "protect: model matches 'm'"


def test_removing_the_last_revision_needs_allow_remove_all_except_by_max_age():
    cache = torch_cache(("m", [rev("m", "a", days_old=90), rev("m", "b", days_old=80)]))
    assert names(plan_of(cache, max_age=30 * DAY).delete) == ["a", "b"]
    quota = plan_of(cache, max_size=0)
    assert names(quota.delete) == ["a"] and names(quota.keep) == ["b"]
    assert quota.keep[0].reasons[-1] == Decision(Rule.MAX_SIZE, Case.LAST, keep=True, scope="m")
    assert "--allow-remove-all" in describe(quota.keep[0].reasons[-1])
    assert any("stays 100 Bytes over max_size 0 Bytes" in w for w in quota.warnings)  # sizes for people, never raw counts
    assert names(plan_of(cache, max_size=0, allow_remove_all=True).delete) == ["a", "b"]


def test_damaged_items_are_never_deleted():
    damaged = Revision("a", "/c/m/a", size_bytes=5, last_accessed=0, warnings=(ScanWarning("/c/m/a/f", "broken symlink"),))
    cache = CacheInventory("torch", "/c", items=(Item("torch", "m", "hub-repo", "/c/m", revisions=(damaged,)),))
    plan = plan_of(cache, max_age=DAY)
    assert plan.delete == ()
    assert describe(plan.keep[0].reasons[-1]) == "damaged: not deletable: broken symlink: /c/m/a/f"


def test_min_free_evicts_across_caches_of_one_file_system():
    one = torch_cache(("m", [rev("m", "a", days_old=50), rev("m", "b", days_old=1)]), root="/one")
    two = torch_cache(("n", [rev("n", "x", days_old=60), rev("n", "y", days_old=2)]), root="/two")
    disks = {"/one": Disk(1, 10_000, 850), "/two": Disk(1, 10_000, 850)}
    plan = plan_of([one, two], disks=disks, min_free=MinFree(bytes=1000))  # 150 short: two LRU units
    assert names(plan.delete) == ["a", "x"]
    assert all(describe(u.reasons[0]).startswith("min-free: least recently used") for u in plan.delete)
    assert describe(plan.delete[0].reasons[0]) == "min-free: least recently used (accessed 50d ago) until 1.0 kB are free"
    percent = plan_of([one, two], disks=disks, min_free=MinFree(percent=9.0))  # 900 wanted: one unit
    assert names(percent.delete) == ["x"]
    assert plan_of([one, two], disks=disks, min_free=MinFree(bytes=800)).delete == ()


def test_an_empty_policy_is_refused():
    with pytest.raises(ValueError):
        make_plan(Inventory((THREE,), NOW), Policy(), now=NOW)


def test_junk():
    grace = 24 * 3600
    old, young = NOW - 3 * DAY, NOW - 3600
    cache = CacheInventory(
        "huggingface",
        "/c",
        partial_files=(
            PartialFile("/c/models--a/blobs/e1.incomplete", "a", 10, old, "resumable", "/c/.locks/e1.lock", False),
            PartialFile("/c/models--a/blobs/e2.incomplete", "a", 20, old, "resumable", "/c/.locks/e2.lock", True),
            PartialFile("/c/models--a/blobs/e3.1234abcd.incomplete", "a", 40, young, "per-process"),
            PartialFile("/c/models--p/blobs/e4.incomplete", "p", 80, old, "resumable"),
        ),
        orphan_files=(OrphanFile("/c/models--a/blobs/o1", "a", 100, old, old),),
        unreferenced_payloads=(
            SharedPayload("/c/blobs/aa/" + "a" * 64, 1000, old, old, has_manifest=True),
            SharedPayload("/c/blobs/bb/" + "b" * 64, 2000, old, old, has_manifest=False),
        ),
    )
    plan = plan_of(cache, junk=True, junk_grace=grace, protect_globs=["p"])
    assert sorted(os.path.basename(u.path) for u in plan.delete) == ["a" * 64, "e1.incomplete", "o1"]
    assert plan.reclaim_bytes == 10 + 100 + 1000
    why = {os.path.basename(u.path): describe(u.reasons[-1]) for u in plan.keep}
    assert why["e2.incomplete"] == "keep: its download lock is held"
    assert "grace period" in why["e3.1234abcd.incomplete"]
    assert why["e4.incomplete"] == "protect: model matches 'p'"
    assert "no .refs manifest" in why["b" * 64]


@pytest.mark.parametrize(
    ("piece", "expected"),
    [
        (PartialFile("/c/p", "a", 1, NOW - 3 * DAY, "resumable", "/c/l", False), [Case.PARTIAL]),
        (PartialFile("/c/p", "a", 1, NOW - 3 * DAY, "resumable", "/c/l", True), [Case.PARTIAL, Case.LOCK_HELD]),
        (PartialFile("/c/p", "a", 1, NOW - 60, "per-process"), [Case.PARTIAL, Case.YOUNG]),
        (OrphanFile("/c/p", "a", 1, NOW - 3 * DAY, NOW - 3 * DAY), [Case.ORPHAN]),
        (OrphanFile("/c/p", "a", 1, NOW - 3 * DAY, NOW - 60), [Case.ORPHAN, Case.YOUNG]),  # modified, not read, counts
        (SharedPayload("/c/p", 1, NOW - 3 * DAY, NOW - 3 * DAY, has_manifest=True), [Case.PAYLOAD]),
        (SharedPayload("/c/p", 1, NOW - 3 * DAY, NOW - 3 * DAY, has_manifest=False), [Case.PAYLOAD, Case.NO_MANIFEST]),
        (SharedPayload("/c/p", 1, NOW, NOW - 60, has_manifest=False), [Case.PAYLOAD, Case.YOUNG]),
        (Leftover("/c/p", "a", None, 1, NOW - 3 * DAY), [Case.EMPTY_REPO]),
        (Leftover("/c/p", "a", None, 1, NOW - 60), [Case.EMPTY_REPO, Case.YOUNG]),  # a download may be filling it
        (Leftover("/c/p", "a", "c" * 40, 1, NOW - 60), [Case.LEFT_BY]),  # a removed revision's: no grace
    ],
)
def test_junk_policy_table(piece, expected):
    """The junk policy alone, a pure function: one piece of junk, its selection and what keeps it."""
    field = {PartialFile: "partial_files", OrphanFile: "orphan_files", SharedPayload: "unreferenced_payloads"}
    cache = CacheInventory("k", "/c", **{field.get(type(piece), "leftovers"): (piece,)})
    decided = junk(cache, now=NOW, grace=DAY)
    assert list(decided) == ["/c/p"]
    assert [d.case for d in decided["/c/p"]] == expected
    assert [d.keep for d in decided["/c/p"]] == [False] + [True] * (len(expected) - 1)
    assert decided["/c/p"][0].policy is Rule.JUNK
