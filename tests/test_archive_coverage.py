"""``prune --archive-to``: never neither copy, whatever a kind's units share or leave around them.

Every non-empty file a prune removes must be in the archive (restored byte for byte), and a
restore must bring back only the unit asked for. Real folders, the CLI in this process.
"""

from __future__ import annotations

import json
import os

from tests.support import age_everything, cli, contents
from tests.trees import write

OURS = (".hfcache", ".locks")  # hfcache's own lock and trash


def _ours(path: str) -> bool:
    return path.startswith(OURS)


def _prune_all(root: str, kind: str, dest: str) -> dict:
    args = ("--cache-dir", root, "--kind", kind, "--max-age", "30d", "--allow-remove-all", "--archive-to", dest)
    code, plan = cli("prune", *args, "--yes", "--json")
    assert code == 0, plan
    return plan


def _restore_all(root: str, kind: str, dest: str) -> None:
    code, listing = cli("archive", "ls", dest, "--json")
    assert code == 0, listing
    wanted = [f"{u['id']}@{u['revision']}" for u in listing["units"]]
    code, out = cli("restore", dest, *wanted, "--cache-dir", root, "--kind", kind, "--json")
    assert code == 0 and {u["status"] for u in out["units"]} == {"restored"}, out


def test_a_dataset_folder_keeps_the_files_of_its_own_when_its_last_version_goes(tmp_path):
    """A dataset's folder went with its last prepared version, and with it the loose files the scan reports as items of
    their own ("never deleted"), in no version's archive: gone from both. They stay; the versions round-trip."""
    root = str(tmp_path / "datasets")
    folder = f"{root}/rajpurkar___squad"
    version = f"{folder}/plain_text/0.0.0"
    write(f"{version}/{'1' * 16}/squad-train.arrow", b"A" * 4000)
    write(f"{version}/{'2' * 16}/squad-train.arrow", b"B" * 4100)
    readme = write(f"{folder}/README.md", b"notes kept beside the dataset")
    notes = write(f"{version}/notes.txt", b"a loose file in a version folder")
    age_everything(root, 90)
    before = contents(root)
    dest = str(tmp_path / "archive")
    plan = _prune_all(root, "datasets", dest)
    gone = [u for u in plan["delete"] if u["what"] == "revision"]
    assert len(gone) == 2 and all(u["status"] == "deleted" for u in gone), plan
    assert os.path.isfile(readme) and os.path.isfile(notes)  # items of their own: never deleted
    _restore_all(root, "datasets", dest)
    assert {p: d for p, d in contents(root).items() if not _ours(p)} == {p: d for p, d in before.items() if not _ours(p)}
    code, scan = cli("scan", "--cache-dir", root, "--kind", "datasets", "--revisions", "--json")
    found = {i["id"]: len(i["revisions"]) for c in scan["caches"] for i in c["items"]}
    assert found["rajpurkar/squad"] == 2, found


def test_a_kagglehub_competition_is_archived_pruned_and_restored(tmp_path):
    """A competition's folder and marker sit right under ``competitions/``, a shape the kind did not allow: any prune
    planning one was refused whole (exit 4), the other units with it."""
    root = str(tmp_path / "kagglehub")
    write(f"{root}/competitions/titanic/train.csv", b"T" * 300)
    write(f"{root}/competitions/titanic.complete")
    write(f"{root}/datasets/owner/iris/versions/1/iris.csv", b"I" * 200)
    write(f"{root}/datasets/owner/iris/1.complete")
    age_everything(root, 90)
    before = contents(root)
    dest = str(tmp_path / "archive")
    plan = _prune_all(root, "kagglehub", dest)
    assert sorted((u["id"], u["status"]) for u in plan["delete"]) == [("owner/iris", "deleted"), ("titanic", "deleted")]
    assert not os.path.exists(f"{root}/competitions/titanic")
    _restore_all(root, "kagglehub", dest)
    assert {p: d for p, d in contents(root).items() if not _ours(p)} == {p: d for p, d in before.items() if not _ours(p)}


