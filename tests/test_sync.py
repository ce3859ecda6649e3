"""``hfcache sync MANIFEST`` (issue 22, point 4): a node holds what its manifest lists, and keeps it.

Against the loopback hub (``tests/fakehub.py``), through the real ``snapshot_download``, with
the command run as users run it (a child process, ``HF_ENDPOINT`` pointing at the hub, as
``huggingface_hub`` reads it when imported).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.fakehub import FakeHub
from tests.support import DAY, age_everything, cli, get, payload, run_cli


def hfcache(*args: str, endpoint: str, **env: str) -> tuple[int, dict | str]:
    """``hfcache ARGS`` in a child process with ``HF_ENDPOINT``; (exit code, the JSON document or the output)."""
    done = subprocess.run(
        [sys.executable, "-m", "hfcache", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_ENDPOINT": endpoint, **env},
        timeout=120,
    )
    if "--json" in args and done.stdout.strip():
        return done.returncode, json.loads(done.stdout)
    return done.returncode, done.stdout + done.stderr


KILLED = """
import sys
from huggingface_hub import hf_hub_download
hf_hub_download("org/llm", "model.safetensors", cache_dir=sys.argv[1], endpoint=sys.argv[2])
"""

MANIFEST = """\
version: 1
models:
  - id: org/llm
    revision: main
    include: ["*.json", "*.safetensors"]
  - id: org/tagged
    revision: v1
  - id: org/data
    type: dataset
