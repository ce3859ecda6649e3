"""The inventory as Prometheus metrics (text exposition format 0.0.4), for node_exporter's textfile collector.

:func:`render_metrics` is pure: the scan, each root's file system and the audit log's
records come in, the text goes out. Names follow Prometheus conventions (base units,
``_bytes``, ``_seconds``, ``_total`` only for counters), so Grafana panels can sum
``hfcache_cache_size_bytes`` by ``kind`` or chart ``hfcache_model_size_bytes`` per model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from hfcache.errors import UsageError
from hfcache.model import Disk, Inventory

if TYPE_CHECKING:
    from hfcache.history.report import HistoryReport

# name -> (type, help)
METRICS: dict[str, tuple[str, str]] = {
    "hfcache_cache_size_bytes": ("gauge", "Bytes of each cache, shared files counted once (huggingface_hub's size_on_disk)."),
    "hfcache_cache_models": ("gauge", "Models (repos, checkpoints, downloads) in each cache."),
    "hfcache_cache_revisions": ("gauge", "Revisions in each cache."),
    "hfcache_cache_warnings": ("gauge", "Problems the scan found in each cache (damaged models are never pruned)."),
    "hfcache_partial_downloads": ("gauge", "Partial or interrupted downloads in each cache."),
    "hfcache_partial_download_bytes": ("gauge", "Bytes held by partial downloads in each cache."),
    "hfcache_model_size_bytes": ("gauge", "Bytes of each model (every revision; shared blobs once per model)."),
    "hfcache_model_revisions": ("gauge", "Revisions of each model."),
    "hfcache_model_last_access_timestamp_seconds": ("gauge", "When each model was last read (newest atime of its files)."),
    "hfcache_filesystem_free_bytes": ("gauge", "Free bytes of the file system holding each cache root."),
    "hfcache_filesystem_size_bytes": ("gauge", "Size of the file system holding each cache root."),
    "hfcache_last_prune_timestamp_seconds": ("gauge", "When a prune last deleted from each cache (from the audit log)."),
    "hfcache_last_prune_freed_bytes": ("gauge", "Bytes the last prune of each cache freed (from the audit log)."),
    "hfcache_last_prune_run_timestamp_seconds": (
        "gauge",
        "When a prune (or apply) last ran on each cache, whatever it deleted (state database; dry runs are not runs).",
    ),
    "hfcache_last_prune_failed_units": ("gauge", "Units the last prune of each cache failed to delete (state database)."),
    "hfcache_last_verify_timestamp_seconds": ("gauge", "When hfcache verify last finished on each cache (state database)."),
    "hfcache_last_verify_corrupt_files": ("gauge", "Files the last verify of each cache found corrupt."),
    "hfcache_last_verify_missing_files": ("gauge", "Snapshot entries the last verify of each cache found pointing to no data."),
    "hfcache_cache_growth_bytes_per_day": (
        "gauge",
        "How fast each cache grew over the last 7 days (least-squares fit of the usage history; negative: shrank).",
    ),
    "hfcache_filesystem_free_bytes_per_day": (
        "gauge",
        "How fast the free space of each cache's file system changed over the last 7 days, since its last cleanup.",
    ),
    "hfcache_filesystem_full_timestamp_seconds": (
        "gauge",
        "When the file system of each cache fills at that rate (absent when it is not filling or the history is too short).",
    ),
    "hfcache_filesystem_full_earliest_timestamp_seconds": (
        "gauge",
        "The early end of a 90% interval of that forecast: alert on it to be warned in time.",
    ),
    "hfcache_scan_timestamp_seconds": ("gauge", "When these figures were taken."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Mapping[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    number = repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def last_prunes(records: Iterable[Mapping[str, object]]) -> dict[str, tuple[float, int]]:
    """Per cache root, the time and freed bytes of the last run that deleted from it."""
    runs: dict[str, dict[str, tuple[float, int]]] = {}
    for r in records:
        root, run = r.get("root"), r.get("run")
        if not isinstance(root, str) or not isinstance(run, str) or r.get("status") not in ("deleted", "failed"):
            continue
        when = float(r.get("time_epoch") or 0.0)  # type: ignore[arg-type]
        freed = int(r.get("bytes") or 0)  # type: ignore[call-overload]
        seen, total = runs.setdefault(root, {}).get(run, (0.0, 0))
        runs[root][run] = (max(seen, when), total + freed)
    return {root: max(by_run.values()) for root, by_run in runs.items()}


def render_metrics(
    inventory: Inventory,
    disks: Mapping[str, Disk],
    prunes: Mapping[str, tuple[float, int]],
    verifies: Mapping[str, tuple[float, int, int]] | None = None,
    trends: HistoryReport | None = None,
    runs: Mapping[str, tuple[float, int, int]] | None = None,
) -> str:
    """The exposition text for ``inventory``; ``disks``, ``prunes`` and ``verifies`` (when, corrupt, missing) by cache root.

    ``trends`` (the usage history's report) adds each cache's growth rate and its file
    system's rate and forecast; ``runs`` each cache's last prune run (when, deleted, failed).
    """
    growth = {c.root: c.rate for c in trends.caches} if trends else {}
    filesystems = {root: fs for fs in trends.filesystems for root in fs.roots} if trends else {}
    samples: dict[str, list[str]] = {name: [] for name in METRICS}

    def add(name: str, labels: Mapping[str, str], value: float) -> None:
        samples[name].append(_sample(name, labels, value))

    for cache in inventory.caches:
        if not cache.exists:
            continue
        where = {"kind": cache.kind, "root": cache.root}
        add("hfcache_cache_size_bytes", where, cache.size_bytes)
        add("hfcache_cache_models", where, len(cache.items))
        add("hfcache_cache_revisions", where, sum(len(i.revisions) for i in cache.items))
        add("hfcache_cache_warnings", where, len(cache.all_warnings))
        add("hfcache_partial_downloads", where, len(cache.partial_files))
        add("hfcache_partial_download_bytes", where, sum(p.size_bytes for p in cache.partial_files))
        for item in cache.items:
            model = {**where, "model": item.id, "type": item.type}
            add("hfcache_model_size_bytes", model, item.size_bytes)
            add("hfcache_model_revisions", model, len(item.revisions))
            add("hfcache_model_last_access_timestamp_seconds", model, item.last_accessed)
        disk = disks.get(cache.root)
        if disk is not None:
            add("hfcache_filesystem_free_bytes", where, disk.free)
            add("hfcache_filesystem_size_bytes", where, disk.total)
        if cache.root in prunes:
            when, freed = prunes[cache.root]
            add("hfcache_last_prune_timestamp_seconds", where, when)
            add("hfcache_last_prune_freed_bytes", where, freed)
        if growth.get(cache.root) is not None:
            add("hfcache_cache_growth_bytes_per_day", where, growth[cache.root] or 0.0)
        fs = filesystems.get(cache.root)
        if fs is not None and fs.rate is not None:
            add("hfcache_filesystem_free_bytes_per_day", where, fs.rate)
        if fs is not None and fs.forecast is not None and fs.forecast.at is not None:
            add("hfcache_filesystem_full_timestamp_seconds", where, fs.forecast.at)
            if fs.forecast.earliest is not None:
                add("hfcache_filesystem_full_earliest_timestamp_seconds", where, fs.forecast.earliest)
        if runs and cache.root in runs:
            when, _, failed = runs[cache.root]
            add("hfcache_last_prune_run_timestamp_seconds", where, when)
            add("hfcache_last_prune_failed_units", where, failed)
        if verifies and cache.root in verifies:
            when, corrupt, missing = verifies[cache.root]
            add("hfcache_last_verify_timestamp_seconds", where, when)
            add("hfcache_last_verify_corrupt_files", where, corrupt)
            add("hfcache_last_verify_missing_files", where, missing)
    add("hfcache_scan_timestamp_seconds", {}, inventory.scanned_at)
    lines = []
    for name, (kind, text) in METRICS.items():
        if samples[name]:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"


def write_textfile(text: str, path: str) -> None:
    """Write ``text`` to ``path`` atomically (node_exporter never reads half a file), mode 0644."""
    from hfcache.output.files import atomic_write

    try:
        atomic_write(path, text, mode=0o644)
    except OSError as e:
        raise UsageError(f"cannot write metrics to {path}: {e.strerror or e}", path=path) from None
