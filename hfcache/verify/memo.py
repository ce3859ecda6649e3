"""A repeat verify's shortcut: a repo folder unchanged since a verify judged it whole is not walked nor judged again.

A verify that found every file of a repo ``ok`` (or ``unverifiable`` for want of any hash: a
verdict its layout alone decides) keeps a *memo* of it in the state database: the identity
``(dev, inode, size, mtime, ctime)`` of the repo folder, of every folder in it and of every file
in it that is not a symlink (its blobs, its refs, its ``.no_exist`` markers), taken with
``lstat``; the verdicts counted; the contents judged, by ``(dev, inode)``. The next verify
looks at those identities again (one ``lstat`` each: no listing, no ``readlink``, no scan of
the repo, no verdict built per file) and, when every one is the same, counts the memo's
verdicts instead of walking the repo. This is how git's index and ``git status`` skip an
unchanged work tree.

Why the same identities mean the same verdicts:

- A snapshot link, a blob, a ref or a folder added, removed, renamed or replaced moves the
  mtime and ctime of the folder it is in; a symlink cannot be rewritten in place. So the same
  folders mean the same entries, and the same links to the same names.
- A file written in place (a ref, a blob written through its link) moves its own mtime and
  ctime, and the memo has its identity: the same identity is the content an earlier digest
  matched, which is what ``ok`` means for a file not read again without a memo too
  (:mod:`hfcache.verify.state`).
- A ctime cannot be set back (``utime`` sets it to now). A memo is made only of a repo whose
  every entry's ctime (and mtime) is older than the scan's start by :data:`MARGIN`: a change
  made while the repo was scanned, judged or looked at for the memo, or in the same tick of a
  coarse file-system clock as one the scan saw ("racy git"), leaves it without a memo, and
  the next run walks it.
- A mount placed on a folder or a file of the repo shows another identity at that path.
- The recheck schedule holds: a memo is not used once any of its contents is due to be read
  again (:func:`hfcache.verify.run._due`), and a run that judges a repo (``--full``, a due
  content, a change) replaces its memo, or removes it when a file is not ok.

A repo with anything odd is never memoised: a scan warning, a partial download, an orphan or
unknown blob, a leftover, an interrupted prune's trash, a link into the shared store or out of
the repo, a special file. Only kinds whose scan can leave an unchanged repo out take part
(``skips_unchanged``: the hub's). Limits: on a network file system whose server clock runs more
than :data:`MARGIN` behind this machine's, a change made during a scan could look older than
it; ``--full`` (or ``--json``, ``--all``, ``--revision``, which judge every file) bypasses memos.
"""

from __future__ import annotations

import os
import stat
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

MARGIN = 2.0  # seconds: an entry changed this close to the scan's start (or after) leaves its repo without a memo
DUE_MARGIN = 60.0  # seconds: a memo with a content due this soon is not used (the verify's own clock runs a moment later)
FIELDS = 5  # dev, ino, size, mtime_ns, ctime_ns per entry


class Memo(NamedTuple):
    """One repo as a verify left it (see the module docstring)."""

    path: str  # the repo folder (the real path the scan walked)
    kind: str
    root: str
    id: str
    type: str
    names: tuple[str, ...]  # relative to ``path`` ("" is the folder itself)
    values: array[int]  # FIELDS per name, in the same order
    contents: array[int]  # (dev, ino) pairs of the contents judged ok
    counts: Mapping[str, int]  # files by verdict
    reasons: tuple[str, ...]  # why files are unverifiable
    next_due: float  # when the first of its contents is due to be read again
    seen_at: float  # when its contents were last marked seen in the digests table