"""


@pytest.fixture
def hub():
    with FakeHub() as h:
        h.push(
            "org/llm", {"config.json": b'{"a": 1}', "model.safetensors": payload(5000, 1), "original/big.pth": payload(9000, 2)}
        )
        first = h.push("org/tagged", {"w.bin": payload(3000, 3)})
        h.tag("org/tagged", "v1", first)
        h.push("org/tagged", {"w.bin": payload(3100, 4)})  # main moved on; the manifest wants v1
        h.push("org/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
        h.push("org/other", {"w.bin": payload(2000, 5)})
        yield h


def test_a_fresh_node_gets_exactly_the_manifest_and_a_second_run_downloads_nothing(hub, tmp_path):
    root, manifest = str(tmp_path / "hub"), tmp_path / "node.yaml"
    manifest.write_text(MANIFEST)
    code, doc = hfcache("sync", str(manifest), "--cache-dir", root, "--json", endpoint=hub.endpoint)
    assert code == 0, doc
    assert [(e["id"], e["status"]) for e in doc["entries"]] == [
        ("org/llm", "fetched"),
        ("org/tagged", "fetched"),
        ("org/data", "fetched"),
    ]
    llm = doc["entries"][0]
    assert sorted(os.listdir(llm["path"])) == ["config.json", "model.safetensors"]  # not original/: not included
    assert doc["entries"][1]["resolved"] == hub.repos[("model", "org/tagged")].refs["v1"]
    code, scan = cli("scan", "--cache-dir", root, "--json", "--state", "off")
    assert sorted((i["type"], i["id"]) for i in scan["caches"][0]["items"]) == [
        ("dataset", "org/data"),
        ("model", "org/llm"),
        ("model", "org/tagged"),
    ]
    before = len(hub.requests)
    code, again = hfcache("sync", str(manifest), "--cache-dir", root, "--json", endpoint=hub.endpoint)
    assert code == 0 and [e["status"] for e in again["entries"]] == ["present"] * 3
    assert not [p for _, p in hub.requests[before:] if "/resolve/" in p]  # no file downloaded again


def test_what_the_manifest_lists_survives_an_aggressive_policy_and_rm_and_a_stale_plan(hub, tmp_path):
    root, manifest = str(tmp_path / "hub"), tmp_path / "node.yaml"
    manifest.write_text(MANIFEST)
    get(hub, root, "org/other", "w.bin")
    get(hub, root, "org/tagged", "w.bin")  # main of org/tagged too: not listed (the manifest wants v1)
    saved = str(tmp_path / "plan.json")
    assert cli("prune", "--cache-dir", root, "--max-age", "1d", "--plan-out", saved, "--dry-run")[0] == 0
    code, doc = hfcache("sync", str(manifest), "--cache-dir", root, "--json", endpoint=hub.endpoint)
    assert code == 0, doc
    listed = {e["path"] for e in doc["entries"]}
    age_everything(root, 30)
    code, plan = cli("prune", "--cache-dir", root, "--max-age", "1d", "--allow-remove-all", "--dry-run", "--json")
    assert code == 0, plan
    assert not listed & {u["path"] for u in plan["delete"]}
    kept = {u["path"]: u["reasons"] for u in plan["keep"]}
    assert listed <= set(kept) and all(any("hfcache sync" in r for r in kept[p]) for p in listed)
    assert {u["id"] for u in plan["delete"]} == {"org/other", "org/tagged"}  # org/tagged's main: not listed
    code, out = cli("rm", "org/data", "--type", "dataset", "--cache-dir", root, "--yes")
    assert code == 1 and "hfcache sync" in out and os.path.isdir(next(p for p in listed if "datasets--" in p))
    # A plan saved before the sync: applied now, what the manifest lists stays.
    age_everything(root, 30)
    code, done = cli("apply", saved, "--yes", "--json")
    assert all(os.path.isdir(p) for p in listed), done


def test_a_mirror_endpoint_is_used_when_set(tmp_path):
    manifest = tmp_path / "node.yaml"
    manifest.write_text("version: 1\nmodels:\n  - id: org/m\n")
    with FakeHub() as origin, FakeHub() as mirror:
        origin.push("org/m", {"w.bin": payload(100, 1)})
        mirror.push("org/m", {"w.bin": payload(100, 1)})
        code, doc = hfcache("sync", str(manifest), "--cache-dir", str(tmp_path / "hub"), "--json", endpoint=mirror.endpoint)
        assert code == 0, doc
        assert mirror.requests and not origin.requests


def test_a_failed_entry_is_reported_the_others_done_and_prune_clears_its_partial_download(hub, tmp_path):
    root, manifest = str(tmp_path / "hub"), tmp_path / "node.yaml"
    manifest.write_text("version: 1\nmodels:\n  - id: org/gone\n  - id: org/llm\n    include: ['*.json']\n")
    code, doc = hfcache("sync", str(manifest), "--cache-dir", root, "--json", endpoint=hub.endpoint)
    assert code == 1
    assert [(e["id"], e["status"]) for e in doc["entries"]] == [("org/gone", "failed"), ("org/llm", "fetched")]
    assert "RepositoryNotFound" in doc["entries"][0]["error"] or "404" in doc["entries"][0]["error"]
    # A download that breaks off half-way: reported, and the library leaves no partial file of it.
    hub.cut.add("model.safetensors")
    manifest.write_text("version: 1\nmodels:\n  - id: org/llm\n")
    code, doc = hfcache("sync", str(manifest), "--cache-dir", root, "--json", endpoint=hub.endpoint)
    assert code == 1 and doc["entries"][0]["status"] == "failed", doc
    blobs = os.path.join(root, "models--org--llm", "blobs")
    assert not [n for n in os.listdir(blobs) if n.endswith(".incomplete")]
    hub.cut.clear()
    # One killed mid-download (kill -9) leaves its partial: sync --prune with the node's junk policy clears it after the grace.
    hub.delay = 5.0
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, root, hub.endpoint], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not [n for n in os.listdir(blobs) if n.endswith(".incomplete")]:
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.05)
    child.kill()
    child.wait()
    hub.delay = 0.0
    (partial,) = [os.path.join(blobs, n) for n in os.listdir(blobs) if n.endswith(".incomplete")]
    old = time.time() - 2 * DAY
    os.utime(partial, (old, old))
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\njunk: true\njunk_grace: 1d\n")
    manifest.write_text("version: 1\nmodels:\n  - id: org/llm\n    include: ['*.json']\n")
    code, doc = hfcache(
        "sync", str(manifest), "--cache-dir", root, "--prune", "--config", str(policy), "--json", endpoint=hub.endpoint
    )
    assert code == 0, doc
    assert not os.path.exists(partial)
    assert [u["what"] for u in doc["prune"]["delete"]] == ["partial"]


def test_warm_asks_the_kernel_for_the_listed_files_and_bad_manifests_are_one_line_errors(hub, tmp_path):
    root, manifest = str(tmp_path / "hub"), tmp_path / "node.yaml"
    manifest.write_text(MANIFEST)
    code, doc = hfcache("sync", str(manifest), "--cache-dir", root, "--warm", "--json", endpoint=hub.endpoint)
    assert code == 0 and doc["warmed_bytes"] >= 5000, doc
    for text in ("models: 3\n", "version: 1\nmodels:\n  - {}\n", "version: 1\nmodels:\n  - id: a\n    color: red\n", "[: nope"):
        manifest.write_text(text)
        result = run_cli("sync", str(manifest), "--cache-dir", root)
        assert result.exit_code == 2 and "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_what_sync_keeps_is_written_through_no_planted_link_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """desired.json is written as the other replaced files are (``atomic_write``).

    Before, it went through ``<path>.<pid>.tmp``, a name anyone who can write the state
    folder could foresee: a symlink planted there was followed (the list written into its
    target) and then renamed over desired.json, which became that link. And a write that
    failed (a full disk) left the temporary file behind.
    """
    from hfcache import desired

    state = str(tmp_path / "state" / "state.db")
    os.makedirs(os.path.dirname(state))
    path = desired.desired_file(state)
    outside = tmp_path / "outside.json"
    outside.write_text("not yours\n")
    os.symlink(outside, f"{path}.{os.getpid()}.tmp")
    row = {"root": "/c", "kind": "huggingface", "id": "org/m", "revision": "a" * 40, "path": "/c/models--org--m/snapshots/a"}
    desired.record(state, "/etc/hfcache/node.yaml", [row])
    assert outside.read_text() == "not yours\n"
    assert not os.path.islink(path) and desired.wanted(state) == {row["path"]: "/etc/hfcache/node.yaml"}
    assert os.stat(path).st_mode & 0o777 == 0o644  # (another account's prune sharing the state folder reads it)

    os.unlink(f"{path}.{os.getpid()}.tmp")
    before = sorted(os.listdir(os.path.dirname(path)))

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        desired.record(state, "/etc/hfcache/other.yaml", [row])
    assert sorted(os.listdir(os.path.dirname(path))) == before  # no temporary file left
    monkeypatch.undo()
    assert desired.wanted(state) == {row["path"]: "/etc/hfcache/node.yaml"}  # the last good list, whole
