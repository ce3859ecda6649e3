"""The usage history (issue 20): recorded by every scan, metrics and prune; read by ``age_by: use`` and ``min_uses``.

Histories are built over caches the real huggingface_hub client downloaded, by recording
observations at moved clocks (the library takes the time; nothing sleeps): the test sets the
blobs' access times a model "was read" at, then records the day. Processes that hold a blob
are real processes, reaching the cache through a bind mount in their own mount namespace.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from hfcache.caches.scan import scan_caches
from hfcache.fs.system import open_files
from hfcache.history.observe import held_revisions, observe
from hfcache.history.store import SAMPLE_TIERS, day_of, record, samples, usage
from hfcache.plan.build import make_plan
from hfcache.plan.settings import Policy, Settings, load_config
from hfcache.state import StateDB
from tests.fakehub import FakeHub
from tests.support import DAY, cli, get, need_mounts, payload, run_cli

MODELS = ("org/hot", "org/warm", "org/stale", "org/cold", "org/new")


@pytest.fixture
def hub_root(tmp_path):
    """One revision of each of MODELS, downloaded by hf_hub_download; every blob's times 60 days back."""
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        for n, model in enumerate(MODELS):
            hub.push(model, {"config.json": b'{"n": %d}' % n, "model.safetensors": payload(2000 + n, n)})
            get(hub, root, model, "config.json")
            get(hub, root, model, "model.safetensors")
    return root


def blobs_of(root: str, model: str) -> list[str]:
    folder = os.path.join(root, "models--" + model.replace("/", "--"), "blobs")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]


def read_at(root: str, model: str, t: float) -> None:
    """What reading ``model`` at ``t`` does to its blobs on a mount that records access times."""
    for blob in blobs_of(root, model):
        os.utime(blob, (t, os.stat(blob).st_mtime))


def set_times(root: str, t: float) -> None:
    for model in MODELS:
        for blob in blobs_of(root, model):
            os.utime(blob, (t, t))


def remember(root: str, state: str, at: float, held=None) -> None:
    inventory = scan_caches([root], now=at)
    with StateDB(state) as db:
        record(db, observe(inventory, {}, at=at, held=held))
        assert db.warnings == []


def seed_tiers(root: str, state: str, now: float) -> None:
    """45 days of daily observations: hot read every day, warm until 10 days ago, stale until 3 days ago but rarely,
    cold once 20 days ago, new downloaded 5 days ago (its blobs' mtime) and read daily since."""
    start = now - 45 * DAY
    set_times(root, start - DAY)
    for model in ("org/new",):
        for blob in blobs_of(root, model):
            os.utime(blob, (now - 5 * DAY, now - 5 * DAY))
    for day in range(46):
        t = start + day * DAY
        read_at(root, "org/hot", t - 60)
        if day <= 35:
            read_at(root, "org/warm", t - 60)
        if day in (30, 42):
            read_at(root, "org/stale", t - 60)
        if day == 25:
            read_at(root, "org/cold", t - 60)
        if t > now - 5 * DAY:
            read_at(root, "org/new", t - 60)
        remember(root, state, t)


TIERS = """\
version: 1
models:
  "org/hot": {protect: true}
  "org/warm": {max_age: 7d, age_by: use}
  "*": {min_uses: 3, window: 30d}
"""


def plan_ids(plan) -> list[str]:
    return sorted(u.id for u in plan.delete if u.what == "revision")


