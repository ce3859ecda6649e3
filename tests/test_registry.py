"""The cache-kind registry, third-party kinds through entry points, and scanning every kind at once."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from hfcache.caches.deletion import PATHS
from hfcache.caches.protocol import PRUNE_LOCK, complete
from hfcache.caches.registry import ENTRY_POINT_GROUP, KINDS, load_registry, registry
from hfcache.caches.scan import scan_caches
from hfcache.errors import CacheNotADirectory, NotACache, UsageError
from tests.support import run_cli
from tests.trees import commit, repo, write

PLUGIN = textwrap.dedent(
    """
    import os
    from hfcache.model import CacheInventory, Item, Revision

    class LmStudio:
        kind = "lmstudio"
        title = "LM Studio models"
        types = ("model",)

        def default_roots(self, env):
            return [os.path.join(env.get("HOME", "/"), ".lmstudio", "models")]

        def recognizes(self, root):
            return os.path.isdir(os.path.join(root, "lmstudio-community"))

        def scan(self, root, *, explicit=True):
            rev = Revision("latest", root, size_bytes=1, reclaimable_bytes=1)
            item = Item(kind=self.kind, id="gemma", type="model", path=root, size_bytes=1, revisions=(rev,))
            return CacheInventory(kind=self.kind, title=self.title, root=root, size_bytes=1, items=(item,))

    class Ggufs:
        # A third-party kind with deletion shapes: one .gguf file per item, pruned through the protocol alone.
        kind = "ggufs"
        title = "GGUF files"
        types = ("model",)
        shapes = (r"models/[^/]+[.]gguf",)

        def default_roots(self, env):
            return [os.path.join(env.get("HOME", "/"), ".ggufs")]

        def recognizes(self, root):
            return os.path.isdir(os.path.join(root, "models"))

        def scan(self, root, *, explicit=True):
            root = os.path.realpath(root)
            if not os.path.isdir(os.path.join(root, "models")):
                return CacheInventory(kind=self.kind, title=self.title, root=root, exists=False)
            items = []
            for name in sorted(os.listdir(os.path.join(root, "models"))):
                path = os.path.join(root, "models", name)
                st = os.stat(path)
                rev = Revision(name, path, size_bytes=st.st_size, reclaimable_bytes=st.st_size,
                               last_accessed=st.st_atime, last_modified=st.st_mtime)
                items.append(Item(kind=self.kind, id=name, type="model", path=path, size_bytes=st.st_size,
                                  last_accessed=st.st_atime, last_modified=st.st_mtime, revisions=(rev,)))
            size = sum(i.size_bytes for i in items)
            return CacheInventory(kind=self.kind, title=self.title, root=root, size_bytes=size, items=tuple(items),
                                  protected=(os.path.join(root, "models"),))

    class NotAKind:
        pass

    def broken():
        raise RuntimeError("plug-in bug")
    """
)


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed distribution declaring hfcache.caches entry points (a real .dist-info on sys.path)."""
    site = tmp_path / "site"
    write(str(site / "hfcache_test_plugin.py"), PLUGIN.encode())
    dist = site / "hfcache_test_plugin-1.0.dist-info"
    write(str(dist / "METADATA"), b"Metadata-Version: 2.1\nName: hfcache-test-plugin\nVersion: 1.0\n")
    entry_points = f"[{ENTRY_POINT_GROUP}]\nlmstudio = hfcache_test_plugin:LmStudio\nggufs = hfcache_test_plugin:Ggufs\n"
    write(str(dist / "entry_points.txt"), entry_points.encode())
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("hfcache_test_plugin", None)
    registry.cache_clear()  # a test that read the plug-ins into the process's registry leaves none behind


def test_builtin_kinds_are_the_documented_ones():
    # ModelScope, TF Hub and vLLM come before the kinds that also recognise models/, datasets/ or a *.lock
    # (Keras, datasets, kagglehub): a --cache-dir is scanned as the first kind that recognises it.
    assert list(KINDS) == [
        "huggingface",
        "torch",
        "modelscope",
        "tfhub",
        "vllm",
        "keras",
        "xet",
        "datasets",
        "kagglehub",
        "ollama",
        "transformers-legacy",
        "llama-cpp-flat",
    ]


