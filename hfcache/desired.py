"""What ``hfcache sync`` keeps on a node: the revisions each manifest wants, beside the state database.

``desired.json`` in the state database's folder (``~/.local/state/hfcache/desired.json``)::

    {"version": 1, "manifests": {"/etc/hfcache/node.yaml": {"synced_at": 1795000000.0,
        "revisions": [{"root": ..., "kind": ..., "id": ..., "revision": ..., "path": ...}, ...]}}}

A plain JSON file, written whole (:func:`hfcache.output.files.atomic_write`: a temporary
file of a name no one can foresee, fsynced, renamed; a symlink is replaced, never
followed), apart from the SQLite database: protections must survive a corrupt database,
and one manifest's list never touches another's (a revision two manifests want stays while
either does). Reading it: no file is no protection; a file that cannot be read is
:class:`DesiredUnknown`, on which ``prune``, ``apply`` and ``rm`` refuse to delete (they
cannot tell what must stay).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from hfcache.errors import DesiredUnknown
from hfcache.output.files import atomic_write

NAME = "desired.json"
MAX_BYTES = 64 * 1024 * 1024


def desired_file(state: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(state)), NAME)


def _load(path: str) -> dict[str, Any]:
    if not os.path.lexists(path):
        return {"version": 1, "manifests": {}}
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        doc = json.loads(data)
    except (OSError, ValueError) as e:
        raise DesiredUnknown(
            f"{path} (what hfcache sync keeps) cannot be read ({getattr(e, 'strerror', None) or e}): nothing is deleted "
            "until it can; run hfcache sync again to write it anew",
            path=path,
        ) from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("manifests"), dict):
        raise DesiredUnknown(f"{path} is not a list of what hfcache sync keeps: nothing is deleted until it is", path=path)
    return doc


def wanted(state: str | None) -> dict[str, str]:
    """Every revision a manifest wants (its path in the cache) -> one manifest that wants it. Raises :class:`DesiredUnknown`."""
    if state is None:
        return {}
    out: dict[str, str] = {}
    for manifest, entry in sorted(_load(desired_file(state))["manifests"].items()):
        for row in entry.get("revisions", []) if isinstance(entry, dict) else []:
            if isinstance(row, dict) and isinstance(row.get("path"), str):
                out.setdefault(row["path"], manifest)
    return out


def record(state: str, manifest: str, rows: Iterable[Mapping[str, str]], *, failed: Iterable[tuple[str, str]] = ()) -> None:
    """``manifest`` now wants ``rows``; for its entries that failed (kind, id) it keeps wanting what it wanted before.

    A failed re-sync must not drop the last good copy's protection (main moved on, its new
    download broke off: the old revision is all the node has).
    """
    path = desired_file(state)
    try:
        doc = _load(path)
    except DesiredUnknown:
        doc = {"version": 1, "manifests": {}}  # (a sync writes it anew: the manifests re-synced are whole again)
    kept = {(k, i) for k, i in failed}
    before = doc["manifests"].get(manifest, {}).get("revisions", []) if isinstance(doc["manifests"].get(manifest), dict) else []
    carried = [r for r in before if isinstance(r, dict) and (r.get("kind"), r.get("id")) in kept]
    doc["manifests"][manifest] = {"synced_at": time.time(), "revisions": [*map(dict, rows), *carried]}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # 0644, as before: a prune run by another account that shares the state folder must read it.
    atomic_write(path, json.dumps(doc, indent=1, sort_keys=True), mode=0o644)
