"""Ollama's model store as a cache kind (issue 18, point 3), on trees laid out exactly as Ollama writes them.

Every rule cites the source it comes from, in ollama/ollama at fb307609 (Aug 2026):

- names and ids: ``types/model/name.go`` (``ParseName``, ``isValidPart``, ``DisplayShortest``:
  what ``ollama list`` prints, ``llama3:latest`` for ``registry.ollama.ai/library/llama3:latest``);
- sizes: ``manifest/manifest.go`` ``Manifest.Size`` (the layers' and the config's ``size``
  summed), which ``server/model_list_cache.go`` ``buildModelListSummary`` puts in ``ollama
  list``'s SIZE; MODIFIED is the manifest file's mtime;
- deletion: ``server/routes.go`` ``DeleteHandler`` (``ollama rm``): ``Manifest.Remove`` (the
  manifest, then ``PruneDirectory``), then ``Manifest.RemoveLayers`` (every blob of it no
  other manifest names);
- a manifest that fails to parse: ``server/routes.go`` ``Serve`` skips ``PruneLayers``
  entirely when ``manifest.Manifests(false)`` fails;
- partial downloads: ``server/download.go`` (``-partial``, ``-partial-N``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import hfcache
from hfcache.caches.ollama import kind as ollama_kind
from hfcache.caches.ollama import layout
from hfcache.caches.ollama.delete import OLLAMA_DELETION, TRASH
from hfcache.caches.registry import KINDS
from hfcache.fs.ops import Tree
from hfcache.model import CacheInventory
from tests.ollama_trees import age, blob_path, digests, loads, manifest_bytes, model, partial
from tests.support import cli, payload, run_cli
from tests.trees import write

LINUX = sys.platform.startswith("linux")

W_LATEST, W_OLD, W_M, W_HF = payload(2000, 1), payload(1500, 2), payload(300, 3), payload(900, 4)
TEMPLATE, LICENSE, SYSTEM = b"{{ .Prompt }}", b"LLAMA 3 COMMUNITY LICENSE" * 4, b"You are Mario."


def store(root: str) -> dict[str, str]:
    """Three models as pulls leave them, sharing blobs across tags and across models.

    - ``llama3:latest`` and ``llama3:old`` (pulled 90 days ago) share the template and license layers;
    - ``user/mario:latest`` shares ``llama3:latest``'s weights (a model made FROM it);
    - ``hf.co/bartowski/Tiny-GGUF:Q4_K_M``, pulled from Hugging Face;
    - an orphan blob no manifest names and a download in progress, both old.
    """
    made = {
        "latest": model(root, "llama3", "latest", weights=W_LATEST, extras=(("template", TEMPLATE), ("license", LICENSE))),
        "old": model(root, "llama3", "old", weights=W_OLD, extras=(("template", TEMPLATE), ("license", LICENSE))),
        "mario": model(root, "mario", "latest", weights=W_LATEST, extras=(("system", SYSTEM),), namespace="user"),
        "hf": model(root, "Tiny-GGUF", "Q4_K_M", weights=W_HF, host="hf.co", namespace="bartowski"),
    }
    for path in (made["old"], *(blob_path(root, d) for d, _ in digests(made["old"]))):
        if os.path.basename(path) not in {os.path.basename(blob_path(root, d)) for d, _ in digests(made["latest"])}:
            age(path, 90)
    made["orphan"] = write(os.path.join(root, "blobs", "sha256-" + "0" * 64), 77)
    age(made["orphan"], 30)
    data_file, parts = partial(root, b"x" * 5000, 10_000_000)
    for path in (data_file, *parts):
        age(path, 3)
    made["partial"] = data_file
    return made


def size_of(manifest: str) -> int:
    return sum(size for _, size in digests(manifest))


def blob_names(*manifests: str) -> set[str]:
    return {d.replace(":", "-") for m in manifests for d, _ in digests(m)}


def blob_bytes(root: str, names: set[str]) -> int:
    return sum(os.path.getsize(os.path.join(root, "blobs", n)) for n in names)


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = str(tmp_path / "models")
    monkeypatch.setenv("OLLAMA_MODELS", path)
    return path


def scan(root: str) -> CacheInventory:
    (cache,) = hfcache.scan([root], kinds=["ollama"]).caches
    return cache


# ---------------------------------------------------------------------------------------------
# Names, ids, roots


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("llama3:8b", ("llama3", "8b")),  # DisplayShortest: the default host and namespace left out
        ("library/llama3:8b", ("llama3", "8b")),
        ("registry.ollama.ai/library/llama3:latest", ("llama3", "latest")),
        ("REGISTRY.OLLAMA.AI/Library/llama3:latest", ("llama3", "latest")),  # compared with EqualFold
        ("user/mario:latest", ("user/mario", "latest")),
        ("registry.ollama.ai/user/mario:v1", ("user/mario", "v1")),
        ("hf.co/bartowski/Tiny-GGUF:Q4_K_M", ("hf.co/bartowski/Tiny-GGUF", "Q4_K_M")),
        ("localhost:5000/ns/m:t", ("localhost:5000/ns/m", "t")),
    ],
)
def test_ollama_names_read_as_ollama_reads_them(text, expected):
    uri = ollama_kind.OLLAMA.parse_uri(text)
    assert uri is not None and (uri.id, uri.revision) == expected


@pytest.mark.parametrize(
    "text",
    [
        "llama3",  # no tag: an id as scan shows it, for the generic reading (which also names hub repos)
        "org/name@v1",  # hfcache's own id@revision
        "hf://models/org/name",
        "localhost:5000/ns/m",  # a host's port, not a tag
        "bad name:tag",  # not a valid name part (isValidPart)
        "ns.x/m:t",  # '.' is not allowed in a namespace
        "m:-t",  # a tag starts with a letter, a digit or '_'
    ],
)
def test_what_is_not_an_ollama_name_with_a_tag_is_left_to_the_generic_reading(text):
    assert ollama_kind.OLLAMA.parse_uri(text) is None


def test_roots_ollama_models_home_and_the_service_account(tmp_path, monkeypatch):
    home = str(tmp_path / "home")
    service = str(tmp_path / "usr" / "share" / "ollama" / ".ollama" / "models")
    env = {"HOME": home, layout.SERVICE_VARIABLE: service}
    # envconfig.Models: $OLLAMA_MODELS (Var trims spaces and quotes), else $HOME/.ollama/models
    assert ollama_kind.OLLAMA.default_roots(env) == [os.path.join(home, ".ollama", "models")]
    assert ollama_kind.OLLAMA.default_roots({**env, "OLLAMA_MODELS": " '/data/ollama' "}) == ["/data/ollama"]
    os.makedirs(service)  # the Linux service's store (scripts/install.sh: user ollama, home /usr/share/ollama)
    assert ollama_kind.OLLAMA.default_roots(env) == [os.path.join(home, ".ollama", "models"), service]
    assert ollama_kind.OLLAMA.default_roots({**env, "OLLAMA_MODELS": service}) == [service]  # once
    assert layout.SERVICE_ROOT == "/usr/share/ollama/.ollama/models"


def test_the_tests_never_look_at_the_real_service_store():
    assert os.environ[layout.SERVICE_VARIABLE].startswith(os.environ["HOME"])


def test_ollama_is_a_builtin_kind_scanned_at_its_default_place(isolated_home):
    assert "ollama" in KINDS
    root = os.path.join(isolated_home, ".ollama", "models")
    model(root, "llama3", "latest", weights=W_LATEST)
    code, doc = cli("scan", "--json")
    assert code == 0
    (cache,) = [c for c in doc["caches"] if c["kind"] == "ollama"]
    assert cache["root"] == root and [i["id"] for i in cache["items"]] == ["llama3"]


def test_the_service_store_is_scanned_beside_the_users_when_it_exists(root, isolated_home, monkeypatch):
    model(root, "llama3", "latest", weights=W_LATEST)
    service = os.path.join(isolated_home, "usr", "share", "ollama", ".ollama", "models")
    assert os.environ[layout.SERVICE_VARIABLE] == service  # (conftest points it into the test's home)
    model(service, "qwen", "7b", weights=W_HF)
    code, doc = cli("scan", "--kind", "ollama", "--json")
    assert code == 0
    assert [(c["root"], [i["id"] for i in c["items"]]) for c in doc["caches"]] == [(root, ["llama3"]), (service, ["qwen"])]


# ---------------------------------------------------------------------------------------------
# The scan: what ollama list shows, each blob once


def test_scan_counts_as_ollama_list_and_each_blob_once(root):
    made = store(root)
    cache = scan(root)
    assert not [w for w in cache.all_warnings if w.blocks_deletion], cache.all_warnings
    items = {i.id: i for i in cache.items}
    assert set(items) == {"llama3", "user/mario", "hf.co/bartowski/Tiny-GGUF"}
    llama = items["llama3"]
    assert llama.type == "model" and llama.path == os.path.join(root, "manifests", "registry.ollama.ai", "library", "llama3")
    revs = {r.revision: r for r in llama.revisions}
    assert set(revs) == {"latest", "old"} and revs["latest"].default and not revs["old"].default
    assert revs["old"].path == made["old"]

    # A tag's size is Manifest.Size: ollama list's SIZE.
    for tag in ("latest", "old"):
        assert revs[tag].size_bytes == size_of(made[tag])
    # What deleting one tag alone frees: the blobs no other manifest (of any model) names.
    latest_only = blob_names(made["latest"]) - blob_names(made["old"], made["mario"])
    old_only = blob_names(made["old"]) - blob_names(made["latest"], made["mario"])
    assert len(latest_only) == 1 and len(old_only) == 2  # latest's config; old's config and weights
    assert revs["latest"].reclaimable_bytes == blob_bytes(root, latest_only)
    assert revs["old"].reclaimable_bytes == blob_bytes(root, old_only)
    assert revs["old"].unit_paths == (made["old"], *sorted(os.path.join(root, "blobs", n) for n in old_only))
    # The model: each of its blobs once; the cache: each blob any manifest names once.
    assert llama.size_bytes == blob_bytes(root, blob_names(made["latest"], made["old"]))
    every = blob_names(made["latest"], made["old"], made["mario"], made["hf"])
    assert cache.size_bytes == blob_bytes(root, every) < sum(size_of(made[k]) for k in ("latest", "old", "mario", "hf"))
    assert items["user/mario"].revisions[0].reclaimable_bytes == blob_bytes(
        root, blob_names(made["mario"]) - blob_names(made["latest"])
    )
    # ollama list's MODIFIED is the manifest's mtime.
    assert revs["old"].last_modified == os.stat(made["old"]).st_mtime

    # The orphan blob and the download in progress are junk candidates, never in the total.
    assert [(o.path, o.size_bytes) for o in cache.orphan_files] == [(made["orphan"], 77)]
    (p,) = cache.partial_files
    assert p.path == made["partial"] and p.scheme == "resumable" and p.item_id is None
    st = os.stat(made["partial"])
    parts = [made["partial"] + "-0", made["partial"] + "-1"]
    # the sparse data file counts what is allocated, not the size it was truncated to
    assert p.size_bytes == min(st.st_size, st.st_blocks * 512) + sum(os.path.getsize(x) for x in parts) < 10_000_000
    assert cache.shared_store and root in cache.protected and os.path.join(root, "blobs") in cache.protected


def test_tags_that_look_like_versions_have_one(root):
    for tag in ("v1.2", "2.5", "8b", "latest", "7b-instruct-q4_0"):
        model(root, "qwen", tag, weights=tag.encode())
    (item,) = scan(root).items
    assert {r.revision: r.version for r in item.revisions} == {
        "v1.2": "1.2",
        "2.5": "2.5",
        "8b": None,
        "latest": None,
        "7b-instruct-q4_0": None,
    }


def test_a_missing_blob_makes_its_model_damaged(root):
    made = store(root)
    os.unlink(blob_path(root, digests(made["hf"])[0][0]))
    items = {i.id: i for i in scan(root).items}
    assert not items["hf.co/bartowski/Tiny-GGUF"].deletable and items["llama3"].deletable


@pytest.mark.parametrize(
    "bad",
    [
        b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distri',  # truncated mid-write
        b"",
        b'{"schemaVersion":"2","layers":[]}',  # a type Go's decoder refuses
        b'{"layers":[{"digest":"sha256:ab","size":1.5}]}',
        b"[1, 2]",
    ],
)
def test_a_manifest_that_fails_to_parse_blocks_every_blob_removal(root, bad):
    """Ollama skips its whole prune then (routes.go Serve: Manifests(false) fails); hfcache deletes no blob at all."""
    made = store(root)
    broken = write(os.path.join(root, "manifests", "registry.ollama.ai", "library", "llama3", "broken"), bad)
    cache = scan(root)
    assert any(broken in str(w) and w.blocks_deletion for w in cache.all_warnings)
    assert all(not i.deletable for i in cache.items)
    assert cache.orphan_files == ()  # the broken one may name it: never junk while it is there
    assert any(i.type == "unknown" and i.path == made["orphan"] for i in cache.items)
    code, plan = cli("prune", "--kind", "ollama", "--max-age", "1d", "--junk", "--junk-grace", "0s", "--dry-run", "--json")
    assert code == 0 and [u["what"] for u in plan["delete"]] == ["partial"], plan["delete"]
    before = sorted(os.listdir(os.path.join(root, "blobs")))
    code, done = cli("prune", "--kind", "ollama", "--max-age", "1d", "--junk", "--junk-grace", "0s", "--yes", "--json")
    assert code == 0, done
    assert sorted(os.listdir(os.path.join(root, "blobs"))) == [n for n in before if "-partial" not in n]
    assert all(os.path.exists(made[k]) for k in ("latest", "old", "mario", "hf"))


def test_a_mount_point_among_the_manifests_blocks_every_blob_removal(root, mounts):
    """Deletion never reads past a mount point, so it could not tell which blobs stay: none goes."""
    made = store(root)
    mounts.mount("-t", "tmpfs", "tmpfs", os.path.join(root, "manifests", "hf.co"))  # hides the hf.co manifest
    cache = scan(root)
    assert cache.orphan_files == () and all(not i.deletable for i in cache.items)
    code, done = cli("prune", "--kind", "ollama", "--max-age", "1d", "--junk", "--junk-grace", "0s", "--yes", "--json")
    assert code == 0 and [u["what"] for u in done["delete"]] == ["partial"], done
    assert all(os.path.exists(blob_path(root, d)) for d, _ in digests(made["old"]))


def test_a_manifest_name_ollama_would_refuse_still_keeps_its_blobs(root):
    made = store(root)
    stray = os.path.join(root, "manifests", "registry.ollama.ai", "library", "llama3", "old~")  # an editor's backup
    with open(made["old"], "rb") as f:
        write(stray, f.read())
    cache = scan(root)
    items = {i.id: i for i in cache.items}
    assert {r.revision for r in items["llama3"].revisions} == {"latest", "old"}
    assert any(i.type == "unknown" and i.path == stray for i in cache.items)
    old = next(r for r in items["llama3"].revisions if r.revision == "old")
    assert old.reclaimable_bytes == 0 and old.unit_paths == (made["old"],)  # its blobs are named by the stray copy
    code, plan = cli("rm", "llama3:old", "--dry-run", "--json")
    assert code == 0 and plan["reclaim_bytes"] == 0, plan
    code, done = cli("rm", "llama3:old", "--yes", "--json")
    assert code == 0 and done["freed_bytes"] == 0 and loads(root, stray), done


# ---------------------------------------------------------------------------------------------
# Plans and deletion through the CLI


def test_prune_keep_deletes_a_tag_and_the_blobs_only_it_used(root):
    made = store(root)
    old_only = blob_names(made["old"]) - blob_names(made["latest"], made["mario"])
    code, plan = cli("prune", "--kind", "ollama", "--keep", "1", "--dry-run", "--json")
    assert code == 0, plan
    assert [(u["id"], u["revision"]) for u in plan["delete"]] == [("llama3", "old")]
    assert plan["reclaim_bytes"] == blob_bytes(root, old_only)
    # ids as scan --format ids writes them
    ids = run_cli("prune", "--kind", "ollama", "--keep", "1", "--dry-run", "--format", "ids")
    assert ids.stdout.split() == ["llama3@old"]

    code, done = cli("prune", "--kind", "ollama", "--keep", "1", "--yes", "--json")
    assert code == 0, done
    (unit,) = done["delete"]
    assert unit["status"] == "deleted" and unit["freed_bytes"] == plan["reclaim_bytes"]
    assert not os.path.exists(made["old"])
    assert not any(os.path.exists(os.path.join(root, "blobs", n)) for n in old_only)
    for tag in ("latest", "mario", "hf"):  # everything else still loads
        assert loads(root, made[tag]), tag
    assert os.listdir(os.path.join(root, TRASH)) == []  # hfcache's set-aside folder stays, empty
    cache = scan(root)
    assert cache.orphan_files != () and cache.partial_files != ()  # junk was not asked for


def test_prune_max_age_by_modification_and_the_last_tag_rule(root):
    made = store(root)
    for tag in ("mario", "hf"):
        age(made[tag], 60)
    code, plan = cli("prune", "--kind", "ollama", "--max-age", "30d", "--age-by", "mtime", "--dry-run", "--json")
    assert code == 0, plan
    # ollama list's MODIFIED (the manifest's mtime): old, mario and the hf tag are 60-90 days old
    assert sorted((u["id"], u["revision"]) for u in plan["delete"]) == [
        ("hf.co/bartowski/Tiny-GGUF", "Q4_K_M"),
        ("llama3", "old"),
        ("user/mario", "latest"),
    ]
    going = blob_names(made["old"], made["mario"], made["hf"]) - blob_names(made["latest"])
    assert plan["reclaim_bytes"] == blob_bytes(root, going)  # llama3:latest's weights stay: no byte of them counted
    code, done = cli("prune", "--kind", "ollama", "--max-age", "30d", "--age-by", "mtime", "--yes", "--json")
    assert code == 0, done
    assert done["freed_bytes"] == plan["reclaim_bytes"]
    assert loads(root, made["latest"])
    # A model's last tag took its folders with it, rmdir only, up to manifests/ (which stays).
    manifests = os.path.join(root, "manifests")
    assert sorted(os.listdir(manifests)) == ["registry.ollama.ai"]
    assert os.listdir(os.path.join(manifests, "registry.ollama.ai")) == ["library"]


@pytest.mark.parametrize("target", ["llama3:old", "llama3@old", "registry.ollama.ai/library/llama3:old", "library/llama3:old"])
def test_rm_names_a_tag_as_ollama_or_hfcache_write_it(root, target):
    made = store(root)
    code, plan = cli("rm", target, "--dry-run", "--json")
    assert code == 0, plan
    assert [(u["kind"], u["id"], u["revision"]) for u in plan["delete"]] == [("ollama", "llama3", "old")]
    code, done = cli("rm", target, "--yes", "--json")
    assert code == 0, done
    assert not os.path.exists(made["old"]) and loads(root, made["latest"])


def test_rm_a_whole_model_keeps_the_blob_another_model_uses(root):
    made = store(root)
    shared = blob_names(made["mario"]) & blob_names(made["latest"])
    own = blob_names(made["mario"]) - shared
    freed = blob_bytes(root, own)
    assert len(shared) == 1 and len(own) == 2  # the weights are llama3:latest's; its system prompt and config are its own
    code, done = cli("rm", "user/mario", "--yes", "--json")
    assert code == 0, done
    assert not os.path.exists(os.path.join(root, "manifests", "registry.ollama.ai", "user"))  # emptied folders, rmdir-ed
    assert all(os.path.exists(os.path.join(root, "blobs", n)) for n in shared)
    assert done["freed_bytes"] == freed and not any(os.path.exists(os.path.join(root, "blobs", n)) for n in own)
    assert loads(root, made["latest"])


def test_a_manifest_written_after_the_plan_keeps_its_blobs(root, tmp_path):
    """A pull (or ollama cp) since the plan names the blobs the plan counted as freed: they stay."""
    made = store(root)
    saved = str(tmp_path / "plan.json")
    code, plan = cli("prune", "--kind", "ollama", "--keep", "1", "--dry-run", "--plan-out", saved, "--json")
    assert code == 0 and [u["revision"] for u in plan["delete"]] == ["old"]
    with open(made["old"], "rb") as f:
        copy = write(os.path.join(root, "manifests", "registry.ollama.ai", "library", "other", "latest"), f.read())
    code, done = cli("apply", saved, "--yes", "--json")
    assert code == 0, done
    (unit,) = done["delete"]
    assert unit["status"] == "deleted" and unit["freed_bytes"] == 0
    assert not os.path.exists(made["old"]) and loads(root, copy)


def test_a_manifest_written_while_blobs_settle_brings_them_back(root):
    """The settling time: blobs set aside, then the manifests read again; one a pull wrote meanwhile keeps them."""
    made = store(root)
    cache = scan(root)
    (llama,) = [i for i in cache.items if i.id == "llama3"]
    old = next(r for r in llama.revisions if r.revision == "old")
    with open(made["old"], "rb") as f:
        text = f.read()
    from hfcache.caches.deletion import Outcome
    from hfcache.plan.decisions import revision_unit

    unit = revision_unit(root, llama, old, (), 0, False)
    out = {unit.path: Outcome()}
    with Tree(root) as tree:
        assert OLLAMA_DELETION.revalidate(tree, cache, llama, unit, old) is None
        assert OLLAMA_DELETION.remove_revision(tree, cache, llama, unit, old, {}) == (0, None)
        stay = [r for r in llama.revisions if r.revision != "old"]
        finish = OLLAMA_DELETION.remove_rest(tree, cache, llama, [(unit, old)], stay, out)
        assert finish is not None
        aside = os.listdir(os.path.join(root, TRASH))
        assert len(aside) == 2  # old's config and weights, set aside
        write(os.path.join(root, "manifests", "registry.ollama.ai", "library", "llama3", "again"), text)  # a pull
        finish(tree)
    assert out[unit.path].errors == [] and out[unit.path].freed == 0
    assert os.listdir(os.path.join(root, TRASH)) == []
    assert loads(root, os.path.join(root, "manifests", "registry.ollama.ai", "library", "llama3", "again"))


def test_revalidation_skips_a_tag_pulled_again_since_the_plan(root, tmp_path):
    made = store(root)
    saved = str(tmp_path / "plan.json")
    code, _ = cli("prune", "--kind", "ollama", "--keep", "1", "--dry-run", "--plan-out", saved, "--json")
    assert code == 0
    cfg = digests(made["old"])[-1]
    write(made["old"], manifest_bytes(cfg, [("application/vnd.ollama.image.model", digests(made["latest"])[0])]))
    age(made["old"], 90)
    code, done = cli("apply", saved, "--yes", "--json")
    (unit,) = done["delete"]
    assert unit["status"] == "skipped" and "changed" in unit["error"], unit
    assert os.path.exists(made["old"])


def test_junk_takes_old_orphans_and_stale_downloads_with_their_part_files(root):
    made = store(root)
    fresh_data, fresh_parts = partial(root, b"y" * 100, 1_000_000, parts=1)  # just started: young
    code, plan = cli("prune", "--kind", "ollama", "--junk", "--dry-run", "--json")
    assert code == 0
    assert sorted((u["what"], u["path"]) for u in plan["delete"]) == [("orphan", made["orphan"]), ("partial", made["partial"])]
    code, done = cli("prune", "--kind", "ollama", "--junk", "--yes", "--json")
    assert code == 0, done
    names = set(os.listdir(os.path.join(root, "blobs")))
    assert not any(n.startswith(os.path.basename(made["partial"])) for n in names)  # data file and both parts
    assert os.path.basename(made["orphan"]) not in names
    assert {os.path.basename(fresh_data), *map(os.path.basename, fresh_parts)} <= names
    for tag in ("latest", "old", "mario", "hf"):
        assert loads(root, made[tag])


# A download as blobDownload.run writes one: the data file held open, appended to at its offset until killed.
APPEND = """
import sys, time
f = open(sys.argv[1], "r+b")
f.seek(5000)
print("ready", flush=True)
while True:
    f.write(b"z" * 10)
    f.flush()
    time.sleep(0.05)