def test_plugin_from_an_installed_distribution_is_scanned(plugin_dist, isolated_home):
    registry = load_registry()
    assert "lmstudio" in registry.kinds and "ggufs" in registry.kinds
    # It declares no deletion shapes: it is scanned, and told so, never pruned.
    assert len(registry.problems) == 1 and "declares no deletion shapes" in registry.problems[0]
    write(os.path.join(isolated_home, ".lmstudio", "models", "lmstudio-community", "x"), 3)
    inventory = scan_caches(kinds=["lmstudio"], kind_registry=registry)
    assert [(c.kind, [i.id for i in c.items]) for c in inventory.caches] == [("lmstudio", ["gemma"])]


def test_a_third_party_kind_is_scanned_planned_and_pruned_through_the_protocol_alone(plugin_dist, isolated_home):
    """Its shapes bound what goes, the defaults it did not give (lock place, deletion) apply; nothing kind-specific."""
    registry.cache_clear()  # the process's registry is read again, with this test's plug-ins (see plugin_dist)
    root = os.path.join(isolated_home, ".ggufs")
    old = write(os.path.join(root, "models", "old.gguf"), 300)
    new = write(os.path.join(root, "models", "new.gguf"), 200)
    os.utime(old, (1_000_000_000, 1_000_000_000))  # 2001: far older than 30 days

    listed = run_cli("scan", "--kind", "ggufs", "--json")
    assert listed.exit_code == 0, listed.output
    [cache] = json.loads(listed.stdout)["caches"]
    assert (cache["kind"], cache["size_bytes"], sorted(i["id"] for i in cache["items"])) == (
        "ggufs",
        500,
        ["new.gguf", "old.gguf"],
    )

    done = run_cli("prune", "--kind", "ggufs", "--max-age", "30d", "--yes", "--json")
    assert done.exit_code == 0, done.output
    units = json.loads(done.stdout)["delete"]
    assert [(u["path"], u["status"], u["freed_bytes"]) for u in units] == [(old, "deleted", 300)]
    assert not os.path.exists(old) and os.path.exists(new)
    assert os.path.exists(os.path.join(root, ".hfcache-prune.lock"))  # the default place of the prune lock


def test_a_third_party_kind_deletes_nothing_outside_its_shapes(plugin_dist, isolated_home):
    """A scan of the kind names a path its shapes do not cover: the plan is refused whole, nothing deleted."""
    registry.cache_clear()
    root = os.path.join(isolated_home, ".ggufs")
    odd = write(os.path.join(root, "models", "notes.txt"), 100)  # listed as an item, but no shape matches it
    os.utime(odd, (1_000_000_000, 1_000_000_000))
    done = run_cli("prune", "--kind", "ggufs", "--max-age", "30d", "--yes")
    assert done.exit_code != 0 and "nothing deleted" in done.output
    assert os.path.exists(odd)


def test_broken_plugins_are_reported_not_fatal(plugin_dist):
    eps = [
        EntryPoint("bad", "hfcache_test_plugin:broken", ENTRY_POINT_GROUP),
        EntryPoint("missing", "no_such_module:Kind", ENTRY_POINT_GROUP),
        EntryPoint("shape", "hfcache_test_plugin:NotAKind", ENTRY_POINT_GROUP),
        EntryPoint("torch", "hfcache_test_plugin:LmStudio", ENTRY_POINT_GROUP),
        EntryPoint("again", "hfcache_test_plugin:LmStudio", ENTRY_POINT_GROUP),
    ]
    registry = load_registry(eps)
    assert list(registry.kinds)[-1] == "lmstudio" and len(registry.kinds) == len(KINDS) + 1
    problems = "\n".join(registry.problems)
    assert "'bad'" in problems and "plug-in bug" in problems
    assert "'missing'" in problems and "ModuleNotFoundError" in problems
    assert "'shape'" in problems and "does not provide" in problems
    assert "'again'" in problems and "already exists" in problems
    assert "'lmstudio'" in problems and "declares no deletion shapes" in problems
    assert len(registry.problems) == 5


def test_unknown_kind_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown cache kind 'pytorch'"):
        scan_caches(kinds=["pytorch"])


