"""``hfcache history``: sizes and free space over time, the top growers, when the disk fills, and each model's uses."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer

from hfcache.cli.app import (
    CacheDirOption,
    FormatOption,
    JsonOption,
    KindOption,
    NameOption,
    OutputFormat,
    StateOption,
    VerboseOption,
    _format,
    _user_errors,
    app,
)
from hfcache.errors import UsageError
from hfcache.output import render
from hfcache.units import parse_duration


@app.command()
def history(
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    name: NameOption = None,
    window: Annotated[
        str, typer.Option("--window", metavar="AGE", help="The trends, growth and uses over the last AGE (default 7d).")
    ] = "7d",
    top: Annotated[int, typer.Option("--top", metavar="N", min=1, help="How many of the top growers to show.")] = 10,
    chart: Annotated[bool, typer.Option("--chart/--no-chart", help="Draw free space over time (needs hfcache[charts]).")] = True,
    state: StateOption = None,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """What is growing and when the disk is full: sizes and free space over time, from the usage history.

    Every scan, metrics and prune records each cache's size, its file system's free space
    and the uses of each revision; this reads them back (nothing is scanned). With --name,
    each matching model's days of use and last users too.

    Example: hfcache history --window 30d --top 5
    """
    from hfcache.caches.registry import registry, select_kinds
    from hfcache.history.report import build_report
    from hfcache.history.store import model_uses, recorded_caches, samples, size_changes
    from hfcache.history.watch import state_path
    from hfcache.plan.query import matching_glob
    from hfcache.state import StateDB

    fmt = _format(output_format, as_json)
    if fmt is OutputFormat.ids:
        fmt = OutputFormat.table
    with _user_errors(verbose=verbose):
        span = float(parse_duration(window))
        if span <= 0:
            raise UsageError("--window must be longer than 0s")
        if kind:
            select_kinds(kind, registry())  # an unknown kind is refused, as scan refuses it
        path = state_path(state)
        now = time.time()
        wanted_roots = {os.path.realpath(d) for d in cache_dir or ()}
        names = tuple(name or ())
        with StateDB(path if path and os.path.exists(path) else None) as db:  # read only: never creates one
            roots = [
                root
                for k, root in recorded_caches(db)
                if (not kind or k in kind) and (not wanted_roots or os.path.realpath(root) in wanted_roots)
            ]
            report = build_report(
                samples(db, since=0.0, roots=roots),
                {key: v for key, v in size_changes(db, roots).items() if not names or matching_glob(key[1], names)},
                [m for m in model_uses(db, roots, since=now - span) if matching_glob(m.item, names)] if names else (),
                now=now,
                window=span,
                top=top,
            )
            problems = db.warnings
            filtered_out = not roots and bool(recorded_caches(db))
    for problem in problems:
        render.warning(problem)
    if fmt is OutputFormat.json:
        from hfcache.output.serialize import history_to_dict

        render.json_document(history_to_dict(report))
    elif filtered_out:
        render.note("No history of these caches: the history holds others (hfcache history alone shows them all).")
    else:
        from hfcache.output.trends import history_tables

        history_tables(report, markdown=fmt is OutputFormat.markdown, chart=chart)
