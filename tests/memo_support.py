"""What the tests of verify's memos share (tests/test_verify_memo.py, tests/test_adversarial_memo.py).

Fixtures: ``no_margin`` (memos of what was written a moment ago: a test's cache was just built)
and ``reuses`` (every :class:`hfcache.verify.memo.Reuse` a verify makes, to see which repos it
counted from memos) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from array import array

from tests.support import run_cli

MODEL = "models--org--model"


def view_of(root: str, state: str, *args: str):
    """The default view (what cron runs): exit code, files, the counts as worded, the whole output."""
    result = run_cli("verify", "--cache-dir", root, "--state", state, *args, env={"COLUMNS": "200"})
    counts = re.search(rf"huggingface {re.escape(root)}: (\d+) files?: (.*)", result.stdout)
    assert counts, result.output
    return result.exit_code, int(counts.group(1)), counts.group(2).strip(), result.output


def judged_of(root: str, state: str, *args: str):
    """What judging every file says (--json uses no memo): exit code, files, and the counts as the view words them."""
    result = run_cli("verify", "--cache-dir", root, "--state", state, "--json", *args)
    doc = json.loads(result.stdout)
    (cache,) = doc["caches"]
    words = ", ".join(f"{n} {v}" for v, n in cache["counts"].items() if n)
    assert len(cache["files"]) == sum(cache["counts"].values())
    return result.exit_code, len(cache["files"]), words


def hits(reuses) -> set[str]:
    """The repo folders the last verify counted from their memos."""
    return {os.path.basename(m.path) for r in reuses[-1:] for ms in r.hits.values() for m in ms}


def memos(state: str) -> set[str]:
    """The repo folders the state database has a memo of."""
    with sqlite3.connect(state) as db:
        return {os.path.basename(os.fsdecode(p)) for (p,) in db.execute("SELECT path FROM verify_memos")}


def warm(root: str, state: str, reuses) -> set[str]:
    """Runs until the memos are made and used; the repos counted from them."""
    first = view_of(root, state)
    assert first[0] == 0, first
    second = view_of(root, state)
    assert second[:3] == first[:3]
    return hits(reuses)


def blob_of(root: str, repo: str, commit: str, name: str) -> str:
    return os.path.realpath(os.path.join(root, repo, "snapshots", commit, name))


def pretend_unmoved(state: str, root: str, repos: tuple[str, ...], path: str) -> None:
    """As if bit rot of ``path`` moved no timestamp: its digest row and the memos of ``repos`` take its present times."""
    st = os.stat(path)
    with sqlite3.connect(state) as db:
        db.execute("UPDATE digests SET mtime_ns = ?, ctime_ns = ? WHERE ino = ?", (st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        for repo in repos:
            key = os.fsencode(os.path.join(root, repo))
            (ident,) = db.execute("SELECT ident FROM verify_memos WHERE path = ?", (key,)).fetchone()
            values = array("q")
            values.frombytes(ident)
            for i in range(0, len(values), 5):
                if values[i + 1] == st.st_ino:
                    values[i + 3], values[i + 4] = st.st_mtime_ns, st.st_ctime_ns
            db.execute("UPDATE verify_memos SET ident = ? WHERE path = ?", (values.tobytes(), key))


def rot(state: str, root: str, commit: str, repos: tuple[str, ...] = (MODEL,)) -> str:
    """Bit rot in org/model's model.safetensors at ``commit``, no timestamp moved (as far as the state database
    and the memos of ``repos`` can tell: a ctime cannot be set back by hand); the blob's path."""
    blob = blob_of(root, MODEL, commit, "model.safetensors")
    with open(blob, "r+b") as f:
        f.write(b"\0rot")
    pretend_unmoved(state, root, repos, blob)
    return blob