def make_machine(home: str) -> None:
    """One small cache of every built-in kind, at each library's default place."""
    c1 = commit(1)
    hub_root = os.path.join(home, ".cache", "huggingface", "hub")
    repo(hub_root, "models--org--m", snapshots={c1: {"w": "e"}}, blobs={"e": 100}, refs={"main": c1})
    write(os.path.join(home, ".cache", "huggingface", "token"), b"hf_secret")
    write(os.path.join(home, ".cache", "huggingface", "xet", "ep-x", "shard-cache", "a.mdb"), 10)
    write(os.path.join(home, ".cache", "huggingface", "datasets", "o___d", "cfg", "1.0.0", "h", "d.arrow"), 20)
    write(os.path.join(home, ".cache", "huggingface", "transformers", f"{'a' * 64}.{'b' * 64}"), 30)
    write(os.path.join(home, ".cache", "torch", "hub", "trusted_list"), b"pytorch_vision\n")
    write(os.path.join(home, ".cache", "torch", "hub", "checkpoints", "resnet18-5c106cde.pth"), 40)
    write(os.path.join(home, ".cache", "torch", "hub", "pytorch_vision_v0.10.0", "hubconf.py"), 50)
    write(os.path.join(home, ".keras", "keras.json"), b"{}")
    write(os.path.join(home, ".keras", "models", "resnet50.h5"), 60)
    kh = os.path.join(home, ".cache", "kagglehub", "models", "keras", "gemma", "keras", "2b")
    write(os.path.join(kh, "3", "w.h5"), 70)
    write(os.path.join(kh, "3.complete"))
    write(os.path.join(home, ".cache", "llama.cpp", "ai_smollm2_135M-Q4_0.gguf"), 80)
    ollama = os.path.join(home, ".ollama", "models")
    write(os.path.join(ollama, "blobs", "sha256-" + "c" * 64), 8)
    write(os.path.join(ollama, "blobs", "sha256-" + "d" * 64), 80)
    config, weights = {"digest": "sha256:" + "c" * 64, "size": 8}, {"digest": "sha256:" + "d" * 64, "size": 80}
    manifest = {"schemaVersion": 2, "config": config, "layers": [weights]}
    write(os.path.join(ollama, "manifests", "registry.ollama.ai", "library", "llama3", "latest"), json.dumps(manifest).encode())
    ms = os.path.join(home, ".cache", "modelscope", "models", "Qwen--Qwen3-0.6B", "snapshots", "master")
    write(os.path.join(ms, "model.safetensors"), 80)
    tfhub = os.path.join(os.environ["TFHUB_CACHE_DIR"], "4a" * 20)  # (see conftest: TF Hub's default is /tmp's)
    write(os.path.join(tfhub, "saved_model.pb"), 90)
    write(tfhub + ".descriptor.txt", b"Module: https://tfhub.dev/google/x/1\nDownload Time: t\nDownloader Hostname: h (PID:1)")
    vllm = os.path.join(home, ".cache", "vllm", "torch_compile_cache", "0123456789")
    write(os.path.join(vllm, "rank_0_0", "backbone", "vllm_compile_cache.py"), 100)