def _llama_model(root: str, model: str, tag: str, gguf: str, data: bytes) -> str:
    doc = {"ggufFile": {"rfilename": gguf, "blobId": "x", "size": len(data)}}
    write(os.path.join(root, f"manifest={model.replace('/', '=')}={tag}.json"), json.dumps(doc).encode())
    path = write(os.path.join(root, f"{model}_{gguf}".replace("/", "_")), data)
    write(path + ".etag", b'"etag"')
    return path


def test_a_llama_cpp_tag_archive_holds_its_own_model_only(tmp_path):
    """A tag's archive took the files every model's tag of that name names (two models' ``latest``): archiving one
    copied the other's model file, and restoring it wrote that file back, a loose .gguf no manifest names."""
    root = str(tmp_path / "llama.cpp")
    a = _llama_model(root, "org/A-GGUF", "latest", "a-Q4_K_M.gguf", b"A" * 1000)
    b = _llama_model(root, "org/B-GGUF", "latest", "b-Q4_K_M.gguf", b"B" * 1500)
    age_everything(root, 90)
    dest = str(tmp_path / "archive")
    plan = _prune_all(root, "llama-cpp-flat", dest)
    assert sorted((u["id"], u["status"]) for u in plan["delete"]) == [("org/A-GGUF", "deleted"), ("org/B-GGUF", "deleted")]
    code, out = cli("restore", dest, "org/A-GGUF@latest", "--cache-dir", root, "--kind", "llama-cpp-flat", "--json")
    assert code == 0 and [u["status"] for u in out["units"]] == ["restored"], out
    assert os.path.isfile(a) and not os.path.lexists(b)  # org/B was not asked for
    code, scan = cli("scan", "--cache-dir", root, "--kind", "llama-cpp-flat", "--json")
    assert [i["id"] for c in scan["caches"] for i in c["items"]] == ["org/A-GGUF"], scan


def test_a_prune_killed_inside_a_kagglehub_version_never_leaves_a_half_folder_marked_complete(isolated_home):
    """kagglehub loads a version when its folder and its ``.complete`` marker both exist (``load_from_cache``):
    killed while the folder's files were being unlinked in place, the prune left half a model, still marked complete,
    which kagglehub would hand to the user. The folder now leaves its place whole first; the next prune finishes."""
    import time

    from hfcache.caches import kagglehub
    from tests.support import age_everything, run_cli, slow_cli

    root = os.path.join(isolated_home, "kaggle")
    var = f"{root}/models/google/gemma/keras/2b"
    for i in range(30):
        write(f"{var}/1/part-{i:02d}.bin", b"w" * 100)
    write(f"{var}/1.complete")
    write(f"{var}/2/model.bin", b"v" * 100)
    write(f"{var}/2.complete")
    age_everything(root, 90)
    os.utime(f"{var}/2/model.bin")  # 2 is read today: it stays
    args = ("prune", "--cache-dir", root, "--kind", "kagglehub", "--max-age", "30d", "--yes")
    proc = slow_cli(0.05, *args)
    deadline = time.time() + 60
    while os.path.exists(f"{var}/1/part-00.bin") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # a few files gone, most not
    proc.kill()
    proc.communicate()
    half = os.path.isdir(f"{var}/1") and len(os.listdir(f"{var}/1")) < 30
    assert not (half and os.path.exists(f"{var}/1.complete")), "half a version, still marked complete"
    assert os.path.isfile(f"{var}/2/model.bin") and os.path.exists(f"{var}/2.complete")
    assert [i.path for i in kagglehub.scan(root).items for r in i.revisions if r.revision == "1"] in ([], [var])
    done = run_cli(*args)
    assert done.exit_code == 0, done.output
    assert not os.path.lexists(f"{var}/1") and not os.path.lexists(os.path.join(root, ".hfcache-trash"))
    assert os.path.isfile(f"{var}/2/model.bin")
