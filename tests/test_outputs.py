"""Output files (issue 15, item 8): ``--plan-out``, ``--textfile`` and ``--log`` never land in a cache.

A path that resolves into a cache root (directly, through a symlink at its name, or
through a symlinked folder) is refused with exit 2 and one line, before anything is
written or deleted; the model data it aimed at stays byte for byte. Files that replace a
file are written atomically and replace a symlink at their name instead of following it.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from hfcache.errors import UsageError
from hfcache.execute.audit import read_log
from hfcache.output.files import atomic_write, landing_places, open_append_nofollow, refuse_in_caches
from tests.support import cli, contents, small_cache

KEPT = os.path.join("models--org--a", "blobs", "org--a-e2")


@pytest.fixture
def hub_root(tmp_path) -> str:
    """A hub cache with two models; ``kept_blob`` (org/a's main revision's blob) is filled with telling bytes."""
    root = str(tmp_path / "hub")
    small_cache(root)
    with open(os.path.join(root, KEPT), "r+b") as f:  # same size (the scan's figures do not move), recognisable bytes
        f.write(os.urandom(os.path.getsize(os.path.join(root, KEPT))))
    return root


@pytest.fixture
def kept_blob(hub_root) -> str:
    return os.path.join(hub_root, KEPT)


def _refused(code: int, out: str, option: str) -> None:
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option} ") and "inside the cache" in lines[0], out


def _aims(tmp_path, kept: str) -> dict[str, str]:
    """The ways to aim at ``kept``: its own path, a symlink to it, a path through a symlinked folder."""
    link = str(tmp_path / "out-link")
    os.symlink(kept, link)
    folder_link = str(tmp_path / "blobs-link")
    os.symlink(os.path.dirname(kept), folder_link)
    return {"blob": kept, "link": link, "through-folder": os.path.join(folder_link, os.path.basename(kept))}


@pytest.mark.parametrize("aim", ["blob", "link", "through-folder"])
def test_plan_out_into_a_cache_is_refused_and_the_blob_is_untouched(tmp_path, hub_root, kept_blob, aim):
    path = _aims(tmp_path, kept_blob)[aim]
    before = contents(hub_root)
    code, out = cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--dry-run", "--plan-out", path)
    _refused(code, out, "--plan-out")
    # A real run too: refused before the plan is written and before anything is deleted.
    code, out = cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--yes", "--plan-out", path)
    _refused(code, out, "--plan-out")
    assert contents(hub_root) == before
    assert os.path.islink(str(tmp_path / "out-link"))  # the link is left alone too
    assert not [n for n in os.listdir(os.path.dirname(kept_blob)) if n.startswith(".")]  # no temporary file either


def test_plan_out_to_a_new_file_inside_a_cache_is_refused(tmp_path, hub_root):
    before = contents(hub_root)
    for path in (
        os.path.join(hub_root, "plan.json"),
        os.path.join(hub_root, "models--org--b", "snapshots", "plan.json"),
        hub_root,
    ):
        code, out = cli("prune", "--cache-dir", hub_root, "--keep", "1", "--dry-run", "--plan-out", path)
        _refused(code, out, "--plan-out")
    assert contents(hub_root) == before


@pytest.mark.parametrize("aim", ["blob", "link", "through-folder"])
def test_textfile_into_a_cache_is_refused_and_the_blob_is_untouched(tmp_path, hub_root, kept_blob, aim):
    path = _aims(tmp_path, kept_blob)[aim]
    before = contents(hub_root)
    code, out = cli("metrics", "--cache-dir", hub_root, "--textfile", path)
    _refused(code, out, "--textfile")
    assert contents(hub_root) == before


@pytest.mark.parametrize("aim", ["blob", "link", "through-folder"])
def test_log_into_a_cache_is_refused_before_anything_is_deleted(tmp_path, hub_root, kept_blob, aim):
    path = _aims(tmp_path, kept_blob)[aim]
    before = contents(hub_root)
    code, out = cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--yes", "--log", path)
    _refused(code, out, "--log")
    assert contents(hub_root) == before

    # apply: the roots come from the plan.
    plan = str(tmp_path / "plan.json")
    code, out = cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--dry-run", "--plan-out", plan)
    assert code == 0, out
    code, out = cli("apply", plan, "--yes", "--log", path)
    _refused(code, out, "--log")
    assert contents(hub_root) == before


def test_an_output_inside_a_default_cache_of_another_kind_is_refused(tmp_path, hub_root, isolated_home):
    """Pruning only one cache does not make another one's files fair game."""
    torch_hub = os.path.join(isolated_home, ".cache", "torch", "hub")
    os.makedirs(os.path.join(torch_hub, "checkpoints"))
    code, out = cli(
        "prune",
        "--cache-dir",
        hub_root,
        "--max-age",
        "30d",
        "--dry-run",
        "--plan-out",
        os.path.join(torch_hub, "checkpoints", "p"),
    )
    _refused(code, out, "--plan-out")


