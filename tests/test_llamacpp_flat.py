"""llama.cpp's flat cache (builds before March 2026): the kind ``llama-cpp-flat`` (issue 18, point 1).

Trees are laid out as llama.cpp's ``common/arg.cpp`` and ``common/download.cpp`` of that time
wrote them: ``get_manifest_path`` (``manifest=<user>=<model>=<tag>.json``, the Hub's answer to
``/v2/<repo>/manifests/<tag>``), ``common_params_handle_model`` (the file as ``hf_repo + "_" +
hf_file``, "/" made "_"), ``write_etag`` (``<file>.etag``), ``common_download_file_single_online``
(``<file>.downloadInProgress``, appended, no lock), ``llama_split_path`` (``-%05d-of-%05d.gguf``),
``common_docker_resolve_model`` (``<repo>_<tag>.gguf``, no manifest).
"""

from __future__ import annotations

import json
import os
import time

import pytest

import hfcache
from hfcache.caches.llamacpp_flat import KIND, default_root
from tests.support import cli, contents
from tests.test_hub_writers import APPEND, HOLD, age, children  # noqa: F401 - the fixture
from tests.trees import write

MODEL = "org/Model-GGUF"


def manifest(root: str, tag: str, gguf: str, mmproj: str | None = None) -> str:
    doc: dict[str, object] = {"ggufFile": {"rfilename": gguf, "blobId": "x", "size": 1}}
    if mmproj:
        doc["mmprojFile"] = {"rfilename": mmproj}
    path = os.path.join(root, f"manifest={MODEL.replace('/', '=')}={tag}.json")
    write(path, json.dumps(doc).encode())
    return path


def model_file(root: str, rfilename: str, size: int) -> str:
    path = os.path.join(root, f"{MODEL}_{rfilename}".replace("/", "_"))
    write(path, b"G" * size)
    write(path + ".etag", b'"etag"')
    return path


def flat_cache(root: str) -> dict[str, str]:
    """Three tags of one model (latest and Q4_K_M name the same file), a split model, a Docker model."""
    q4 = model_file(root, "model-Q4_K_M.gguf", 1000)
    q8 = model_file(root, "Q8/model-Q8_0.gguf", 2000)
    mm = model_file(root, "mmproj-f16.gguf", 300)
    manifest(root, "latest", "model-Q4_K_M.gguf")
    manifest(root, "Q4_K_M", "model-Q4_K_M.gguf", "mmproj-f16.gguf")
    manifest(root, "Q8_0", "Q8/model-Q8_0.gguf")
    parts = [model_file(root, f"big-{i:05d}-of-00003.gguf", 100) for i in (1, 2, 3)]
    manifest(root, "big", "big-00001-of-00003.gguf")
    docker = os.path.join(root, "ai_smollm2_135M-Q4_0.gguf")
    write(docker, b"D" * 50)
    return {"q4": q4, "q8": q8, "mm": mm, "docker": docker, "part2": parts[1]}


def _age_all(root: str) -> None:
    for name in os.listdir(root):
        if os.path.isfile(os.path.join(root, name)):
            age(os.path.join(root, name), 10)


def test_the_root_is_fs_get_cache_directory(isolated_home):
    assert default_root({"HOME": "/h"}, "linux") == "/h/.cache/llama.cpp"
    assert default_root({"HOME": "/h", "XDG_CACHE_HOME": "/x", "LLAMA_CACHE": "/m"}, "linux") == "/m"


def test_tags_are_revisions_files_are_counted_once_and_latest_is_the_default(tmp_path):
    root = str(tmp_path / "llama.cpp")
    flat_cache(root)
    [cache] = hfcache.scan([root], kinds=[KIND]).caches
    assert cache.kind == KIND and cache.all_warnings == []
    items = {i.id: i for i in cache.items}
    assert set(items) == {MODEL, "ai_smollm2_135M-Q4_0"}
    model = items[MODEL]
    assert {r.revision for r in model.revisions} == {"latest", "Q4_K_M", "Q8_0", "big"}
    assert [r.revision for r in model.revisions if r.default] == ["latest"]
    on_disk = sum(os.path.getsize(os.path.join(root, n)) for n in os.listdir(root))
    assert cache.size_bytes == on_disk  # every file once: the shared Q4 file too
    big = next(r for r in model.revisions if r.revision == "big")
    assert big.nb_files == 7  # the manifest, three parts and their ETags


