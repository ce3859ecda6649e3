"""``hfcache metrics``: the inventory as Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hfcache.caches.scan import scan_caches
from hfcache.cli.app import (
    CacheDirOption,
    JobsOption,
    KindOption,
    StateOption,
    VerboseOption,
    _jobs,
    _remember,
    _user_errors,
    app,
)
from hfcache.cli.prune import _refuse_outputs_in_caches
from hfcache.output import render

if TYPE_CHECKING:
    from hfcache.history.report import HistoryReport
    from hfcache.model import Inventory


@app.command()
def metrics(
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    textfile: Annotated[
        Optional[str],
        typer.Option(
            "--textfile",
            metavar="PATH",
            help="Write atomically to PATH (for node_exporter's textfile collector, *.prom) instead of stdout.",
        ),
    ] = None,
    log: Annotated[
        Optional[str], typer.Option("--log", metavar="FILE", help="The audit log to read the last prunes from.")
    ] = None,
    state: StateOption = None,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """The inventory as Prometheus metrics: bytes per cache and model, partial downloads, free space, last prune.

    Example: hfcache metrics --textfile /var/lib/node_exporter/textfile_collector/hfcache.prom
    """
    from hfcache.execute.audit import read_log
    from hfcache.fs.system import disk_of
    from hfcache.history.watch import state_path
    from hfcache.output.metrics import last_prunes, render_metrics, write_textfile
    from hfcache.verify.state import read_last_verifies

    with _user_errors(verbose=verbose):
        inventory = scan_caches(cache_dir or None, kinds=kind or None, jobs=_jobs(jobs), ledger=False)
        disks = {c.root: disk_of(c.root) for c in inventory.caches if c.exists}
        _remember(inventory, state, disks=disks)
        path = state_path(state)
        verifies, problems = read_last_verifies(path) if path else ({}, [])
        trends, runs, more = _from_history(path, inventory)
        for problem in problems + more:
            render.warning(problem)
        text = render_metrics(inventory, disks, last_prunes(read_log(log)), verifies, trends, runs)
        if textfile:
            _refuse_outputs_in_caches((c.root for c in inventory.caches), textfile=textfile)
            write_textfile(text, textfile)
        else:
            render.raw(text)


TREND_WINDOW = 7 * 86400.0  # the growth rates and forecasts of the metrics: fitted over the last week


def _from_history(
    path: str | None, inventory: Inventory
) -> tuple[HistoryReport | None, dict[str, tuple[float, int, int]], list[str]]:
    """The usage history's report on the scanned caches over :data:`TREND_WINDOW`, the last prune run of each, and
    the database's warnings (nothing without a database)."""
    import os

    from hfcache.history.report import build_report
    from hfcache.history.store import last_prunes, samples
    from hfcache.state import StateDB

    if path is None or not os.path.exists(path):
        return None, {}, []
    roots = [c.root for c in inventory.caches if c.exists]
    now = inventory.scanned_at
    with StateDB(path) as db:
        found = samples(db, since=now - 2 * TREND_WINDOW, roots=roots)
        return build_report(found, {}, now=now, window=TREND_WINDOW), last_prunes(db), db.warnings
