"""Where the hub cache is: huggingface_hub's precedence, read at call time."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hfcache.caches.huggingface.location import default_root


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "/home/me/.cache/huggingface/hub"),
        ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"),
        ({"XDG_CACHE_HOME": "/xdg", "HF_HOME": "/hf"}, "/hf/hub"),
        ({"HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/legacy"}, "/legacy"),
        ({"HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HUB_CACHE": "/new"}, "/new"),
        ({"HF_HOME": "~/hf"}, "/home/me/hf/hub"),
        ({"HF_HUB_CACHE": "$DATA/hub", "DATA": "/mnt/data"}, "/mnt/data/hub"),
        ({"HF_HUB_CACHE": "", "HF_HOME": "/hf"}, "/hf/hub"),  # empty means unset
        ({"XDG_CACHE_HOME": ""}, "/home/me/.cache/huggingface/hub"),
    ],
)
def test_precedence(env, expected):
    assert default_root({"HOME": "/home/me", **env}) == expected


def test_relative_values_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_root({"HOME": "/home/me", "HF_HUB_CACHE": "cache"}) == str(tmp_path / "cache")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"XDG_CACHE_HOME": "/xdg"},
        {"HF_HOME": "/hf", "XDG_CACHE_HOME": "/xdg"},
        {"HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HOME": "/hf"},
        {"HF_HUB_CACHE": "/new", "HUGGINGFACE_HUB_CACHE": "/legacy"},
        {"HF_HOME": "~/hf"},
    ],
)
def test_same_answer_as_huggingface_hub(env, tmp_path):
    """The library computes its constants at import: ask a fresh interpreter."""
    full = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "XDG_CACHE_HOME")}
    full.update(env, HOME=str(tmp_path))
    code = "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"
    theirs = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True)
    assert default_root(full) == os.path.abspath(theirs.stdout.strip())


def test_read_at_call_time_not_import(monkeypatch, tmp_path):
    from hfcache.caches.registry import KINDS

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a"))
    first = KINDS["huggingface"].default_roots(os.environ)[0]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "b"))
    assert first != KINDS["huggingface"].default_roots(os.environ)[0] == str(tmp_path / "b")


def test_one_cache_through_a_symlink_and_another_spelling_is_scanned_once_and_locked_once(tmp_path):
    """Roots are de-duplicated by (st_dev, st_ino): a prune of A and of a link to A takes one lock (exit 0, not 75)."""
    from hfcache.caches.scan import scan_caches
    from tests.support import run_cli
    from tests.trees import commit, repo

    root = str(tmp_path / "hub")
    old, new = commit("roots-old"), commit("roots-new")
    repo(root, "models--org--a", snapshots={old: {"w": "e1"}, new: {"w": "e2"}}, blobs={"e1": 10, "e2": 20}, refs={"main": new})
    os.symlink(root, tmp_path / "link")
    spellings = [root, str(tmp_path / "link"), root + "/.", str(tmp_path / "link" / ".." / "hub")]
    inv = scan_caches(spellings)
    assert [c.root for c in inv.caches] == [root]
    assert len(inv.caches[0].items) == 1

    args = ["prune", "--keep", "1", "--yes", "--lock-wait", "1s"]
    result = run_cli(*args, *(a for s in spellings for a in ("--cache-dir", s)))
    assert result.exit_code == 0, result.output
    assert os.listdir(os.path.join(root, "models--org--a", "snapshots")) == [new]