def test_removing_tags_keeps_a_file_another_tag_names_until_the_last_goes(tmp_path):
    root = str(tmp_path / "llama.cpp")
    files = flat_cache(root)
    code, done = cli("rm", f"{MODEL}@Q4_K_M", "--cache-dir", root, "--kind", KIND, "--yes", "--json")
    assert code == 0, done
    assert os.path.exists(files["q4"]) and not os.path.exists(files["mm"])  # latest names q4 too
    assert not os.path.exists(os.path.join(root, "manifest=org=Model-GGUF=Q4_K_M.json"))
    code, done = cli("rm", f"{MODEL}@latest", "--cache-dir", root, "--kind", KIND, "--yes", "--json")
    assert code == 0, done
    assert not os.path.exists(files["q4"]) and not os.path.exists(files["q4"] + ".etag")
    assert os.path.exists(files["q8"]) and os.path.exists(files["part2"]) and os.path.exists(files["docker"])
    assert done["freed_bytes"] == done["reclaim_bytes"] > 1000


def test_an_unreadable_manifest_keeps_every_file_of_its_model(tmp_path):
    root = str(tmp_path / "llama.cpp")
    flat_cache(root)
    write(os.path.join(root, "manifest=org=Model-GGUF=Q8_0.json"), b"{not json")
    _age_all(root)
    before = contents(root)
    code, plan = cli("prune", "--cache-dir", root, "--kind", KIND, "--max-age", "1d", "--dry-run", "--json")
    assert code == 0, plan
    assert {u["id"] for u in plan["delete"]} == {"ai_smollm2_135M-Q4_0"}
    assert contents(root) == before


def test_a_live_download_survives_prune_junk_and_a_stale_one_goes(tmp_path, children):  # noqa: F811
    root = str(tmp_path / "llama.cpp")
    files = flat_cache(root)
    partial = files["q8"].replace("Q8_0", "Q6_K") + ".downloadInProgress"
    write(partial, b"")
    downloader = children(APPEND, partial)
    time.sleep(0.2)
    code, doc = cli("prune", "--cache-dir", root, "--kind", KIND, "--junk", "--yes", "--json")
    assert code == 0, doc
    assert partial in {u["path"] for u in doc["keep"]} and os.path.getsize(partial) > 0
    downloader.stop()
    held = children(HOLD, partial)
    age(partial, 2)
    code, doc = cli("prune", "--cache-dir", root, "--kind", KIND, "--junk", "--yes", "--json")
    [unit] = [u for u in doc["delete"] if u["path"] == partial]
    assert unit["status"] == "skipped" and "in use" in unit["error"]  # stale, but a process holds it
    held.stop()
    code, doc = cli("prune", "--cache-dir", root, "--kind", KIND, "--junk", "--yes", "--json")
    assert code == 0 and not os.path.exists(partial), doc
    assert os.path.exists(files["q8"])  # the model itself stays


@pytest.mark.parametrize("stranger", ["notes.txt", "models--org--m"])
def test_what_llama_cpp_did_not_write_is_left_alone(tmp_path, stranger):
    root = str(tmp_path / "llama.cpp")
    flat_cache(root)
    if stranger.startswith("models--"):
        os.makedirs(os.path.join(root, stranger, "snapshots"))  # a hub repo in the same $LLAMA_CACHE: the hub kind's
    else:
        write(os.path.join(root, stranger), b"mine")
    [cache] = hfcache.scan([root], kinds=[KIND]).caches
    assert [w.path for w in cache.all_warnings] == ([os.path.join(root, stranger)] if "." in stranger else [])
    _age_all(root)
    code, plan = cli("prune", "--cache-dir", root, "--kind", KIND, "--max-age", "1d", "--junk", "--yes", "--json")
    assert code == 0, plan
    assert os.path.exists(os.path.join(root, stranger))