def test_normal_output_paths_still_work(tmp_path, hub_root, kept_blob):
    blob_before = open(kept_blob, "rb").read()
    outside = tmp_path / "out"
    outside.mkdir()
    target = outside / "elsewhere.json"
    target.write_text("old")
    plan_link = outside / "plan.json"
    os.symlink(target, plan_link)  # a link outside every cache: replaced by the plan, its target untouched
    log = str(outside / "audit.log")
    code, out = cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--dry-run", "--plan-out", str(plan_link))
    assert code == 0, out
    assert not os.path.islink(plan_link) and json.loads(plan_link.read_text())["version"] == 1
    assert target.read_text() == "old"
    code, done = cli("apply", str(plan_link), "--yes", "--json", "--log", log)
    assert code == 0, done
    assert {u["status"] for u in done["delete"]} == {"deleted"} and len(done["delete"]) == 2
    assert [r["status"] for r in read_log(log) if r["status"] == "deleted"] == ["deleted"] * 2
    prom = str(outside / "hfcache.prom")
    code, out = cli("metrics", "--cache-dir", hub_root, "--textfile", prom)
    assert code == 0 and "hfcache_cache_size_bytes" in open(prom).read(), out
    assert stat.S_IMODE(os.stat(prom).st_mode) == 0o644
    assert sorted(os.listdir(outside)) == ["audit.log", "elsewhere.json", "hfcache.prom", "plan.json"]
    assert open(kept_blob, "rb").read() == blob_before


# ---------------------------------------------------------------------------------------------
# The helpers


def test_refuse_in_caches_resolves_the_path_its_folder_and_the_roots(tmp_path, monkeypatch):
    root = tmp_path / "real-hub"
    (root / "models--a--b" / "blobs").mkdir(parents=True)
    os.symlink(root, tmp_path / "hub")  # the cache known by a symlinked path
    os.symlink(root / "models--a--b" / "blobs" / "missing", tmp_path / "dangling")  # a dangling link into it
    refuse_in_caches(str(tmp_path / "plan.json"), [str(tmp_path / "hub")], "--plan-out")
    refuse_in_caches(str(tmp_path / "real-hub-sibling" / "x"), [str(root)], "--plan-out")  # a name prefix is not inside
    for bad in (root / "x", root / "models--a--b" / "blobs" / "new", tmp_path / "dangling", tmp_path / "hub" / "y", root):
        with pytest.raises(UsageError, match="inside the cache"):
            refuse_in_caches(str(bad), [str(tmp_path / "hub")], "--log")
    monkeypatch.chdir(root / "models--a--b")
    with pytest.raises(UsageError, match="resolves to"):
        refuse_in_caches("blobs/rel.json", [str(root)], "--plan-out")  # relative paths too
    assert landing_places(str(tmp_path / "dangling")) == (
        str(tmp_path / "dangling"),
        str(root / "models--a--b" / "blobs" / "missing"),
    )


def test_atomic_write_replaces_a_symlink_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    link = tmp_path / "out"
    os.symlink(target, link)
    atomic_write(str(link), "new text")
    assert not os.path.islink(link) and link.read_text() == "new text" and target.read_bytes() == b"precious"
    atomic_write(str(link), b"\x00bytes", mode=0o640)
    assert link.read_bytes() == b"\x00bytes" and stat.S_IMODE(os.stat(link).st_mode) == 0o640
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        atomic_write(str(tmp_path / "dir"), "x")  # cannot replace a folder
    with pytest.raises(OSError):
        atomic_write(str(tmp_path / "missing" / "x"), "x")
    assert sorted(os.listdir(tmp_path)) == ["dir", "out", "target"]


def test_open_append_nofollow_appends_and_refuses_links(tmp_path):
    log = str(tmp_path / "audit.log")
    for line in (b"one\n", b"two\n"):
        fd = open_append_nofollow(log)
        os.write(fd, line)
        os.close(fd)
    assert open(log, "rb").read() == b"one\ntwo\n"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o644 & ~_umask()

    blob = tmp_path / "blob"
    blob.write_bytes(b"model data")
    os.symlink(blob, tmp_path / "sym.log")
    with pytest.raises(OSError, match="symbolic link"):
        open_append_nofollow(str(tmp_path / "sym.log"))
    os.link(blob, tmp_path / "hard.log")
    with pytest.raises(OSError, match="2 hard links"):
        open_append_nofollow(str(tmp_path / "hard.log"))
    assert blob.read_bytes() == b"model data"
    fd = open_append_nofollow(os.devnull)  # not a regular file: fine
    os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
