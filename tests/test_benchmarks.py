"""The benchmark's tools (issue 7): the synthetic cache is a valid hub cache, the script runs, --jobs changes nothing.

Speed itself is measured by ``benchmarks/bench_scan.py``, never by a timed test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from hfcache.caches import scan_caches
from tests.fakehub import FakeHub
from tests.test_differential import assert_same_as_hub, build_rich_cache

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
sys.path.insert(0, BENCHMARKS)

from make_cache import make_cache  # noqa: E402


def test_the_synthetic_cache_is_one_the_hub_reads_as_we_do(tmp_path):
    root = str(tmp_path / "hub")
    repos = make_cache(root, 600)
    cache = assert_same_as_hub(root)  # every size, revision and ref as scan_cache_dir has them
    assert len(cache.items) == repos
    assert sum(r.nb_files for i in cache.items for r in i.revisions) == 600
    assert {i.type for i in cache.items} == {"model", "dataset", "space"}
    assert any(len(i.revisions) > 1 for i in cache.items)
    assert cache.size_bytes > 10**11  # sparse: sizes of real weights ...
    used = sum(os.lstat(os.path.join(d, f)).st_blocks for d, _, fs in os.walk(root) for f in fs) * 512
    assert used < 10**7  # ... on almost no disk


def test_the_benchmark_script_runs_and_checks_the_totals(tmp_path):
    done = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "bench_scan.py"), "--files", "300", "--runs", "1", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["results"]) == {"hfcache scan --json", "scan_cache_dir", "du -sb"}
    assert report["files"] > 300 and set(report["targets_met"]) == {"vs scan_cache_dir", "vs du -sb", "peak RSS MB"}
    assert os.listdir(tmp_path) == []  # the generated cache is removed


def test_jobs_gives_the_same_inventory(tmp_path):
    rich, many = str(tmp_path / "rich"), str(tmp_path / "many")
    with FakeHub() as hub:
        build_rich_cache(hub, rich)
    repos = make_cache(many, 800)
    one = scan_caches([rich, many], now=0.0)
    four = scan_caches([rich, many], now=0.0, jobs=4)
    assert dataclasses.asdict(one) == dataclasses.asdict(four)
    assert [len(c.items) for c in four.caches] == [6, repos]