def take(folder: str, before: float) -> tuple[tuple[str, ...], array[int]] | None:
    """Every folder and non-link file under ``folder`` (itself included) with its identity.

    None when one of them changed at or after ``before - MARGIN`` (ctime or mtime), is neither
    a folder, a regular file nor a symlink, cannot be read, or has a number out of range.
    Each folder is ``lstat``'ed before it is listed. Symlinks are not followed nor recorded
    (their folders are).
    """
    cutoff = int((before - MARGIN) * 1_000_000_000)
    names: list[str] = []
    values = array("q")
    stack = [""]
    try:
        while stack:
            rel = stack.pop()
            path = os.path.join(folder, rel) if rel else folder
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_ctime_ns >= cutoff or st.st_mtime_ns >= cutoff:
                return None
            names.append(rel)
            values.extend((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            with os.scandir(path) as it:
                entries = list(it)
            for entry in entries:
                if entry.is_symlink():
                    continue
                sub = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(sub)
                    continue
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_ctime_ns >= cutoff or st.st_mtime_ns >= cutoff:
                    return None
                names.append(sub)
                values.extend((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    except (OSError, OverflowError):
        return None
    return tuple(names), values


def unchanged(memo: Memo) -> bool:
    """Whether every entry of ``memo`` has the identity it had (one ``lstat`` each)."""
    v = memo.values
    folder = os.path.join(memo.path, "")
    lstat = os.lstat
    j = 0
    try:
        for rel in memo.names:
            st = lstat(folder + rel if rel else memo.path)
            if (
                st.st_ctime_ns != v[j + 4]
                or st.st_mtime_ns != v[j + 3]
                or st.st_ino != v[j + 1]
                or st.st_size != v[j + 2]
                or st.st_dev != v[j]
            ):
                return False
            j += FIELDS
    except (OSError, ValueError):  # (ValueError: a NUL in a name, from a damaged row)
        return False
    return True


def still_valid(memos: Iterable[Memo], now: float, jobs: int = 1) -> list[Memo]:
    """The memos whose repo is unchanged and none of whose contents is due to be read again."""
    from hfcache import parallel

    todo = [m for m in memos if m.next_due > now + DUE_MARGIN]
    if not todo:
        return []
    keep = parallel.ordered_map(unchanged, todo, jobs if len(todo) >= 64 else 1, label="looking at unchanged repos")
    return [m for m, same in zip(todo, keep, strict=True) if same]


class Reuse:
    """The scan's ``skip``: the repo folders a verify counts from their memos instead of walking them.

    Called by a kind's scan with a root and a repo folder; the memos of a root are checked
    (:func:`still_valid`, as of ``clock()`` then) the first time it asks. ``wanted`` says whether an item (its id and
    type) is selected: only selected repos are left out (the others are scanned, and not
    verified, as without memos). ``hits`` are the memos used, by cache root.
    """

    def __init__(
        self,
        memos: Mapping[str, Memo],
        wanted: Callable[[str, str], bool],
        *,
        jobs: int = 1,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.by_root: dict[str, list[Memo]] = {}
        for memo in memos.values():
            self.by_root.setdefault(memo.root, []).append(memo)
        self.wanted = wanted
        self.clock = clock
        self.jobs = jobs
        self.valid: dict[str, dict[str, Memo]] = {}
        self.hits: dict[str, list[Memo]] = {}

    def __call__(self, kind: str, root: str, folder: str) -> bool:
        valid = self.valid.get(root)
        if valid is None:
            mine = [m for m in self.by_root.get(root, []) if m.kind == kind and self.wanted(m.id, m.type)]
            valid = self.valid[root] = {m.path: m for m in still_valid(mine, (self.clock or time.time)(), self.jobs)}
        memo = valid.get(folder)
        if memo is None or memo.kind != kind:
            return False
        self.hits.setdefault(root, []).append(memo)
        return True


def tally(memos: Iterable[Memo]) -> tuple[Counter[str], set[str], int]:
    """Files by verdict, the reasons for unverifiable ones, and the count of files, over ``memos``."""
    counts: Counter[str] = Counter()
    reasons: set[str] = set()
    for memo in memos:
        counts.update(memo.counts)
        reasons.update(memo.reasons)
    return counts, reasons, sum(counts.values())