def test_scan_every_kind_at_its_default_place(isolated_home):
    make_machine(isolated_home)
    result = run_cli("scan", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    found = {c["kind"]: c for c in doc["caches"] if c["exists"]}
    assert set(found) == set(KINDS)
    ids = {kind: {(i["type"], i["id"]) for i in c["items"]} for kind, c in found.items()}
    assert ids["torch"] == {("checkpoint", "resnet18"), ("hub-repo", "pytorch/vision")}
    assert ids["keras"] == {("model", "resnet50.h5")}
    assert ids["kagglehub"] == {("model", "keras/gemma/keras/2b")}
    assert ids["ollama"] == {("model", "llama3")}
    assert ids["modelscope"] == {("model", "Qwen/Qwen3-0.6B")}
    assert ids["tfhub"] == {("module", "https://tfhub.dev/google/x")}
    assert ids["vllm"] == {("torch-compile", "0123456789")}
    assert {k: c["size_bytes"] for k, c in found.items()} == {
        "huggingface": 100,
        "xet": 10,
        "datasets": 20,
        "transformers-legacy": 30,
        "torch": 90,
        "keras": 60,
        "kagglehub": 70,
        "llama-cpp-flat": 80,
        "ollama": 88,
        "modelscope": 80,
        "tfhub": 90 + len(b"Module: https://tfhub.dev/google/x/1\nDownload Time: t\nDownloader Hostname: h (PID:1)"),
        "vllm": 100,
    }
    vision = next(i for i in found["torch"]["items"] if i["id"] == "pytorch/vision")
    assert vision["revisions"][0]["version"] == "0.10.0" and vision["revisions"][0]["revision"] == "v0.10.0"
    assert vision["revisions"][0]["detached"] is None  # no refs outside the hub: "detached" means nothing there
    # What a library needs to start is never an item.
    every_path = [p for c in found.values() for i in c["items"] for p in i["paths"]]
    for needed in ("keras.json", "trusted_list", "token", ".locks"):
        assert not any(os.path.basename(p) == needed for p in every_path)

    table = run_cli("scan")
    titles = ("Hugging Face hub cache", "PyTorch hub cache", "Keras cache", "kagglehub cache", "Xet cache")
    for title in (*titles, "ModelScope cache", "TensorFlow Hub cache", "vLLM compile cache"):
        assert title in table.stdout
    only = json.loads(run_cli("scan", "--kind", "torch", "--kind", "keras", "--json").stdout)
    assert [c["kind"] for c in only["caches"]] == ["torch", "keras"]
    checkpoints = json.loads(run_cli("scan", "--type", "checkpoint", "--json").stdout)
    assert [i["id"] for c in checkpoints["caches"] for i in c["items"]] == ["resnet18"]


def test_cache_dir_kind_is_recognised_or_chosen(isolated_home, tmp_path):
    make_machine(isolated_home)
    torch_hub = os.path.join(isolated_home, ".cache", "torch", "hub")
    doc = json.loads(run_cli("scan", "--cache-dir", torch_hub, "--json").stdout)
    assert [c["kind"] for c in doc["caches"]] == ["torch"]
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    doc = json.loads(run_cli("scan", "--cache-dir", empty, "--kind", "keras", "--json").stdout)
    assert [c["kind"] for c in doc["caches"]] == ["keras"]
    with pytest.raises(NotACache):
        scan_caches([torch_hub], kinds=["keras"])


def test_one_unreadable_default_root_does_not_stop_the_others(isolated_home):
    make_machine(isolated_home)
    shutil.rmtree(os.path.join(isolated_home, ".cache", "kagglehub"))
    write(os.path.join(isolated_home, ".cache", "kagglehub"), b"a file, not a folder")
    inventory = scan_caches()
    kaggle = next(c for c in inventory.caches if c.kind == "kagglehub")
    assert "not scanned" in kaggle.warnings[0].message and not kaggle.items
    assert any(c.kind == "torch" and c.items for c in inventory.caches)
    with pytest.raises(CacheNotADirectory):
        scan_caches(kinds=["kagglehub"])


def test_nothing_found_anywhere_says_where_it_looked(isolated_home):
    result = run_cli("scan")
    assert result.exit_code == 0
    assert "No model caches found" in result.stderr
    assert os.path.join(isolated_home, ".cache", "torch", "hub") in result.stderr


def test_unknown_kind_and_type_exit_2():
    assert run_cli("scan", "--kind", "pytorch").exit_code == 2
    result = run_cli("scan", "--kind", "keras", "--type", "checkpoint")
    assert result.exit_code == 2 and "unknown item type 'checkpoint'" in result.stderr


def test_a_hub_root_that_cannot_be_scanned_still_speaks_of_repos(isolated_home, monkeypatch):
    """The kind says its revisions have refs, so even its failed root reads as the hub's ("no repos cached")."""
    hub = os.path.join(isolated_home, "not-a-hub")
    write(os.path.join(hub, "random.txt"), b"x")
    monkeypatch.setenv("HF_HUB_CACHE", hub)
    [cache] = [c for c in scan_caches().caches if c.kind == "huggingface"]
    assert "not scanned" in cache.warnings[0].message and cache.has_refs
    assert "no repos cached" in run_cli("scan").stdout


def test_a_plugin_giving_none_or_a_list_gets_the_defaults():
    """complete() fills what a plug-in left out, and what it gave as None, an empty name or a list."""

    class Sloppy:
        kind, title, types = "sloppy", "Sloppy", ("model",)
        shapes = ["a/[^/]+"]
        lock_file = None
        deletion = None
        parallel = None

        def default_roots(self, env):
            return []

        def recognizes(self, root):
            return False

        def scan(self, root, *, explicit=True):
            raise AssertionError("not scanned here")

    kind = complete(Sloppy())
    assert (kind.shapes, kind.lock_file, kind.deletion, kind.parallel, kind.has_refs) == (
        ("a/[^/]+",),
        PRUNE_LOCK,
        PATHS,
        False,
        False,
    )
    assert complete(KINDS["huggingface"]) is KINDS["huggingface"]  # a full kind stays as it is
    with pytest.raises(TypeError, match="it does not provide recognizes, scan"):
        complete(type("Half", (), {"kind": "h", "title": "H", "types": (), "default_roots": lambda self, env: []})())
