"""Every cache kind other than the hub, on pyfakefs trees built from CACHE-LAYOUTS.md.

Totals are checked against sizes measured independently here (``os.walk`` + ``lstat``).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from hfcache.caches import datasets, kagglehub, keras, modelscope, tfhub, torch, transformers_legacy, vllm, xet
from hfcache.errors import NotACache
from hfcache.model import CacheInventory, Item
from tests.trees import sha256, write


def apparent(*paths: str) -> int:
    """Apparent size of files and trees, measured without hfcache."""
    total = 0
    for path in paths:
        if not os.path.isdir(path):
            total += os.lstat(path).st_size
            continue
        for folder, _, files in os.walk(path):
            total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    return total


def items(cache: CacheInventory) -> dict[str, Item]:
    return {i.id: i for i in cache.items}


def assert_consistent(cache: CacheInventory) -> None:
    """What every kind promises: totals add up, units exist, nothing protected is in a unit."""
    assert cache.size_bytes == sum(i.size_bytes for i in cache.items)
    for item in cache.items:
        assert item.size_bytes == sum(r.size_bytes for r in item.revisions)
        for rev in item.revisions:
            assert rev.size_bytes == apparent(*rev.unit_paths)
            assert rev.reclaimable_bytes == rev.size_bytes
            for path in rev.unit_paths:
                assert os.path.lexists(path) and path.startswith(cache.root + os.sep)
                assert path not in cache.protected
        for path in item.unit_paths:
            assert path not in cache.protected, (item.id, path)
    assert cache.root in cache.protected


# ---------------------------------------------------------------------------------------------
# torch hub


def test_torch_checkpoints_repos_and_leftovers(fs):
    root = "/th/hub"
    ck = f"{root}/checkpoints"
    write(f"{root}/trusted_list", b"pytorch_vision\nme_my_repo\n")
    write(f"{ck}/resnet18-5c106cde.pth", 1000)
    write(f"{ck}/resnet18-f37072fd.pth", 1100)
    write(f"{ck}/resnet50_v1.5-0676ba61.pth", 2000)
    write(f"{ck}/mobilenet-224.pth", 300)  # "-224." is not a hash: fewer than 8 hex digits
    write(f"{ck}/plain.pt", 50)
    write(f"{ck}/vgg16-397923af.pth.{'a' * 32}.partial", 700)
    write(f"{ck}/tmpab12cd34", 10)
    write(f"{root}/pytorch_vision_v0.10.0/hubconf.py", 40)
    write(f"{root}/pytorch_vision_v0.10.0/torchvision/models/x.py", 60)
    write(f"{root}/pytorch_vision_main/hubconf.py", 41)
    write(f"{root}/me_my_repo_main/hubconf.py", 5)
    write(f"{root}/you_a_b_c/hubconf.py", 5)
    write(f"{root}/v0.11.0.zip", 900)
    write(f"{root}/pytorch-vision-1a2b3c4/hubconf.py", 30)
    write(f"{root}/notes.txt", 3)
    write(f"{root}/no_hub_conf/readme", 3)

    cache = torch.scan(root)
    found = items(cache)
    assert_consistent(cache)

    resnet = found["resnet18"]
    assert resnet.type == "checkpoint" and {r.revision for r in resnet.revisions} == {"5c106cde", "f37072fd"}
    assert resnet.path == ck and set(resnet.unit_paths) == {f"{ck}/resnet18-5c106cde.pth", f"{ck}/resnet18-f37072fd.pth"}
    assert found["resnet50_v1.5"].revisions[0].version == "1.5"
    assert found["mobilenet-224"].revisions[0].revision == "mobilenet-224.pth"
    assert found["mobilenet-224"].revisions[0].version is None
    assert found["plain"].path == f"{ck}/plain.pt"

    vision = found["pytorch/vision"]
    assert vision.type == "hub-repo" and {r.revision: r.version for r in vision.revisions} == {"v0.10.0": "0.10.0", "main": None}
    assert vision.revisions[0].revision == "v0.10.0"  # versioned revisions sort newest
    # torch.hub.load("pytorch/vision") with no ref loads the default branch: the scanner says which revision that is
    assert {r.revision: r.default for r in vision.revisions} == {"v0.10.0": False, "main": True}
    assert not any(r.default for r in resnet.revisions)
    assert vision.size_bytes == 40 + 60 + 41 and vision.deletable
    assert found["me/my_repo"].revisions[0].warnings == ()  # split known from trusted_list
    guessed = found["you/a_b"]
    assert guessed.deletable and "guessed" in guessed.revisions[0].warnings[0].message

    partials = {os.path.basename(p.path): p for p in cache.partial_files}
    assert partials[f"vgg16-397923af.pth.{'a' * 32}.partial"].item_id == "vgg16"
    assert partials["tmpab12cd34"].scheme == "temporary"
    assert partials["v0.11.0.zip"].size_bytes == 900
    assert partials["pytorch-vision-1a2b3c4"].scheme == "extracting"
    unknown = {i.id for i in cache.items if i.type == "unknown"}
    assert unknown == {"notes.txt", "no_hub_conf"}
    assert not any(i.deletable for i in cache.items if i.type == "unknown")
    assert {f"{root}/trusted_list", ck, root} <= set(cache.protected)
    assert not any(i.id in ("trusted_list", "checkpoints") for i in cache.items)
    partial_bytes = sum(p.size_bytes for p in cache.partial_files)
    assert cache.size_bytes == apparent(root) - apparent(f"{root}/trusted_list") - partial_bytes


def test_torch_root_given_as_torch_home_gets_a_hint(fs):
    write("/t/hub/checkpoints/a-12345678.pth", 3)
    write("/t/other/x", 1)
    with pytest.raises(NotACache, match="did you mean /t/hub"):
        torch.scan("/t")


def test_torch_default_root_precedence():
    home = {"HOME": "/home/me"}
    assert torch.default_root(home) == "/home/me/.cache/torch/hub"
    assert torch.default_root({**home, "XDG_CACHE_HOME": "/xdg"}) == "/xdg/torch/hub"
    assert torch.default_root({**home, "XDG_CACHE_HOME": "/xdg", "TORCH_HOME": "/t"}) == "/t/hub"
    assert torch.default_root({**home, "TORCH_HOME": ""}) == "/home/me/.cache/torch/hub"  # empty = unset
    assert torch.default_root({**home, "TORCH_HUB": "/ignored"}) == "/home/me/.cache/torch/hub"


# ---------------------------------------------------------------------------------------------
# Keras


def test_keras_files_archives_and_versions(fs):
    root = "/home/me/.keras"
    write(f"{root}/keras.json", b"{}")
    m = f"{root}/models"
    d = f"{root}/datasets"
    write(f"{m}/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 900)
    write(f"{m}/weights_mobilenet_v3_large_224_1.0_float_no_top.h5", 400)
    write(f"{m}/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", 410)
    write(f"{m}/mobilenet_1_0_224_tf.h5", 300)
    write(f"{d}/mnist.npz", 1000)
    write(f"{d}/foo.tar.gz", 100)
    write(f"{d}/foo_extracted/foo/a.txt", 500)
    write(f"{d}/flower_photos.tgz_archive", 200)
    write(f"{d}/flower_photos.tgz/flower_photos/daisy/1.jpg", 700)
    write(f"{d}/bar.tar.gz", 60)  # Keras 2 untar=True
    write(f"{d}/bar/x", 6)
    write(f"{d}/lonely/thing", 9)
    write(f"{root}/stray.txt", 1)

    cache = keras.scan(root)
    found = items(cache)
    assert_consistent(cache)
    assert "keras.json" not in found and f"{root}/keras.json" in cache.protected
    assert {f"{root}/models", f"{root}/datasets"} <= set(cache.protected)

    mobile = found["weights_mobilenet_v3_large_224_1.0_float_no_top.h5"]
    assert mobile.type == "model" and [(r.revision, r.version) for r in mobile.revisions] == [
        ("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", "2"),
        ("weights_mobilenet_v3_large_224_1.0_float_no_top.h5", None),
    ]
    assert found["mobilenet_1_0_224_tf.h5"].revisions[0].version is None  # 1_0_224 is alpha/resolution
    foo = found["foo.tar.gz"]
    assert foo.type == "dataset" and foo.revisions[0].unit_paths == (f"{d}/foo.tar.gz", f"{d}/foo_extracted")
    assert foo.size_bytes == 600
    flowers = found["flower_photos.tgz"]
    assert flowers.revisions[0].unit_paths == (f"{d}/flower_photos.tgz_archive", f"{d}/flower_photos.tgz")
    assert found["bar.tar.gz"].revisions[0].unit_paths == (f"{d}/bar.tar.gz", f"{d}/bar")
    lonely = found["datasets/lonely"]
    assert lonely.type == "unknown" and not lonely.deletable
    assert any("stray.txt" in w.path for w in cache.warnings)
    assert cache.size_bytes == apparent(f"{root}/models", f"{root}/datasets")


def test_keras_default_roots(tmp_path):
    home = str(tmp_path)
    assert keras.default_roots({"HOME": home}, tmp_fallback=str(tmp_path / "nope")) == [f"{home}/.keras"]
    os.makedirs(tmp_path / ".keras")
    os.makedirs(tmp_path / "tmp" / ".keras")
    fallback = str(tmp_path / "tmp" / ".keras")
    # KERAS_HOME moves Keras 3's downloads; tf-keras still downloads to ~/.keras; /tmp/.keras when home is read-only.
    roots = keras.default_roots({"HOME": home, "KERAS_HOME": "/k"}, tmp_fallback=fallback)
    assert roots == ["/k", f"{home}/.keras", fallback]


# ---------------------------------------------------------------------------------------------
# Xet


def test_xet_endpoints_and_dead_chunk_cache(fs):
    root = "/hf/xet"
    ep = f"{root}/https___cas_serv-tGqkUaZf_CBPHQ6h"
    write(f"{ep}/shard-cache/{'a' * 64}.mdb", 5000)
    write(f"{ep}/chunk-cache/ab/key/item", 7000)
    write(f"{ep}/staging/shard-session/{'b' * 64}.mdb", 300)
    write(f"{root}/logs/xet.log", 50)
    write(f"{root}/odd.bin", 5)

    cache = xet.scan(root)
    found = items(cache)
    assert_consistent(cache)
    endpoint = found["https___cas_serv-tGqkUaZf_CBPHQ6h"]
    assert endpoint.type == "xet-endpoint" and endpoint.size_bytes == 12300 and endpoint.unit_paths == (ep,)
    chunk = next(r for r in endpoint.revisions if r.revision == "chunk-cache")
    assert "dead weight" in chunk.warnings[0].message and endpoint.deletable
    assert found["logs"].size_bytes == 50
    assert not found["odd.bin"].deletable
    assert xet.default_root({"HOME": "/h", "HF_HOME": "/data/hf", "HF_HUB_CACHE": "/else"}) == "/data/hf/xet"
    assert xet.default_root({"HOME": "/h", "HF_XET_CACHE": "/x"}) == "/x"


# ---------------------------------------------------------------------------------------------
# datasets


def test_datasets_prepared_downloads_and_extractions(fs):
    root = "/hf/datasets"
    squad = f"{root}/rajpurkar___squad/plain_text/0.0.0"
    write(f"{squad}/{'1' * 16}/dataset_info.json", 100)
    write(f"{squad}/{'1' * 16}/squad-train.arrow", 4000)
    write(f"{squad}/{'2' * 16}/squad-train.arrow", 4100)
    write(f"{squad}/{'2' * 16}_builder.lock")
    write(f"{squad}/{'3' * 16}.incomplete/squad-train.arrow", 10)
    write(f"{root}/_hf_datasets_rajpurkar___squad_plain_text_0.0.0_{'1' * 16}.lock")
    dl = f"{root}/downloads"
    name = f"{sha256('url')}.{sha256('etag')}"
    write(f"{dl}/{name}", 3000)
    write(f"{dl}/{name}.json", json.dumps({"url": "https://example.com/data.zip", "etag": "e"}).encode())
    write(f"{dl}/{name}.lock")
    extracted = hashlib.sha256(f"{dl}/{name}".encode()).hexdigest()
    write(f"{dl}/extracted/{extracted}/data.csv", 8000)
    write(f"{dl}/extracted/{sha256('gone')}/old.csv", 20)
    write(f"{dl}/{sha256('other')}.incomplete", 77)

    cache = datasets.scan(root)
    found = items(cache)
    assert_consistent(cache)
    squad_item = found["rajpurkar/squad"]
    assert squad_item.type == "dataset" and squad_item.unit_paths == (f"{root}/rajpurkar___squad",)
    assert {r.revision for r in squad_item.revisions} == {f"plain_text/0.0.0/{'1' * 16}", f"plain_text/0.0.0/{'2' * 16}"}
    assert all(r.version == "0.0.0" for r in squad_item.revisions)
    download = found["https://example.com/data.zip"]
    assert download.type == "download"
    assert set(download.unit_paths) == {f"{dl}/{name}", f"{dl}/{name}.json", f"{dl}/{name}.lock", f"{dl}/extracted/{extracted}"}
    assert download.size_bytes == apparent(*download.unit_paths)
    assert found[f"downloads/extracted/{sha256('gone')}"].type == "extracted"
    schemes = sorted((os.path.basename(p.path), p.scheme) for p in cache.partial_files)
    assert schemes == [(f"{'3' * 16}.incomplete", "temporary"), (f"{sha256('other')}.incomplete", "resumable")]
    assert datasets.default_root({"HOME": "/h", "HF_HOME": "~/hf"}) == "/h/hf/datasets"
    assert datasets.default_root({"HOME": "/h", "HF_DATASETS_CACHE": "/d"}) == "/d"


# ---------------------------------------------------------------------------------------------
# kagglehub


def test_kagglehub_versions_markers_and_unfinished(fs):
    root = "/home/me/.cache/kagglehub"
    var = f"{root}/models/keras/gemma/keras/gemma_2b_en"
    write(f"{var}/1/model.weights.h5", 1000)
    write(f"{var}/1.complete")
    write(f"{var}/2/model.weights.h5", 1200)
    write(f"{var}/.complete/2/model.weights.h5.complete")  # single-file download
    write(f"{var}/10/model.weights.h5", 1300)
    write(f"{var}/10.complete")
    write(f"{var}/3/model.weights.h5", 40)  # not marked complete: kagglehub would fetch it again
    write(f"{var}/4.archive", 90)
    ds = f"{root}/datasets/owner/titanic"
    write(f"{ds}/versions/5/train.csv", 600)
    write(f"{ds}/5.complete")
    write(f"{root}/competitions/digits/train.csv", 70)
    write(f"{root}/competitions/digits.complete")

    cache = kagglehub.scan(root)
    found = items(cache)
    assert_consistent(cache)
    gemma = found["keras/gemma/keras/gemma_2b_en"]
    assert gemma.type == "model"
    assert [(r.revision, r.version) for r in gemma.revisions] == [("10", "10"), ("2", "2"), ("1", "1")]  # integers, newest first
    assert gemma.revisions[2].unit_paths == (f"{var}/1", f"{var}/1.complete")
    assert gemma.revisions[1].unit_paths == (f"{var}/2", f"{var}/.complete/2")
    titanic = found["owner/titanic"]
    assert titanic.type == "dataset" and titanic.revisions[0].unit_paths == (f"{ds}/versions/5", f"{ds}/5.complete")
    assert found["digits"].type == "competition"
    partials = sorted((os.path.basename(p.path), p.scheme) for p in cache.partial_files)
    assert partials == [("3", "unmarked"), ("4.archive", "temporary")]
    assert kagglehub.default_root({"HOME": "/h", "KAGGLEHUB_CACHE": "/k"}) == "/k"


# ---------------------------------------------------------------------------------------------
# transformers < 4.22


def test_transformers_legacy_triples(fs):
    root = "/hf/transformers"
    url = "https://huggingface.co/bert-base-uncased/resolve/main/pytorch_model.bin"
    url_hash = hashlib.sha256(url.encode()).hexdigest()
    for etag, size in (("e1", 400), ("e2", 500)):
        name = f"{url_hash}.{sha256(etag)}"
        write(f"{root}/{name}", size)
        write(f"{root}/{name}.json", json.dumps({"url": url, "etag": etag}).encode())
        write(f"{root}/{name}.lock")
    s3 = f"{sha256('s3')}.{sha256('x')}.h5"
    write(f"{root}/{s3}", 30)
    write(f"{root}/{s3}.json", json.dumps({"url": "https://s3.amazonaws.com/models.huggingface.co/bert/x.h5"}).encode())
    write(f"{root}/{sha256('p')}.{sha256('q')}.incomplete", 5)
    write(f"{root}/tmpa1b2c3d4", 6)
    write(f"{root}/version.txt", b"1")
    write(f"{root}/models--org--new/refs/main", b"0" * 40)

    cache = transformers_legacy.scan(root)
    found = items(cache)
    assert_consistent(cache)
    bert = found["bert-base-uncased/pytorch_model.bin"]
    assert bert.type == "file" and len(bert.revisions) == 2 and bert.revisions[0].refs == ("main",)
    assert len(bert.unit_paths) == 6 and bert.size_bytes == apparent(*bert.unit_paths) > 900
    assert "https://s3.amazonaws.com/models.huggingface.co/bert/x.h5" in found
    assert sorted(p.scheme for p in cache.partial_files) == ["resumable", "temporary"]
    assert any("hub-layout" in w.message for w in cache.warnings)
    assert transformers_legacy.default_root({"HOME": "/h", "PYTORCH_TRANSFORMERS_CACHE": "/p"}) == "/p"
    assert (
        transformers_legacy.default_root({"HOME": "/h", "TRANSFORMERS_CACHE": "/t", "PYTORCH_TRANSFORMERS_CACHE": "/p"}) == "/t"
    )


# ---------------------------------------------------------------------------------------------
# Roots that are not caches, and missing ones


@pytest.mark.parametrize("module", [torch, keras, xet, datasets, kagglehub, transformers_legacy, modelscope, tfhub, vllm])
def test_each_kind_refuses_a_home_folder_and_accepts_a_missing_default(fs, module):
    write("/home/me/Documents/cv.pdf", 10)
    with pytest.raises(NotACache):
        module.scan("/home/me")
    missing = module.scan("/nowhere", explicit=False)
    assert not missing.exists and missing.items == ()


def test_keras_fallback_folder_is_scanned_when_it_exists(isolated_home):
    from hfcache.caches.scan import scan_caches

    fallback = keras.TMP_FALLBACK  # pointed into this test's home by conftest
    write(os.path.join(fallback, "models", "vgg16.h5"), 12)
    inventory = scan_caches(kinds=["keras"])
    assert [(c.root, c.exists) for c in inventory.caches] == [
        (os.path.join(isolated_home, ".keras"), False),
        (fallback, True),
    ]
    assert inventory.caches[1].items[0].id == "vgg16.h5"
