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
        remember(hub_root, state, now - began * DAY)  # the history began then
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