"""


def test_only_names_ollama_writes_into_blobs_are_junk(root):
    """x/transfer's ``.tmp`` download and create's temporary files are junk; an unknown name never is."""
    made = store(root)
    hexa = "ab" * 32
    tmp = write(os.path.join(root, "blobs", f"sha256-{hexa}.tmp"), 4000)  # x/transfer/download.go save
    temps = [write(os.path.join(root, "blobs", n), 10) for n in ("sha256-2093125481", "split-copy391")]  # os.CreateTemp
    strange = [write(os.path.join(root, "blobs", n), 20) for n in (f"sha256-{hexa}.weird", f"sha256:{hexa}", "notes.txt")]
    for path in (tmp, *temps, *strange):
        age(path, 3)
    cache = scan(root)
    assert sorted((p.path, p.scheme) for p in cache.partial_files) == sorted(
        [(made["partial"], "resumable"), (tmp, "resumable"), *((t, "temporary") for t in temps)]
    )
    assert {i.path for i in cache.items if i.type == "unknown"} == set(strange)
    code, done = cli("prune", "--kind", "ollama", "--junk", "--yes", "--json")
    assert code == 0, done
    assert not any(os.path.exists(p) for p in (tmp, *temps)) and all(os.path.exists(p) for p in strange)


@pytest.mark.skipif(not LINUX, reason="the open-file check reads /proc")
def test_a_download_a_live_process_appends_to_survives_prune_junk(root):
    made = store(root)
    data_file = made["partial"]
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            APPEND,
            data_file,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        code, done = cli("prune", "--kind", "ollama", "--junk", "--junk-grace", "0s", "--yes", "--json")
        assert code == 0, done
        # Planned and then skipped (open, modified since the plan), or kept by the plan already when the
        # writer's last append is newer than the scan's clock (younger than any grace): never deleted.
        partials = [u for u in done["delete"] if u["what"] == "partial"]
        kept = [u for u in done["keep"] if u["what"] == "partial" and u["path"] == data_file]
        assert partials or kept, done
        assert all(u["status"] == "skipped" for u in partials), partials
        assert all("in use" in u["error"] or "modified" in u["error"] for u in partials), partials
        assert os.path.exists(data_file) and os.path.exists(data_file + "-0") and os.path.exists(data_file + "-1")
    finally:
        writer.kill()
        writer.wait()
    age(data_file, 3)  # left alone past the grace period, held by nobody: it goes, with its part files
    code, done = cli("prune", "--kind", "ollama", "--junk", "--yes", "--json")
    assert code == 0 and not os.path.exists(data_file) and not os.path.exists(data_file + "-0")


def test_a_pull_running_anywhere_keeps_every_tag(root):
    """Blobs are shared by every model: a download in progress may be for any of them (and write a manifest next)."""
    made = store(root)
    partial(root, b"y" * 100, 1_000_000, parts=1)  # young
    code, done = cli("prune", "--kind", "ollama", "--keep", "1", "--yes", "--json")
    assert code == 0, done
    (unit,) = done["delete"]
    assert unit["status"] == "skipped" and "download" in unit["error"], unit
    assert os.path.exists(made["old"])


# ---------------------------------------------------------------------------------------------
# Killed part-way


KILL_AT = """
import os, signal, sys
from hfcache.fs.ops import Tree
unlink, rename = Tree.unlink, Tree.rename
where = sys.argv[1]
def unlink_then_die(self, path, **kw):
    got = unlink(self, path, **kw)
    if where == "after-manifest" and "/manifests/" in path:
        os.kill(os.getpid(), signal.SIGKILL)
    return got
