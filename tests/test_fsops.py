"""hfcache.fs.ops.Tree: the held folder descriptors it acts through."""

from __future__ import annotations

import os

from hfcache.fs import ops as fsops
from tests.trees import write


def test_a_folder_in_use_keeps_its_descriptor_while_others_push_it_out_of_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(fsops, "MAX_HELD", 2)
    root = str(tmp_path)
    write(os.path.join(root, "a", "x"), b"x")
    for i in range(6):
        write(os.path.join(root, "b", f"d{i}", "y"), b"y")
    with fsops.Tree(root) as tree, tree.parent(os.path.join(root, "a", "x")) as (fd, name):
        for i in range(6):  # more folders than the cache holds: "a" leaves it while in use
            assert tree.listdir(os.path.join(root, "b", f"d{i}")) == ["y"]
        tree.forget(os.path.join(root, "a"))  # and is forgotten: still not closed under the caller
        spare = os.open(root, os.O_RDONLY)  # a descriptor closed too early would be reused here
        try:
            assert os.listdir(fd) == ["x"] and name == "x"
        finally:
            os.close(spare)
