"""``hfcache verify --repair``: what a verify found corrupt or missing leaves the cache, so its library downloads it again.

The repair is a plan like ``hfcache rm``'s (:func:`hfcache.plan.removal.removal_plan`), with
the reasons a verify gives, and goes through prune's execution: the question, the prune
lock, the checks just before each unit, the audit log. Where the kind removes single files
(the hub), each link to a damaged blob is a unit and the blob goes once no link reaches it;
elsewhere (a torch checkpoint) the revision holding the file goes.

Before anything leaves the cache, each damaged content is kept in a quarantine folder
(:func:`quarantine`, beside the audit log) for inspection, and in case the verify was wrong:
a hard link where it is on the same file system (no copy, no space), else a copy. Nothing is
lost by a repair until the quarantine is emptied by hand. A file whose data changed since the
verify judged it (a good copy put back, a new download) is not repaired.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import replace

import platformdirs

from hfcache.caches.protocol import CacheKind
from hfcache.errors import QuarantineFailed
from hfcache.model import Inventory
from hfcache.plan.decisions import Plan, PlanUnit
from hfcache.plan.policies import Rule
from hfcache.plan.removal import Target, removal_plan
from hfcache.verify.reading import copy_gently
from hfcache.verify.run import FileCheck, Verdict, VerifyReport, identity

QUARANTINE = "quarantine"


def default_quarantine() -> str:
    """``quarantine/`` in the user state folder, beside the audit log and the state database."""
    return os.path.join(platformdirs.user_state_dir("hfcache", appauthor=False), QUARANTINE)


def damaged(report: VerifyReport) -> list[FileCheck]:
    return [f for c in report.caches for f in c.files if f.status in (Verdict.CORRUPT, Verdict.MISSING)]


def _why(f: FileCheck) -> str:
    if f.status == Verdict.MISSING:
        return f"{f.name}: a link to no data"
    return f"{f.name}: {f.algorithm} {(f.actual or '')[:12]} of its content, its name says {(f.expected or '')[:12]}"


def repair_plan(inventory: Inventory, report: VerifyReport, kinds: dict[str, CacheKind], *, now: float) -> Plan:
    """The plan that takes out of the cache what ``report`` found corrupt or missing (see the module docstring)."""
    from hfcache.caches.deletion import FileDeletion

    targets = []
    for f in damaged(report):
        kind = kinds.get(f.kind)
        by_file = kind is not None and isinstance(kind.deletion, FileDeletion)
        targets.append(Target(_why(f), f.id, f.revision, f.type, f.kind, f.name if by_file else None))
    chosen = {t.kind for t in targets if t.kind}
    return removal_plan(inventory, targets, now=now, chosen_kinds=chosen, rule=Rule.VERIFY)


Key = tuple[str, str, str, str]  # (root, id, revision, file name): one file a verify judged


def _key(f: FileCheck) -> Key:
    return (f.root, f.id, f.revision, f.name)


def quarantine(checks: Iterable[FileCheck], folder: str, *, now: float | None = None) -> tuple[list[str], set[Key]]:
    """Keep each corrupt content in ``folder``/<time>/ (a hard link, else a copy); notes, and the files changed since.

    A file whose data is no longer the content the verify judged (another inode, size, mtime
    or ctime: a good copy put back, a new download) is not kept and must not be repaired:
    its key is returned. So is a missing file whose link resolves again. Raises
    :class:`QuarantineFailed` when a corrupt content cannot be kept: then nothing is repaired.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
    into = os.path.join(folder, stamp)
    notes: list[str] = []
    changed: set[Key] = set()
    done: set[tuple[int, int]] = set()
    for f in checks:
        if f.status == Verdict.MISSING:
            if os.path.exists(f.path):  # (through the link) it has data again: a download came by
                changed.add(_key(f))
            continue
        if f.status != Verdict.CORRUPT or f.data is None:
            continue
        data = os.path.realpath(f.data)  # (a shared-store link: the payload itself)
        try:
            st = os.stat(data)
        except OSError:
            continue  # gone: its link is removed, nothing to keep
        if (st.st_dev, st.st_ino) in done:
            continue  # judged with the first file of it (keeping it moved its ctime: a new link)
        if identity(st) != f.identity:
            changed.add(_key(f))
            continue
        done.add((st.st_dev, st.st_ino))
        where = hashlib.sha256(f.root.encode()).hexdigest()[:8]  # two caches may hold blobs of one name
        target = os.path.join(into, f"{where}--{f.id.replace('/', '--')}--{os.path.basename(f.data)}")
        try:
            os.makedirs(into, mode=0o700, exist_ok=True)
            try:
                os.link(data, target)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
                copy_gently(data, target)  # another file system (or no hard links): a copy, to a new file only
                kept = os.stat(data)
            else:
                kept = os.stat(target)
        except OSError as e:
            raise QuarantineFailed(f"{data} could not be kept in {into} ({e.strerror or e}): nothing repaired") from None
        if identity(kept)[:3] != f.identity[:3]:  # swapped between the look and the link: not the content judged
            with contextlib.suppress(OSError):
                os.unlink(target)
            changed.add(_key(f))
            continue
        notes.append(f"kept in quarantine: {target}")
    return notes, changed


def without_changed(plan: Plan, changed: set[Key]) -> Plan:
    """``plan`` without the units of files that changed since the verify (:func:`quarantine` says which)."""
    if not changed:
        return plan
    revisions = {(root, ident, rev) for root, ident, rev, _ in changed}

    def stays(u: PlanUnit) -> bool:
        if u.file is not None:
            return (u.root, u.id or "", u.revision or "", u.file) not in changed
        return (u.root, u.id or "", u.revision or "") not in revisions

    return replace(plan, delete=tuple(u for u in plan.delete if stays(u)))