def rename_then_die(self, src, dst):
    rename(self, src, dst)
    if where == "after-aside" and "/.hfcache-trash/" in dst:
        os.kill(os.getpid(), signal.SIGKILL)
Tree.unlink, Tree.rename = unlink_then_die, rename_then_die
sys.argv = ["hfcache", *sys.argv[2:]]
from hfcache.cli import main
main()
"""


@pytest.mark.parametrize("where", ["after-manifest", "after-aside"])
def test_a_kill_between_the_manifest_and_its_blobs_loses_nothing_kept(root, where):
    made = store(root)
    old_only = blob_names(made["old"]) - blob_names(made["latest"], made["mario"])
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT, where, "prune", "--kind", "ollama", "--keep", "1", "--yes"],
        capture_output=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not os.path.exists(made["old"])
    for tag in ("latest", "mario", "hf"):
        assert loads(root, made[tag]), tag
    cache = scan(root)
    assert all(i.deletable for i in cache.items)
    # What the kill left is junk (orphan blobs), or set aside and finished by the next run's repair.
    if where == "after-manifest":
        assert {os.path.basename(o.path) for o in cache.orphan_files} >= old_only
    code, done = cli("prune", "--kind", "ollama", "--junk", "--yes", "--json")
    assert code == 0, done
    assert not any(os.path.exists(os.path.join(root, "blobs", n)) for n in old_only)
    assert os.listdir(os.path.join(root, TRASH)) == []
    for tag in ("latest", "mario", "hf"):
        assert loads(root, made[tag]), tag


def test_repair_puts_back_a_blob_set_aside_that_a_manifest_names(root):
    made = store(root)
    name = os.path.basename(blob_path(root, digests(made["hf"])[0][0]))
    os.makedirs(os.path.join(root, TRASH), exist_ok=True)
    os.rename(os.path.join(root, "blobs", name), os.path.join(root, TRASH, name))  # a killed run set it aside
    (hf,) = [i for i in scan(root).items if i.id.startswith("hf.co/")]
    assert hf.deletable  # the scan reads the trash as the repair will leave it
    with Tree(root) as tree:
        notes = OLLAMA_DELETION.recover(tree, CacheInventory("ollama", root))
    assert notes and loads(root, made["hf"]) and os.listdir(os.path.join(root, TRASH)) == []
