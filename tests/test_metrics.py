"""``hfcache metrics``: the inventory in the Prometheus text format, checked with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import stat

from prometheus_client.parser import text_string_to_metric_families

import hfcache
from tests.support import run_cli, small_cache
from tests.trees import write


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_metrics_match_the_scan_and_the_last_prune(tmp_path):
    root = str(tmp_path / 'we"ird\\hub')  # label values are escaped
    small_cache(root)
    write(os.path.join(root, "models--org--a", "blobs", "e9.1a2b3c4d.incomplete"), 77)
    before = hfcache.scan([root]).caches[0]
    result = run_cli("prune", "--cache-dir", root, "--max-age", "30d", "--junk-grace", "0s", "--yes", "--json")
    done = json.loads(result.stdout)
    assert result.exit_code == 0 and done["freed_bytes"] > 0, result.output

    out = str(tmp_path / "textfile" / "hfcache.prom")
    os.makedirs(os.path.dirname(out))
    result = run_cli("metrics", "--cache-dir", root, "--textfile", out)
    assert result.exit_code == 0 and result.stdout == "", result.output
    assert os.listdir(os.path.dirname(out)) == ["hfcache.prom"]  # no temporary file left behind
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    with open(out) as f:
        metrics = parse(f.read())

    (cache,) = hfcache.scan([root]).caches
    where = {"kind": "huggingface", "root": cache.root}
    assert metrics["hfcache_cache_size_bytes"] == [(where, cache.size_bytes)]
    assert cache.size_bytes < before.size_bytes
    assert metrics["hfcache_cache_models"] == [(where, 2)]
    assert metrics["hfcache_cache_revisions"] == [(where, 2)]
    assert metrics["hfcache_partial_downloads"] == [(where, 1)]
    assert metrics["hfcache_partial_download_bytes"] == [(where, 77)]
    sizes = {labels["model"]: value for labels, value in metrics["hfcache_model_size_bytes"]}
    assert sizes == {i.id: i.size_bytes for i in cache.items}
    assert metrics["hfcache_last_prune_freed_bytes"] == [(where, done["freed_bytes"])]
    ((_, when),) = metrics["hfcache_last_prune_timestamp_seconds"]
    assert abs(when - done["created_at_epoch"]) < 60
    ((_, free),) = metrics["hfcache_filesystem_free_bytes"]
    ((_, total),) = metrics["hfcache_filesystem_size_bytes"]
    assert 0 < free <= total
    assert metrics["hfcache_scan_timestamp_seconds"][0][1] > 0

    stdout = run_cli("metrics", "--cache-dir", root).stdout
    assert parse(stdout).keys() == metrics.keys()


def test_metrics_to_an_unwritable_place_is_a_usage_error(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    blocker = write(str(tmp_path / "file"), b"")
    result = run_cli("metrics", "--cache-dir", root, "--textfile", os.path.join(blocker, "x.prom"))
    assert result.exit_code == 2 and "cannot write metrics" in result.output
