"""Prometheus end to end (issue 22, points 1 and 2): the shipped rules and dashboard against a real pipeline.

``promtool`` checks and unit-tests ``examples/prometheus/hfcache-rules.yml``; then Debian's
``prometheus-node-exporter`` serves what ``hfcache metrics --textfile`` wrote about a real
cache (built by the real huggingface_hub client), Debian's ``prometheus`` scrapes it, loads
the rules, and the test asks its HTTP API: the scan's figures are there, an alert fires, and
every query of ``examples/grafana/hfcache-dashboard.json`` returns series. Everything on
127.0.0.1, on ports chosen free. ``.ci/run`` installs the packages; elsewhere the tests skip
without them (and fail under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from hfcache.fs.system import disk_of
from tests.fakehub import FakeHub
from tests.support import DAY, cli, get, payload, run_cli

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
RULES = os.path.join(EXAMPLES, "prometheus", "hfcache-rules.yml")
RULE_TESTS = os.path.join(EXAMPLES, "prometheus", "hfcache-rules.test.yml")
DASHBOARD = os.path.join(EXAMPLES, "grafana", "hfcache-dashboard.json")


def test_the_rules_pass_promtool_and_every_rule_has_unit_tests(need_tool):
    promtool = need_tool("promtool")
    done = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [promtool, "test", "rules", os.path.basename(RULE_TESTS)], capture_output=True, text=True, cwd=os.path.dirname(RULES)
    )
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    rules = {r["alert"] for g in yaml.safe_load(open(RULES))["groups"] for r in g["rules"]}
    tests = yaml.safe_load(open(RULE_TESTS))["tests"]
    tested = {t["alertname"] for case in tests for t in case["alert_rule_test"]}
    firing = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert rules == tested == firing  # every rule tested, and seen firing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _until(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.2)


@pytest.fixture
def a_node(tmp_path) -> Iterator[dict[str, str]]:
    """A real cache with something for every panel: a corrupt blob (verify), a partial download, a prune that ran and
    freed bytes, a week of history of a filling disk; its metrics written for node_exporter's textfile collector."""
    from hfcache.caches.scan import scan_caches
    from hfcache.history.observe import observe
    from hfcache.history.store import record
    from hfcache.model import Disk
    from hfcache.state import StateDB

    root, state, textfiles = str(tmp_path / "hub"), str(tmp_path / "state.db"), str(tmp_path / "textfiles")
    os.makedirs(textfiles)
    with FakeHub() as hub:
        for n in range(3):
            hub.push(f"org/m{n}", {"w.bin": payload(4000 + n, n), "config.json": b'{"n": %d}' % n})
            get(hub, root, f"org/m{n}", "w.bin")
            get(hub, root, f"org/m{n}", "config.json")
        hub.push("org/m0", {"w.bin": payload(5000, 9)})
        get(hub, root, "org/m0", "w.bin")  # a second revision of m0: the first is pruned below
    blobs = os.path.join(root, "models--org--m1", "blobs")
    weights = max((os.path.join(blobs, b) for b in os.listdir(blobs)), key=os.path.getsize)
    with open(weights, "r+b") as f:
        f.write(b"X")  # one byte changed: verify finds it corrupt
    assert cli("verify", "--cache-dir", root, "--state", state)[0] == 8
    with open(os.path.join(blobs, "f" * 64 + ".incomplete"), "wb") as f:
        f.write(b"partial")
    log = str(tmp_path / "audit.log")
    code, plan = cli("prune", "--cache-dir", root, "--keep", "1", "--yes", "--state", state, "--log", log, "--json")
    assert code == 0 and plan["freed_bytes"] > 0, plan
    disk, now = disk_of(root), time.time()
    inventory = scan_caches([root], now=now)
    with StateDB(state) as db:
        for i in range(7 * 8 + 1):  # a week of samples every 3 hours, free space falling 5 GB a day to what it is now
            t = now - 7 * DAY + i * 3 * 3600.0
            free = int(disk.free + 5e9 * (now - t) / DAY)
            record(db, observe(inventory, {inventory.caches[0].root: Disk(disk.device, disk.total, free)}, at=t))
    result = run_cli(
        "metrics", "--cache-dir", root, "--state", state, "--log", log, "--textfile", os.path.join(textfiles, "hfcache.prom")
    )
    assert result.exit_code == 0, result.output
    yield {"root": os.path.realpath(root), "textfiles": textfiles, "tmp": str(tmp_path)}


@pytest.fixture
def prometheus(a_node, need_tool) -> Iterator[str]:
    """node_exporter (textfile collector only) and Prometheus scraping it every second with the rules loaded."""
    exporter_bin, prometheus_bin = need_tool("prometheus-node-exporter"), need_tool("prometheus")
    exporter_port, prom_port = _free_port(), _free_port()
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    exporter_bin,
                    f"--web.listen-address=127.0.0.1:{exporter_port}",
                    "--collector.disable-defaults",
                    "--collector.textfile",
                    f"--collector.textfile.directory={a_node['textfiles']}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        config = os.path.join(a_node["tmp"], "prometheus.yml")
        with open(config, "w") as f:
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [RULES],
                    "scrape_configs": [{"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}],
                },
                f,
            )
        procs.append(
            subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={os.path.join(a_node['tmp'], 'tsdb')}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        yield f"http://127.0.0.1:{prom_port}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _query(api: str, expr: str) -> list[dict]:
    doc = _get(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def test_prometheus_scrapes_the_metrics_fires_an_alert_and_every_dashboard_query_returns_series(a_node, prometheus):
    sizes = _until("the scan's figures in Prometheus", lambda: _query(prometheus, "hfcache_cache_size_bytes"))
    code, scan = cli("scan", "--cache-dir", a_node["root"], "--json", "--state", "off")
    assert [(s["metric"]["root"], int(float(s["value"][1]))) for s in sizes] == [
        (scan["caches"][0]["root"], scan["caches"][0]["size_bytes"])
    ]

    def firing() -> list[dict]:
        alerts = _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "HfcacheCorruptFiles" and a["state"] == "firing"]

    (alert,) = _until("the corrupt-files alert firing", firing)
    assert alert["labels"]["root"] == a_node["root"] and alert["annotations"]["summary"].endswith(f"in {a_node['root']}")

    dashboard = json.load(open(DASHBOARD))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$instance", ".*")
            assert _query(prometheus, expr), f"{panel['title']}: {expr} returned nothing"
