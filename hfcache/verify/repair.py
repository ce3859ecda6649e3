"""``hfcache verify --repair``: what a verify found corrupt or missing leaves the cache, so its library downloads it again.

The repair is a plan like ``hfcache rm``'s (:func:`hfcache.plan.removal.removal_plan`), with
the reasons a verify gives, and goes through prune's execution: the question, the prune
lock, the checks just before each unit, the audit log. Where the kind removes single files
(the hub), each link to a damaged blob is a unit and the blob goes once no link reaches it;
elsewhere (a torch checkpoint) the revision holding the file goes.

Before anything leaves the cache, each damaged content is kept in a quarantine folder
(:func:`quarantine`, beside the audit log) for inspection, and in case the verify was wrong:
a hard link where it is on the same file system (no copy, no space), else a copy. Nothing is
lost by a repair until the quarantine is emptied by hand.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable

import platformdirs

from hfcache.caches.protocol import CacheKind
from hfcache.errors import QuarantineFailed
from hfcache.model import Inventory
from hfcache.plan.decisions import Plan
from hfcache.plan.policies import Rule
from hfcache.plan.removal import Target, removal_plan
from hfcache.verify.run import FileCheck, Verdict, VerifyReport

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


def quarantine(checks: Iterable[FileCheck], folder: str, *, now: float | None = None) -> list[str]:
    """Keep each corrupt content in ``folder``/<time>/ (a hard link, else a copy); one note per file kept.

    Raises :class:`QuarantineFailed` when one cannot be kept: then nothing is repaired.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
    into = os.path.join(folder, stamp)
    notes: list[str] = []
    done: set[tuple[int, int]] = set()
    for f in checks:
        if f.status != Verdict.CORRUPT or f.data is None:
            continue
        try:
            st = os.stat(f.data)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in done:
            continue
        done.add((st.st_dev, st.st_ino))
        target = os.path.join(into, f"{f.id.replace('/', '--')}--{os.path.basename(f.data)}")
        try:
            os.makedirs(into, mode=0o700, exist_ok=True)
            try:
                os.link(f.data, target)
            except OSError:  # another file system (or no hard links): a copy
                shutil.copyfile(f.data, target)
        except OSError as e:
            raise QuarantineFailed(f"{f.data} could not be kept in {into} ({e.strerror or e}): nothing repaired") from None
        notes.append(f"kept in quarantine: {target}")
    return notes