def test_the_tiered_policy_selects_exactly_what_the_seed_says(hub_root, tmp_path):
    state = str(tmp_path / "state.db")
    now = time.time()
    seed_tiers(hub_root, state, now)
    policy_file = tmp_path / "tiers.yaml"
    policy_file.write_text(TIERS)
    policy = load_config(str(policy_file))
    # Access times were reset (a CI cache restore, a backup tool): only the history knows the uses now.
    set_times(hub_root, now - 60 * DAY)
    inventory = scan_caches([hub_root], now=now)
    with StateDB(state) as db:
        uses = usage(db, [hub_root], since=now - 30 * DAY)
    plan = make_plan(inventory, policy, now=now, usage=uses)
    # warm: last used 10 days ago (> 7d); stale: used on 2 days of the window (< 3); cold: once.
    # hot is protected; new is younger than the window, however rarely used.
    assert plan_ids(plan) == ["org/cold", "org/stale", "org/warm"]
    reasons = {u.id: u.reasons for u in plan.delete}
    (warm,) = reasons["org/warm"]
    assert warm.policy == "max-age" and warm.by == "use" and 9 * DAY < warm.age < 11 * DAY
    assert warm.subject == "(access time, history)"
    (cold,) = reasons["org/cold"]
    assert cold.policy == "min-uses" and cold.rank == 1 and cold.n == 3
    # Without the history, warm is aged by its (reset) access time, and min_uses selects nothing: no history, no rarity.
    blind = make_plan(inventory, policy, now=now)
    assert plan_ids(blind) == ["org/warm"]


def test_prune_on_the_command_line_uses_the_history_and_says_which_signal_decided(hub_root, tmp_path):
    state = str(tmp_path / "state.db")
    now = time.time()
    seed_tiers(hub_root, state, now)
    set_times(hub_root, now - 60 * DAY)
    code, plan = cli(
        "prune", "--cache-dir", hub_root, "--state", state, "--max-age", "7d", "--age-by", "use", "--dry-run", "--json"
    )
    assert code == 0, plan
    assert sorted(u["id"] for u in plan["delete"]) == ["org/cold", "org/warm"]
    [warm] = [u for u in plan["delete"] if u["id"] == "org/warm"]
    assert warm["reasons"] == ["max-age: last used 10d ago (access time, history) (limit 7d)"]
    code, plan = cli(
        "prune", "--cache-dir", hub_root, "--state", state, "--min-uses", "3", "--window", "30d", "--dry-run", "--json"
    )
    assert code == 0, plan
    assert sorted(u["id"] for u in plan["delete"]) == ["org/cold", "org/stale"]
    code, out = cli("prune", "--cache-dir", hub_root, "--window", "30d", "--dry-run")
    assert code == 2 and "--window needs --min-uses" in out


def test_a_revision_younger_than_the_window_or_than_the_history_is_never_rare(hub_root, tmp_path):
    now = time.time()
    set_times(hub_root, now - 60 * DAY)  # every model last read 60 days ago: no use in the window
    inventory = scan_caches([hub_root], now=now)
    policy = Policy(defaults=Settings(min_uses=1, window=30 * DAY))
    for began, expected in ((10, []), (31, sorted(MODELS))):
        state = str(tmp_path / f"began-{began}.db")
        for days_ago in range(began, -1, -1):  # the history began then, a run every day since
            remember(hub_root, state, now - days_ago * DAY)
        with StateDB(state) as db:
            uses = usage(db, [hub_root], since=now - 30 * DAY)
        # Watched for 10 days only, it cannot know 30 days of uses: nothing is rare yet.
        assert plan_ids(make_plan(inventory, policy, now=now, usage=uses)) == expected, began
    # A download younger than the window is never rare, however long the history.
    fresh = blobs_of(hub_root, "org/new")
    for blob in fresh:
        os.utime(blob, (now - 60 * DAY, now - 5 * DAY))
    inventory = scan_caches([hub_root], now=now)
    assert "org/new" not in plan_ids(make_plan(inventory, policy, now=now, usage=uses))


