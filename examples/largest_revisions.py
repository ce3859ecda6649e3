#!/usr/bin/env python3
"""Print the revisions whose deletion would free the most space, from `hfcache scan --json`.

    hfcache scan --json | python examples/largest_revisions.py [N]

Only the standard library: copy it anywhere. Detached revisions are flagged, but remember
that a revision pinned by commit hash is detached too and may still be in use.
"""

from __future__ import annotations

import json
import sys


def _label(cache: dict, rev: dict) -> str:
    """Refs for the hub ("(detached)" when none), the version elsewhere."""
    if cache["kind"] == "huggingface":
        return ",".join(rev["refs"]) or "(detached)"
    return rev.get("version") or "-"


def main() -> int:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    doc = json.load(sys.stdin)
    if doc.get("version") != 1:
        print(f"unsupported hfcache JSON version {doc.get('version')!r}", file=sys.stderr)
        return 2
    rows = [
        (rev["reclaimable_bytes"], item["id"], rev["revision"][:12], _label(cache, rev))
        for cache in doc["caches"]
        for item in cache["items"]
        for rev in item["revisions"]
    ]
    rows.sort(reverse=True)
    for reclaimable, ident, revision, refs in rows[:limit]:
        print(f"{reclaimable / 1e9:10.3f} GB  {ident}  {revision}  {refs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
