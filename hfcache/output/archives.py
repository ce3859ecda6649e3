"""What people see of an archive: one row per archived unit (``hfcache archive ls``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text

from hfcache.output.layout import table_of, writer
from hfcache.output.render import size
from hfcache.units import iso


def archive_table(dest: str, manifests: Sequence[dict[str, Any]], *, markdown: bool = False) -> None:
    out = writer(markdown)
    table = table_of("KIND", "ID", "REVISION", "REFS", "SIZE", "ARCHIVED", "HOST")
    for m in manifests:
        table.add_row(
            str(m.get("kind", "?")),
            str(m.get("id", "?")),
            str(m.get("revision", "?"))[:12],
            ", ".join(m.get("refs", ())) or "-",
            size(sum(int(f.get("size", 0)) for f in m.get("files", ()))),
            iso(float(m.get("archived_at", 0.0)))[:16].replace("T", " "),
            str(m.get("host", "?")),
        )
    out.heading(Text(f"{dest}: {len(manifests)} unit(s)", style="bold"))
    out.table(table)