def holder(path: str) -> subprocess.Popen:
    """A process holding ``path`` open (and mapped) until killed; it says when it holds it."""
    code = (
        "import mmap, sys, time\n"
        "f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n"
        "print('holding', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def program_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_a_process_holding_a_blob_through_a_bind_mount_in_its_own_namespace_records_a_use(hub_root, tmp_path):
    need_mounts("unshare", "mount")
    state = str(tmp_path / "state.db")
    snapshot = os.path.join(hub_root, "models--org--cold", "snapshots")
    (commit,) = os.listdir(snapshot)
    inside = "/mnt/models"  # only in the child's mount namespace: no such path here
    code = (
        "import mmap, os, subprocess, sys, time\n"
        f"subprocess.run(['mount', '--make-rprivate', '/'], check=True)\n"
        f"os.makedirs({inside!r}, exist_ok=True)\n"
        f"subprocess.run(['mount', '--bind', {hub_root!r}, {inside!r}], check=True)\n"
        f"f = open({inside!r} + '/models--org--cold/snapshots/{commit}/model.safetensors', 'rb')\n"
        "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n"
        "print('holding', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen(["unshare", "-m", sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        assert not os.path.exists(inside + "/models--org--cold")
        result = run_cli("scan", "--cache-dir", hub_root, "--state", state)
        assert result.exit_code == 0, result.output
        program = program_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    db = sqlite3.connect(state)
    rows = db.execute("SELECT path, day, source, program FROM uses WHERE source = 'process'").fetchall()
    assert [(os.fsdecode(p), s, prog) for p, _, s, prog in rows] == [
        (os.path.join(os.path.realpath(snapshot), commit), "process", program)
    ]
    assert rows[0][1] == day_of(time.time())


def test_held_files_are_matched_by_inode_never_by_name_alone(hub_root, tmp_path):
    """A file of the same name elsewhere (a copy, not the cache's inode) is no use of the revision."""
    blob = blobs_of(hub_root, "org/warm")[0]
    elsewhere = tmp_path / "copy" / "models--org--warm" / "blobs" / os.path.basename(blob)
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(open(blob, "rb").read())
    inventory = scan_caches([hub_root])
    proc = holder(str(elsewhere))
    try:
        assert held_revisions(inventory, open_files([hub_root])) == {}
    finally:
        proc.kill()
        proc.wait()
    proc = holder(blob)
    try:
        held = held_revisions(inventory, open_files([hub_root]))
        program = program_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    (item,) = [i for i in inventory.caches[0].items if i.id == "org/warm"]
    assert held == {item.revisions[0].path: (program,)}


def test_the_history_survives_a_concurrent_writer_and_a_corrupt_file(hub_root, tmp_path):
    state = str(tmp_path / "state.db")
    now = time.time()
    errors = []

    def writer(offset: float) -> None:
        try:
            for i in range(15):
                remember(hub_root, state, now + offset + i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k * 100.0,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with StateDB(state) as db:
        assert len(samples(db, since=0.0)) == 45
    # A corrupt file: moved aside with a warning, started afresh; the scan and a prune still run.
    with open(state, "r+b") as f:
        f.write(b"this is not a database" * 100)
    for name in os.listdir(tmp_path):
        if name.startswith("state.db-"):  # the WAL and its index: the corrupt main file must stand alone
            os.unlink(tmp_path / name)
    result = run_cli("scan", "--cache-dir", hub_root, "--state", state)
    assert result.exit_code == 0 and "was corrupt" in result.stderr, result.output
    assert [n for n in os.listdir(tmp_path) if n.startswith("state.db.corrupt-")]
    code, plan = cli("prune", "--cache-dir", hub_root, "--state", state, "--keep", "1", "--dry-run", "--json")
    assert code == 0, plan
    with StateDB(state) as db:
        assert len(samples(db, since=0.0)) == 2  # the scan's and the prune's


def test_an_unusable_state_database_is_a_warning_and_never_a_failed_prune(hub_root, tmp_path):
    state = tmp_path / "dir-not-db"
    state.mkdir()
    code, out = cli("prune", "--cache-dir", hub_root, "--state", str(state), "--max-age", "1d", "--age-by", "use", "--dry-run")
    assert code == 0 and "state database" in out
    code, out = cli("scan", "--cache-dir", hub_root, "--state", "off")
    assert code == 0 and "state database" not in out


def test_old_samples_are_thinned_and_old_uses_forgotten(hub_root, tmp_path):
    state = str(tmp_path / "state.db")
    now = time.time()
    inventory = scan_caches([hub_root], now=now)
    with StateDB(state) as db:
        start = now - 200 * DAY
        t = start
        while t < now:  # metrics every 3 hours for 200 days (every 15 minutes is the same, 12 times over)
            record(db, observe(inventory, {}, at=t))
            t += 3 * 3600.0
        assert db.db is not None
        db.db.execute("DELETE FROM meta WHERE key = 'history_rolled_up'")
        record(db, observe(inventory, {}, at=now))
        got = [s.at for s in samples(db, since=0.0)]
    recent = [a for a in got if a >= now - SAMPLE_TIERS[0][0]]
    hourly = [a for a in got if now - SAMPLE_TIERS[1][0] <= a < now - SAMPLE_TIERS[0][0]]
    daily = [a for a in got if a < now - SAMPLE_TIERS[1][0]]
    assert len(recent) >= 14 * 8 - 1  # whole
    assert len(hourly) == pytest.approx((180 - 14) * 8, rel=0.02)  # one per hour: every 3 h sample stays
    assert 19 <= len(daily) <= 21  # 20 days, one per day
    assert got == sorted(got)


def test_metrics_and_scan_record_and_the_revision_rows_are_written_only_when_they_change(hub_root, tmp_path):
    state = str(tmp_path / "state.db")
    assert run_cli("metrics", "--cache-dir", hub_root, "--state", state).exit_code == 0
    assert run_cli("scan", "--cache-dir", hub_root, "--state", state, "--json").exit_code == 0
    db = sqlite3.connect(state)
    (n,) = db.execute("SELECT count(*) FROM samples").fetchone()
    assert n == 2
    rows = db.execute("SELECT first_seen, last_seen FROM revisions").fetchall()
    assert len(rows) == len(MODELS) and all(first == last for first, last in rows)  # the second run wrote none
    sizes = db.execute("SELECT count(*) FROM item_sizes").fetchone()
    assert sizes == (len(MODELS),)
    assert json.loads(run_cli("scan", "--cache-dir", hub_root, "--state", state, "--json").stdout)


def seed_filling_disk(root: str, state: str, now: float, *, days: int = 10, per_day: float = 5e9) -> tuple[int, int]:
    """``days`` of samples every 3 hours: the real file system of ``root``, its free space falling by ``per_day``
    towards what it has now (so a real run now lands on the line). Returns (device, free now)."""
    from hfcache.fs.system import disk_of
    from hfcache.model import Disk

    disk = disk_of(root)
    inventory = scan_caches([root], now=now)
    with StateDB(state) as db:
        for i in range(days * 8 + 1):
            t = now - days * DAY + i * 3 * 3600.0
            free = int(disk.free + per_day * (now - t) / DAY)
            record(db, observe(inventory, {inventory.caches[0].root: Disk(disk.device, disk.total, free)}, at=t))
    return disk.device, disk.free


def test_history_says_what_grows_and_when_the_disk_fills_as_json_and_as_a_chart_at_80_columns(tmp_path):
    root = str(tmp_path / "hub")
    state = str(tmp_path / "state.db")
    now = time.time()
    with FakeHub() as hub:
        hub.push("org/steady", {"a.bin": payload(5000, 1)})
        get(hub, root, "org/steady", "a.bin")
        seed_filling_disk(root, state, now - 2 * DAY)
        # Then a second model arrives, and the first grows: the growers, biggest growth first.
        hub.push("org/fresh", {"w.bin": payload(9000, 2)})
        get(hub, root, "org/fresh", "w.bin")
        hub.push("org/steady", {"a.bin": payload(5000, 1), "b.bin": payload(3000, 3)})
        get(hub, root, "org/steady", "b.bin")
    seed_filling_disk(root, state, now, days=2)
    code, doc = cli("history", "--state", state, "--window", "5d", "--json")
    assert code == 0, doc
    (fs,) = doc["filesystems"]
    assert fs["free_bytes_per_day"] == pytest.approx(-5e9, rel=0.01)
    full = fs["forecast"]["full_at"]
    expected = now + fs["free_bytes"] / 5e9 * DAY
    got = time.mktime(time.strptime(full, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(got - expected) < 0.05 * (expected - now) + 3600
    assert [(g["id"], g["new"]) for g in doc["growers"]] == [("org/fresh", True), ("org/steady", False)]
    assert doc["growers"][1]["grew_bytes"] == 3000
    result = run_cli("history", "--state", state, "--window", "5d", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("free space and caches" in line for line in lines)  # the chart
    chart = [line for line in lines if "┤" in line or "└" in line or "┌" in line]
    assert chart and max(len(line) for line in chart) <= 80  # (braille and box drawing: one cell each)
    assert any(line.startswith("full in about") for line in lines)
    no_chart = run_cli("history", "--state", state, "--no-chart")
    assert "free space and caches" not in no_chart.stdout and "org/fresh" in no_chart.stdout


def test_history_of_a_model_lists_its_days_of_use_and_last_users(hub_root, tmp_path):
    state = str(tmp_path / "state.db")
    now = time.time()
    seed_tiers(hub_root, state, now)
    blob = blobs_of(hub_root, "org/cold")[1]
    proc = holder(blob)
    try:
        inventory = scan_caches([hub_root], now=now + 1)
        held = held_revisions(inventory, open_files([hub_root]))
        program = program_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    with StateDB(state) as db:
        record(db, observe(inventory, {}, at=now + 1, held=held))
    code, doc = cli("history", "--state", state, "--name", "org/cold", "--name", "org/stale", "--window", "30d", "--json")
    assert code == 0, doc
    models = {m["id"]: m for m in doc["models"]}
    assert models.keys() == {"org/cold", "org/stale"}
    assert models["org/cold"]["last_used_by"] == program and models["org/cold"]["last_seen_as"] == "process"
    assert models["org/cold"]["days_used"] == 2  # day 25 of the seed, and now
    assert models["org/stale"]["days_used"] == 2 and models["org/stale"]["last_seen_as"] == "atime"
    out = run_cli("history", "--state", state, "--name", "org/cold")
    assert program in out.stdout


def test_history_without_a_history_says_so_and_creates_nothing(tmp_path):
    state = tmp_path / "none.db"
    result = run_cli("history", "--state", str(state))
    assert result.exit_code == 0 and "No history yet" in result.stdout and not state.exists()
    code, doc = cli("history", "--state", str(state), "--json")
    assert code == 0 and doc["filesystems"] == [] and doc["first_sample"] is None
    assert run_cli("history", "--window", "0s").exit_code == 2


def test_metrics_export_the_growth_rate_and_when_the_disk_fills(hub_root, tmp_path):
    from tests.test_metrics import parse

    state = str(tmp_path / "state.db")
    now = time.time()
    _, free = seed_filling_disk(hub_root, state, now - 60)
    result = run_cli("metrics", "--cache-dir", hub_root, "--state", state)
    assert result.exit_code == 0, result.output
    metrics = parse(result.stdout)
    [(labels, rate)] = metrics["hfcache_filesystem_free_bytes_per_day"]
    assert labels["root"] == os.path.realpath(hub_root) and rate == pytest.approx(-5e9, rel=0.05)
    [(_, full)] = metrics["hfcache_filesystem_full_timestamp_seconds"]
    assert abs(full - (now + free / 5e9 * DAY)) < 0.1 * free / 5e9 * DAY + 3600
    [(_, earliest)] = metrics["hfcache_filesystem_full_earliest_timestamp_seconds"]
    assert now < earliest <= full
    [(_, growth)] = metrics["hfcache_cache_growth_bytes_per_day"]
    assert growth == pytest.approx(0.0, abs=1.0)  # the cache itself did not grow


def readme_tiers() -> str:
    import re

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if "min_uses" in b]
    return block


def test_the_readme_tiers_evict_by_real_use_on_a_noatime_mount(tmp_path, mounts):
    """On noatime, access times say nothing: processes seen holding files decide, as the history recorded them."""
    mnt = mounts.mount("-t", "tmpfs", "-o", "noatime,size=64m", "tmpfs", str(tmp_path / "mnt"))
    root = os.path.join(mnt, "hub")
    models = ("org/core-a", "org/serving-hot", "org/serving-idle", "org/batch-busy", "org/batch-rare")
    with FakeHub() as hub:
        for n, model in enumerate(models):
            hub.push(model, {"model.safetensors": payload(1000 + n, n)})
            get(hub, root, model, "model.safetensors")
    state = str(tmp_path / "state.db")
    now = time.time()
    for blob in (b for m in models for b in blobs_of(root, m)):  # downloaded 60 days ago
        os.utime(blob, (now - 60 * DAY, now - 60 * DAY))
    uses = {  # days ago each model was seen in use by a process
        "org/serving-hot": (2,),
        "org/serving-idle": (12,),
        "org/batch-busy": (25, 18, 9, 4),
        "org/batch-rare": (20,),
    }
    for days_ago in range(31, 0, -1):  # metrics ran every day (every 15 minutes, in real life)
        users = [m for m, ds in uses.items() if days_ago in ds]
        procs = [holder(blobs_of(root, m)[0]) for m in users]
        try:
            inventory = scan_caches([root], now=now - days_ago * DAY)
            held = held_revisions(inventory, open_files([root]))
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        assert len(held) == len(users)
        with StateDB(state) as db:
            record(db, observe(inventory, {}, at=now - days_ago * DAY, held=held))
    policy = tmp_path / "tiers.yaml"
    policy.write_text(readme_tiers())
    code, plan = cli("prune", "--cache-dir", root, "--config", str(policy), "--state", state, "--dry-run", "--json")
    assert code == 0, plan
    # core: protected; serving-hot used 2 days ago (< 7d); batch-busy used on 4 days of the last 30;
    # serving-idle unused for 12 days (> 7d); batch-rare used on 1 day (< 3). Access times never moved.
    assert sorted(u["id"] for u in plan["delete"]) == ["org/batch-rare", "org/serving-idle"]
    [idle] = [u for u in plan["delete"] if u["id"] == "org/serving-idle"]
    assert idle["reasons"][0].startswith("max-age: last used 12d ago by python") and "(history)" in idle["reasons"][0]
    # The same ages by access time are refused there: they never move.
    code, out = cli("prune", "--cache-dir", root, "--state", state, "--max-age", "7d", "--dry-run")
    assert code == 2 and "noatime" in out


def test_no_rate_or_forecast_from_samples_minutes_apart(hub_root, tmp_path):
    """A prune, its metrics and a scan a few seconds apart: a line through them is noise times thousands per day."""
    state = str(tmp_path / "state.db")
    for command in (("scan",), ("metrics",), ("scan",)):
        assert run_cli(*command, "--cache-dir", hub_root, "--state", state).exit_code == 0
    code, doc = cli("history", "--state", state, "--json")
    assert code == 0, doc
    (fs,) = doc["filesystems"]
    assert fs["free_bytes_per_day"] is None and fs["forecast"] is None
    assert [c["bytes_per_day"] for c in doc["caches"]] == [None]
    out = run_cli("history", "--state", state).stdout
    assert "too little history" in out


def test_on_a_noatime_mount_a_revision_the_history_has_not_watched_is_never_aged_by_its_download(tmp_path, mounts):
    """No history at all (--state off, a new machine): the access time there is the download time, not a last use."""
    mnt = mounts.mount("-t", "tmpfs", "-o", "noatime,size=16m", "tmpfs", str(tmp_path / "mnt"))
    root = os.path.join(mnt, "hub")
    with FakeHub() as hub:
        hub.push("org/daily", {"w.bin": payload(1000, 1)})
        get(hub, root, "org/daily", "w.bin")
    for blob in blobs_of(root, "org/daily"):  # downloaded 60 days ago, read every day since (noatime: no trace)
        os.utime(blob, (time.time() - 60 * DAY, time.time() - 60 * DAY))
    for state in ("off", str(tmp_path / "fresh.db")):
        code, plan = cli(
            "prune", "--cache-dir", root, "--state", state, "--max-age", "7d", "--age-by", "use", "--dry-run", "--json"
        )
        assert code == 0, plan
        assert plan["delete"] == [], state


def test_a_state_database_others_can_write_never_decides_a_deletion(hub_root, tmp_path):
    """Anyone able to write the history could make a used model look unused: such a database is not trusted."""
    state = str(tmp_path / "state.db")
    now = time.time()
    set_times(hub_root, now - 60 * DAY)
    for days_ago in range(40, -1, -1):
        remember(hub_root, state, now - days_ago * DAY)
    args = ("prune", "--cache-dir", hub_root, "--state", state, "--min-uses", "1", "--dry-run", "--json")
    code, plan = cli(*args)
    assert code == 0 and len(plan["delete"]) == len(MODELS)  # trusted: nothing used in 30 days
    os.chmod(state, 0o666)
    code, out = cli(*args[:-1])
    assert code == 0 and "can be written by anyone" in out and "Nothing to delete" in out
    os.chmod(state, 0o644)
    if os.geteuid() == 0:
        os.chown(state, 65534, 65534)
        code, out = cli(*args[:-1])
        assert code == 0 and "belongs to uid 65534" in out and "Nothing to delete" in out


def test_quotas_evict_least_recently_used_by_the_history_with_age_by_use(hub_root, tmp_path):
    state = str(tmp_path / "state.db")
    now = time.time()
    set_times(hub_root, now - 60 * DAY)
    remember(hub_root, state, now - 40 * DAY)
    last_read = {"org/hot": 1, "org/warm": 5, "org/stale": 20, "org/cold": 30, "org/new": 3}
    for model, days in sorted(last_read.items(), key=lambda kv: -kv[1]):
        read_at(hub_root, model, now - days * DAY)
        remember(hub_root, state, now - days * DAY + 60)
    set_times(hub_root, now - 60 * DAY)  # access times reset (a restore): only the history knows
    inventory = scan_caches([hub_root], now=now)
    (cache,) = inventory.caches
    sizes = {i.id: i.size_bytes for i in cache.items}
    with StateDB(state) as db:
        uses = usage(db, [hub_root], since=now - 30 * DAY)
    limit = cache.size_bytes - sizes["org/cold"] - sizes["org/stale"]  # two models must go
    policy = Policy(defaults=Settings(max_size=limit, age_by="use", allow_remove_all=True))
    plan = make_plan(inventory, policy, now=now, usage=uses)
    assert plan_ids(plan) == ["org/cold", "org/stale"]  # least recently used first, by the history
    reasons = {u.id: u.reasons[0] for u in plan.delete}
    assert reasons["org/cold"].by == "use" and reasons["org/cold"].subject == "(access time, history)"
    blind = make_plan(inventory, Policy(defaults=Settings(max_size=limit, age_by="atime", allow_remove_all=True)), now=now)
    assert plan_ids(blind) != ["org/cold", "org/stale"]  # by the reset access times the order is another


WRITER = """
import sys, time
from hfcache.caches.scan import scan_caches
from hfcache.history.observe import observe
from hfcache.history.store import record
from hfcache.state import StateDB
root, state, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
inventory = scan_caches([root])
for i in range(10):
    with StateDB(state) as db:
        record(db, observe(inventory, {}, at=start + i))
        if db.warnings:
            sys.exit("\\n".join(db.warnings))
"""


def test_concurrent_writers_in_other_processes_and_a_scan_lose_nothing(hub_root, tmp_path):
    state = str(tmp_path / "state.db")
    now = time.time()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, hub_root, state, str(now + k * 1000)], stderr=subprocess.PIPE, text=True)
        for k in range(3)
    ]
    scans = [run_cli("scan", "--cache-dir", hub_root, "--state", state) for _ in range(3)]
    for proc in writers:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    assert all(r.exit_code == 0 and "state database" not in r.stderr for r in scans), [r.stderr for r in scans]
    with StateDB(state) as db:
        assert len(samples(db, since=0.0)) == 3 * 10 + 3


def test_a_prune_that_ran_is_recorded_for_metrics_and_a_dry_run_is_not(hub_root, tmp_path):
    from tests.test_metrics import parse

    state = str(tmp_path / "state.db")
    assert cli("prune", "--cache-dir", hub_root, "--state", state, "--keep", "1", "--dry-run")[0] == 0
    metrics = parse(run_cli("metrics", "--cache-dir", hub_root, "--state", state).stdout)
    assert "hfcache_last_prune_run_timestamp_seconds" not in metrics  # a dry run is no run
    started = time.time()
    assert cli("prune", "--cache-dir", hub_root, "--state", state, "--keep", "1", "--yes")[0] == 0  # nothing to delete
    metrics = parse(run_cli("metrics", "--cache-dir", hub_root, "--state", state).stdout)
    [(labels, when)] = metrics["hfcache_last_prune_run_timestamp_seconds"]
    assert labels["root"] == os.path.realpath(hub_root) and when >= int(started)
    assert metrics["hfcache_last_prune_failed_units"] == [(labels, 0.0)]
