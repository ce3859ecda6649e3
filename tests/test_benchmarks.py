"""The benchmark's tools (issue 7): the synthetic cache is a valid hub cache, the script runs, --jobs changes nothing.

Speed itself is measured by ``benchmarks/bench_scan.py``, never by a timed test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from hfcache.caches.scan import scan_caches
from tests.fakehub import FakeHub
from tests.support import assert_same_as_hub, build_rich_cache, run_cli

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


def _bench_report(tmp_path, script: str, *args: str) -> dict:
    """A benchmark script's --json report, its generated caches under ``tmp_path``; it must exit 0."""
    done = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *args, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_benchmark_script_runs_and_checks_the_totals(tmp_path):
    report = _bench_report(tmp_path, "bench_scan.py", "--files", "300", "--runs", "1")
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


def test_the_prune_benchmark_deletes_exactly_the_old_revisions(tmp_path):
    """bench_prune.py (issue 15) at a tiny size: every prune deletes exactly the planned revisions, rm -rf the same paths.

    The script exits 1 when a prune plans or reports another number of revisions, or leaves
    another tree than the template without the planned paths; the baseline is this same
    checkout (``--baseline-tree``: no git worktree, no history needed).
    """
    from bench_prune import compare, listing, make_prune_cache

    done = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "bench_prune.py"), "--repos", "40", "--delete", "20", "--rounds", "1"]
        + ["--baseline-tree", os.path.dirname(BENCHMARKS), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["repos"], report["revisions"], report["deleted_revisions"]) == (40, 60, 20)
    assert report["paths_deleted"] > 20 and report["entries_deleted"] > report["paths_deleted"]
    assert set(report["results"]) == {"hfcache prune", "baseline prune", "rm -rf"}
    for name in ("hfcache prune", "baseline prune"):
        result = report["results"][name]
        assert result["units_deleted"] == 20 and result["reclaim_bytes"] == report["reclaim_bytes"] > 0
        assert result["exec_median_s"] > 0
    assert set(report["targets_met"]) == {"prune vs rm -rf", "execution vs rm -rf", "prune vs baseline", "execution vs baseline"}
    assert os.listdir(tmp_path) == []  # the caches and copies are removed

    # The comparison the script relies on sees one path too many or too few.
    root = str(tmp_path / "hub")
    doomed = make_prune_cache(root, 4, 2)["doomed"]
    entries = listing(root)
    expected = {p for p in entries if not any(p == d or p.startswith(d + "/") for d in doomed)}
    assert compare(root, entries, entries) is None
    assert "planned but still there" in compare(root, entries, expected)
    os.unlink(os.path.join(root, next(d for d in doomed if "/blobs/" in d)))
    assert "deleted but not planned" in compare(root, entries, entries)


def test_the_prune_benchmark_runs_this_checkout_with_each_jobs_value(tmp_path):
    done = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "bench_prune.py"), "--repos", "40", "--delete", "20", "--rounds", "1"]
        + ["--no-baseline", "--jobs", "1,2", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["results"]) == {"hfcache prune -j 1", "hfcache prune -j 2", "rm -rf"}
    assert report["options"] == {"hfcache prune -j 1": ["--jobs", "1"], "hfcache prune -j 2": ["--jobs", "2"]}
    for name in ("hfcache prune -j 1", "hfcache prune -j 2"):
        assert report["results"][name]["units_deleted"] == 20
    assert set(report["targets_met"]) == {"prune vs rm -rf", "execution vs rm -rf"}
    bad = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "bench_prune.py"), "--jobs", "4,x"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--jobs: not a list of numbers: 4,x" in bad.stderr
    twice = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "bench_prune.py"), "--jobs", "4,4"], capture_output=True)
    assert twice.returncode == 2 and b"given once" in twice.stderr


def test_the_render_benchmark_runs_every_format(tmp_path):
    report = _bench_report(tmp_path, "bench_render.py", "--files", "300", "--rounds", "1")
    assert set(report["results"]) == {"scan", "scan --revisions", "prune --keep 1 --junk (plan)"}
    assert all(set(r) == {"json", "table", "markdown"} for r in report["results"].values())
    assert os.listdir(tmp_path) == []  # the generated cache is removed


