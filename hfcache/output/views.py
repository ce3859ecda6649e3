"""What people see of a scan and of a plan (or a run): headings, tables and totals, in any format but JSON.

Imported only when they are shown: ``hfcache scan --json`` never loads Rich's tables.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from hfcache.model import CacheInventory, Inventory, PartialFile
from hfcache.output.layout import OUTCOME_STYLE, table_of, writer
from hfcache.output.render import ago, size
from hfcache.plan.query import revision_rows, shown_bytes

if TYPE_CHECKING:
    from hfcache.caches.accounts import Account, Shared
    from hfcache.plan.decisions import Execution, Plan, PlanUnit, UnitResult
    from hfcache.verify.run import FileCheck, VerifyReport


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _refs(refs: tuple[str, ...]) -> Text:
    return Text(", ".join(refs)) if refs else Text("(detached)", style="dim")


def _ident(ident: str, odd: bool) -> Text:
    """The id, marked with ``!`` when something odd was found in it."""
    return Text(ident) + Text(" !", style="bold yellow") if odd else Text(ident)


def _versions(versions: list[str | None]) -> Text:
    shown = [v for v in versions if v is not None]
    return Text(", ".join(shown)) if shown else Text("-", style="dim")


def _partials_by_place(cache: CacheInventory) -> tuple[list[PartialFile], list[PartialFile]]:
    """The cache's partial downloads outside every revision's unit, and those inside one (counted in its size)."""
    units = {p for item in cache.items for rev in item.revisions for p in rev.unit_paths}
    outside: list[PartialFile] = []
    inside: list[PartialFile] = []
    for partial in cache.partial_files:
        folder, within = os.path.dirname(partial.path), False
        while units and len(folder) > len(cache.root) and not within:
            within, folder = folder in units, os.path.dirname(folder)
        (inside if within else outside).append(partial)
    return outside, inside


def _item_table(cache: CacheInventory, now: float) -> Table:
    with_refs = cache.has_refs
    table = table_of("ID", "TYPE", "SIZE", "ACCESSED", "MODIFIED", "REVS", "REFS" if with_refs else "VERSIONS")
    for item in cache.items:
        if with_refs:
            last = _refs(tuple(sorted({ref for rev in item.revisions for ref in rev.refs})))
        else:
            last = _versions([rev.version for rev in item.revisions])
        table.add_row(
            _ident(item.id, not item.deletable),
            item.type,
            size(item.size_bytes),
            ago(item.last_accessed, now),
            ago(item.last_modified, now),
            str(len(item.revisions)),
            last,
        )
    return table


def _revision_table(cache: CacheInventory, now: float, sort: str) -> Table:
    with_refs = cache.has_refs
    columns = ["ID", "REVISION", "VERSION", "SIZE", "RECLAIMABLE", "ACCESSED", "MODIFIED", "FILES"]
    table = table_of(*columns, *(["REFS"] if with_refs else []))
    for item, rev in revision_rows(cache, sort):
        row: list[RenderableType] = [
            _ident(item.id, not item.deletable),
            Text(short_hash(rev.revision)),
            _versions([rev.version]),
            size(rev.size_bytes),
            size(rev.reclaimable_bytes),
            ago(rev.last_accessed, now),
            ago(rev.last_modified, now),
            str(rev.nb_files),
        ]
        table.add_row(*row, *([_refs(rev.refs)] if with_refs else []))
    return table


def scan_tables(
    inventory: Inventory,
    *,
    revisions: bool,
    filtered: bool,
    show_missing: bool = True,
    markdown: bool = False,
    sort: str = "name",
) -> None:
    """The human view of a scan: per cache a heading, a table and a totals line.

    The totals line counts the rows shown (with ``revisions``: the revisions, and the bytes
    they hold, each blob once), then gives the whole cache's total.

    Caches whose folder does not exist get a one-line heading, or nothing at all when not
    ``show_missing`` (a scan of every kind shows the caches found, not the ones absent).
    """
    out = writer(markdown)
    now = inventory.scanned_at
    shown_caches = [c for c in inventory.caches if c.exists or show_missing]
    for index, cache in enumerate(shown_caches):
        if index:
            out.gap()
        out.heading(Text(f"{cache.title or cache.kind}: ", style="bold") + Text(cache.root))
        if not cache.exists:
            out.line("  nothing cached yet (the folder does not exist)")
            continue
        noun = "repo" if cache.has_refs else "item"
        if cache.items:
            out.table(_revision_table(cache, now, sort) if revisions else _item_table(cache, now))
        else:
            out.line(f"  no matching {noun}s" if filtered else f"  no {noun}s cached")
        shown = shown_bytes(cache, revisions=revisions)
        nrevs = sum(len(i.revisions) for i in cache.items)
        line = f"{_plural(len(cache.items), noun)}, {_plural(nrevs, 'revision')}"
        line += f" ({size(shown)}{' shown' if filtered else ''}); cache total {size(cache.size_bytes)}"
        if cache.shared_store:
            line += ", shared blobs counted once"
        out.line(line)
        extras = []
        outside, inside = _partials_by_place(cache)
        if outside:
            extras.append(f"{_plural(len(outside), 'partial download')} ({size(sum(p.size_bytes for p in outside))})")
        if cache.orphan_files:
            extras.append(
                f"{_plural(len(cache.orphan_files), 'orphan blob')} ({size(sum(o.size_bytes for o in cache.orphan_files))})"
            )
        if cache.unreferenced_payloads:
            extras.append(
                f"{_plural(len(cache.unreferenced_payloads), 'unreferenced shared blob')} "
                f"({size(sum(s.size_bytes for s in cache.unreferenced_payloads))})"
            )
        if extras:
            out.line("not in any revision: " + ", ".join(extras))
        if inside:
            total = size(sum(p.size_bytes for p in inside))
            out.line(f"inside revisions, counted in them: {_plural(len(inside), 'partial download')} ({total})")
        if any(not i.deletable for i in cache.items):
            out.line(
                Text(
                    f"! = something odd was found in this {noun} (see warnings); hfcache will not delete through it", style="dim"
                )
            )


_STATUS_STYLE = {"deleted": "green", "skipped": "yellow", "failed": "bold red"}  # by Status


def short_hash(revision: str) -> str:
    """A 40-hex commit as its first 12 characters, as ``hf cache ls`` and git show them; other names whole."""
    return revision[:12] if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision) else revision


def _unit_name(unit: PlanUnit) -> Text:
    if unit.what in ("revision", "file"):
        label = short_hash(unit.revision or "")
        if unit.version and unit.version not in label:
            label += f" ({unit.version})"
        if unit.refs:
            label += f" [{', '.join(unit.refs)}]"
        if unit.what == "file":
            label += f" {unit.file}"  # one file of the revision: the revision stays
        return Text(label)
    return Text(f"{unit.what}: {os.path.basename(unit.path)}", style="dim")


def _plan_table(units: tuple[PlanUnit, ...], *, results: tuple[UnitResult, ...] | None = None, keep: bool = False) -> Table:
    """Units to delete (with ``results``: what each did), or with ``keep`` the units kept."""
    from hfcache.output.words import describe_all  # the policies' types: only when a plan is shown

    if keep:
        columns = ["KIND", "ID", "REVISION", "WHY"]
    elif results is not None:
        columns = ["KIND", "ID", "REVISION", "STATUS", "FREED", "WHY"]
    else:
        columns = ["KIND", "ID", "REVISION", "FREES", "WHY"]
    table = table_of(*columns)
    for i, u in enumerate(units):
        row: list[Text | str] = [u.kind, Text(u.id or "-"), _unit_name(u)]
        why: Text | str = "; ".join(describe_all(u.reasons))
        if results is not None:
            r = results[i]
            row += [Text(str(r.status), style=_STATUS_STYLE.get(r.status, "")), size(r.freed_bytes)]
            if r.error:  # what happened matters more than why it was planned (that stays in the log and JSON)
                why = Text(r.error, style=OUTCOME_STYLE)
        elif not keep:
            row.append(size(u.reclaim_bytes))
        row.append(why)
        table.add_row(*row)
    return table


def _cache_summaries(plan: Plan, execution: Execution | None) -> list[str]:
    """One line per cache: its units to delete (or what happened to them), bytes, by policy, and how many a rule keeps."""
    results = dict(zip((id(u) for u in plan.delete), execution.results, strict=True)) if execution is not None else {}
    lines = []
    for cache in plan.caches:
        going = [u for u in plan.delete if (u.kind, u.root) == (cache.kind, cache.root)]
        kept = sum(1 for u in plan.keep if (u.kind, u.root) == (cache.kind, cache.root))
        if not going and not kept:
            continue
        by: dict[str, int] = {}
        for u in going:
            policy = str(u.reasons[0].policy) if u.reasons else "-"
            by[policy] = by.get(policy, 0) + 1
        policies = ", ".join(f"{p} {n}" for p, n in sorted(by.items(), key=lambda kv: (-kv[1], kv[0])))
        if execution is None:
            what = f"{_plural(len(going), 'unit')} to delete, {size(sum(u.reclaim_bytes for u in going))}"
        else:
            done = [results[id(u)] for u in going]
            counts = {s: sum(1 for r in done if r.status == s) for s in ("deleted", "skipped", "failed")}
            what = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing"
            what += f", {size(sum(r.freed_bytes for r in done))} freed"
        line = f"{cache.kind} {cache.root}: {what}"
        if policies:
            line += f" ({policies})"
        lines.append(line + (f"; {kept} kept by a rule" if kept else ""))
    return lines


def plan_tables(plan: Plan, *, execution: Execution | None = None, show_keep: bool = False, markdown: bool = False) -> None:
    """The human view of a plan (or with ``execution``, of its run): what goes and why, then the totals.

    What goes comes first, then (with ``show_keep``) what stays and the rule that keeps each,
    then one line per cache and the total: the last lines before a question are its answer's
    weight. Kept units are counted; listed only with ``show_keep`` (on a 100,000-file cache
    they are thousands of lines). The plan's warnings are not part of it: :func:`plan_warnings`
    puts them on stderr.
    """
    out = writer(markdown)
    ran = execution is not None
    for line in plan.policy:
        out.line(Text("policy ", style="dim") + Text(line))
    if plan.delete:
        out.heading(Text("Deleted:" if ran else "Would delete:", style="bold"))
        out.table(_plan_table(plan.delete, results=execution.results if execution is not None else None))
    else:
        out.line("Nothing to delete.")
    if plan.keep and show_keep:
        out.heading(Text("Kept, and the rule that keeps each:", style="bold"))
        out.table(_plan_table(plan.keep, keep=True))
    for line in _cache_summaries(plan, execution):
        out.line(line)
    units = _plural(len(plan.delete), "unit")
    if execution is not None:
        counts = {s: sum(1 for r in execution.results if r.status == s) for s in ("deleted", "skipped", "failed")}
        detail = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out.line(f"Freed {size(execution.freed_bytes)} of {size(plan.reclaim_bytes)} planned ({units}: {detail or 'none'}).")
    elif plan.delete:
        kept = f"; {len(plan.keep)} kept by a rule" + ("" if show_keep else " (--show-kept lists them)") if plan.keep else ""
        out.line(f"Would free {size(plan.reclaim_bytes)} ({units}){kept}.")


def verify_tables(report: VerifyReport, *, show_all: bool = False, markdown: bool = False) -> None:
    """The human view of a verify: the files that are not ok (every file with ``show_all``), then one line per cache."""
    from hfcache.verify.run import Verdict

    out = writer(markdown)
    style = {"ok": "green", "corrupt": "bold red", "missing": "bold red", "unverifiable": "yellow"}
    bad, checked = (Verdict.CORRUPT, Verdict.MISSING), (Verdict.OK, Verdict.CORRUPT)
    for cache in report.caches:
        # (The counts first: a 100,000-file repeat run has nothing to list, and each pass costs.)
        problems = cache.count(Verdict.CORRUPT) + cache.count(Verdict.MISSING)
        shown = cache.files if show_all else [f for f in cache.files if f.status in bad] if problems else ()
        if shown:
            out.heading(Text(f"{cache.kind} {cache.root}", style="bold"))
            table = table_of("STATUS", "ID", "REVISION", "FILE", "SIZE", "WHY")
            for f in shown:
                table.add_row(
                    Text(str(f.status), style=style[str(f.status)]),
                    f.id,
                    short_hash(f.revision),
                    f.name,
                    size(f.size_bytes) if f.size_bytes or f.status != Verdict.MISSING else "-",
                    _check_detail(f),
                )
            out.table(table)
    for cache in report.caches:
        counts = {v: cache.count(v) for v in Verdict}
        detail = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no files"
        out.line(f"{cache.kind} {cache.root}: {_plural(cache.total, 'file')}: {detail}")
        unverifiable = Verdict.UNVERIFIABLE
        reasons = (
            sorted({f.why for f in cache.files if f.status == unverifiable and f.why} | cache.reused_reasons)
            if counts[unverifiable]
            else []
        )
        if reasons and not show_all:
            out.line(Text("  unverifiable: " + "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else ""), style="dim"))
    again = sum(1 for c in report.caches for f in c.files if not f.hashed and f.status in checked)
    again += sum(m.counts.get(v, 0) for c in report.caches for m in c.reused for v in checked)
    out.line(
        f"Hashed {size(report.bytes_hashed)} in {_plural(report.files_hashed, 'file')} "
        f"({max(0.0, report.finished_at - report.started_at):.1f}s)"
        + (f"; {again} unchanged since an earlier verify, not read again (--full reads them)" if again else "")
        + "."
    )


def _check_detail(f: FileCheck) -> Text:
    if f.status == "corrupt":  # (the whole digests are in --json)
        return Text(f"{f.algorithm} differs: expected {(f.expected or '')[:12]}, got {(f.actual or '')[:12]}")
    if f.status == "ok":
        return Text(f"{f.algorithm} matches" + ("" if f.hashed else " (unchanged since an earlier verify)"), style="dim")
    return Text(f.why or "", style="dim" if f.status == "unverifiable" else "")


def accounts_tables(scanned: list[tuple[Account, Inventory]], twice: list[Shared], *, markdown: bool = False) -> None:
    """``scan --all-users``: a row per account, then the revisions several accounts cache, each its own copy."""
    out = writer(markdown)
    table = table_of("USER", "HOME", "CACHES", "SIZE")
    for account, inventory in scanned:
        if account.unreadable:
            table.add_row(account.name, account.home, "?", Text("not readable", style="yellow"))
        elif inventory.caches:
            held = size(sum(c.size_bytes for c in inventory.caches))
            table.add_row(account.name, account.home, str(len(inventory.caches)), held)
    out.heading(Text("Accounts with model caches", style="bold"))
    out.table(table)
    if twice:
        table = table_of("ID", "REVISION", "KIND", "ACCOUNTS", "SIZE", "SAVES")
        for s in twice:
            users = ", ".join(user for user, _ in s.sizes)
            table.add_row(s.id, s.revision[:12], s.kind, users, size(s.total), size(s.saved))
        out.heading(Text("Cached by several accounts (SAVES: what one shared cache would not hold)", style="bold"))
        out.table(table)
    total = sum(s.saved for s in twice)
    out.line(f"{len(twice)} revision(s) cached by several accounts; one shared cache would save {size(total)}.")