def test_the_verify_benchmark_times_every_command_on_blobs_named_by_their_content(tmp_path):
    """bench_verify.py (issue 19) at a tiny size: both parts run, every verify finds all ok, nothing is left behind."""
    report = _bench_report(
        tmp_path, "bench_verify.py", "--gb", "0.02", "--small", "5", "--files", "300", "--rounds", "1", "--jobs", "2"
    )
    throughput, repeat = report["throughput"], report["repeat"]
    ref = throughput["parallel_reference"]  # openssl, or sha256sum where there is no openssl
    assert {"sha256sum", "hfcache verify --full -j 1", "hfcache verify --full -j 2", f"{ref} x2"} <= set(throughput["results"])
    assert (throughput["blobs"], throughput["files"]) == (7, 7)  # a shard, its config.json, 5 small files
    assert throughput["bytes"] > 20 * 10**6 and throughput["results"]["hfcache verify --full -j 1"]["verify_s"] > 0
    assert set(repeat["results"]) == {"hfcache verify (repeat)", "hfcache verify --json (repeat)", "hfcache scan --json"}
    assert repeat["files"] == 300 and repeat["blobs"] > 100
    assert repeat["results"]["hfcache verify (repeat)"]["scan_s"] > 0
    assert set(report["targets_met"]) == {"per core vs sha256sum", f"scaling vs {ref} (-j 2)", "repeat run s (300 files)"}
    assert os.listdir(tmp_path) == []  # the generated caches are removed


def test_the_verify_benchmark_caches_are_all_ok_and_a_wrong_blob_is_no_result(tmp_path):
    from bench_verify import check_blob_names, check_verify, make_weights_cache

    weights, hub, state = str(tmp_path / "weights"), str(tmp_path / "hub"), str(tmp_path / "state.db")
    cache = make_weights_cache(weights, 3 * 2**20, small=3)
    make_cache(hub, 200, content=True)
    assert check_blob_names(cache["blobs"]) is None
    result = run_cli("verify", "--cache-dir", weights, "--cache-dir", hub, "--state", state, "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["problems"] == 0
    assert [c["counts"]["ok"] for c in doc["caches"]] == [cache["files"], 200]
    assert sum(c["counts"]["unverifiable"] for c in doc["caches"]) == 0

    # The content variant has the sparse tree's shape: the same snapshot entries.
    def links(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) if "/snapshots/" in d for f in fs)

    make_cache(str(tmp_path / "sparse"), 200)
    assert links(str(tmp_path / "sparse")) == links(hub)

    path, _ = cache["blobs"][0]
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 1]))
    assert "1 blobs not named by their sha256" in check_blob_names(cache["blobs"])
    found = {"files_hashed": 1, "counts": {"ok": cache["files"] - 1, "corrupt": 1}}
    assert "not 5 ok" in check_verify(found, files=cache["files"], hashed=1)


def test_the_history_benchmark_runs_and_every_repeat_run_recorded(tmp_path):
    """bench_history.py (issue 20) at a tiny size: the three scans run, the repeat runs each recorded a sample."""
    report = _bench_report(tmp_path, "bench_history.py", "--files", "300", "--rounds", "1")
    assert set(report["results"]) == {
        "scan --json --state off",
        "scan --json --state S (repeat)",
        "scan --json --state NEW (first)",
    }
    assert report["target"] == 1.10 and isinstance(report["target_met"], bool)
    assert os.listdir(tmp_path) == []  # the generated cache and the databases are removed


def test_the_archive_benchmark_runs_and_leaves_nothing(tmp_path):
    """bench_archive.py (issue 21) at a tiny size: the three copies run, the figures are there, nothing is left."""
    report = _bench_report(tmp_path, "bench_archive.py", "--gb", "0.01", "--rounds", "1")
    assert set(report["results"]) == {"cp", "cp + sync", "hfcache archive"}
    assert report["files"] >= 2 and report["target"] == 1.5 and isinstance(report["target_met"], bool)
    assert os.listdir(tmp_path) == []
