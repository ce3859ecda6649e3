"""Adversarial tests of ``prune --junk`` (third pass): each asserts the SAFE behaviour.

A download in progress, a resumable partial, a lock, a ref, an unknown file in ``blobs/``,
anything outside a prune's scope must never be deleted by ``prune --junk``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

import hfcache
from hfcache.execute.run import execute_plan
from hfcache.plan.build import make_plan
from hfcache.plan.settings import Policy, Settings
from tests.support import cli, live_hook
from tests.trees import commit, link, repo, sha256, write

DAY = 86400.0
C1, C2, C3 = commit("adv-1"), commit("adv-2"), commit("adv-3")


def age(path: str, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)


def model(root: str, name: str = "org--m", *, oid: str | None = None) -> str:
    oid = oid or sha256(f"{name}-weights")
    return repo(root, f"models--{name}", snapshots={C1: {"w.bin": oid}}, blobs={oid: 300}, refs={"main": C1})


def prune(root: str, *args: str) -> dict:
    code, doc = cli("prune", "--cache-dir", root, "--junk", *args, "--yes", "--json")
    assert isinstance(doc, dict), doc
    return doc


def deleted(doc: dict) -> set[str]:
    return {u["path"] for u in doc.get("delete", []) if u.get("status") == "deleted"}


class Flock:
    """An exclusive flock held by this process on its own open file description (another "process" to is_lock_held)."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        os.close(self.fd)


HOLD = """
import sys
with open(sys.argv[1], "ab"):
    print("ready", flush=True)
    sys.stdin.read()
"""

APPEND = """
import select, sys
with open(sys.argv[1], "ab") as f:
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0.05)[0]:
        f.write(b"x" * 512)
        f.flush()
"""


@pytest.fixture
def child():
    made: list[subprocess.Popen] = []

    def start(code: str, path: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        made.append(p)
        return p

    yield start
    for p in made:
        if p.poll() is None:
            p.kill()
            p.wait()


PARTIALS = {
    "llama.cpp": lambda etag: etag + ".downloadInProgress",
    "hub": lambda etag: etag + ".incomplete",
    "hub-token": lambda etag: etag + ".1a2b3c4d.incomplete",
    "rust": lambda etag: etag + ".part",
    "rust-sync": lambda etag: etag + ".sync.part",
    "rust-0.4.0": lambda etag: etag + "..part",
}

LOCKS = {
    "hub": lambda root, folder, etag: os.path.join(root, ".locks", folder, etag + ".lock"),
    "swift": lambda root, folder, etag: os.path.join(root, ".locks", folder, "blobs", etag + ".lock"),
    "beside": lambda root, folder, etag: os.path.join(root, folder, "blobs", etag + ".lock"),
}


# ---------------------------------------------------------------------------------------------
# A partial whose lock is held, at every lock location, for every partial name


@pytest.mark.parametrize("grace", [(), ("--junk-grace", "0s")], ids=["grace-default", "grace-0"])
@pytest.mark.parametrize("where", sorted(LOCKS))
@pytest.mark.parametrize("writer", sorted(PARTIALS))
def test_an_old_partial_whose_lock_is_held_stays(tmp_path, writer, where, grace):
    root = str(tmp_path / "hub")
    repo_dir = model(root)
    etag = sha256("downloading")
    partial = write(os.path.join(repo_dir, "blobs", PARTIALS[writer](etag)), 100)
    age(partial, 5)
    lock = Flock(LOCKS[where](root, "models--org--m", etag))
    try:
        doc = prune(root, *grace)
        assert partial not in deleted(doc) and os.path.exists(partial), doc
    finally:
        lock.release()


@pytest.mark.parametrize(("stale", "held"), [(s, h) for s in ("hub", "swift") for h in ("beside", "swift") if s != h])
@pytest.mark.parametrize("writer", ["rust", "llama.cpp", "hub"])
def test_a_held_lock_is_seen_even_when_a_free_lock_of_another_writer_exists(tmp_path, writer, held, stale):
    """Two writers' lock files for one etag: an old free one (left by a finished download) and a held one."""
    root = str(tmp_path / "hub")
    repo_dir = model(root)
    etag = sha256("downloading")
    partial = write(os.path.join(repo_dir, "blobs", PARTIALS[writer](etag)), 100)
    age(partial, 5)
    write(LOCKS[stale](root, "models--org--m", etag))  # a lock file a finished download left, free
    lock = Flock(LOCKS[held](root, "models--org--m", etag))
    try:
        doc = prune(root, "--junk-grace", "0s")
        assert partial not in deleted(doc) and os.path.exists(partial), doc
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------------
# A partial open or being appended to


@pytest.mark.parametrize("code", [HOLD, APPEND], ids=["open", "appending"])
@pytest.mark.parametrize("writer", ["llama.cpp", "hub", "rust"])
def test_a_partial_a_process_has_open_stays_even_with_grace_0(tmp_path, child, writer, code):
    root = str(tmp_path / "hub")
    repo_dir = model(root)
    partial = write(os.path.join(repo_dir, "blobs", PARTIALS[writer](sha256("open"))), 100)
    age(partial, 5)
    proc = child(code, partial)
    if code == HOLD:
        age(partial, 5)
    doc = prune(root, "--junk-grace", "0s")
    assert partial not in deleted(doc) and os.path.exists(partial), doc
    assert proc.poll() is None


# ---------------------------------------------------------------------------------------------
# Races: the lock taken, the file opened, a snapshot linking an orphan, between plan and unit


def _plan(root: str, grace: float = 0.0):
    inv = hfcache.scan([root])
    plan = make_plan(inv, Policy(overrides=Settings(junk=True, junk_grace=grace)), now=time.time())
    return plan


def _trigger(root: str) -> str:
    """A stale partial in another repo: listed first, its open-file check runs the hook."""
    other = model(root, "aaa--first")
    p = write(os.path.join(other, "blobs", sha256("trigger") + ".incomplete"), 7)
    age(p, 5)
    return p


@pytest.mark.parametrize("where", sorted(LOCKS))
@pytest.mark.parametrize("writer", ["hub", "rust", "llama.cpp"])
def test_a_lock_taken_between_plan_and_unit_keeps_the_partial(tmp_path, writer, where):
    root = str(tmp_path / "hub")
    _trigger(root)
    repo_dir = model(root)
    etag = sha256("late lock")
    partial = write(os.path.join(repo_dir, "blobs", PARTIALS[writer](etag)), 100)
    age(partial, 5)
    plan = _plan(root)
    assert partial in {u.path for u in plan.delete}
    held: list[Flock] = []
    live = live_hook(lambda: held.append(Flock(LOCKS[where](root, "models--org--m", etag))))([root])
    try:
        execute_plan(plan, hfcache.scan([root]), live=live)
        assert held, "the hook did not run"
        assert os.path.exists(partial)
    finally:
        for h in held:
            h.release()


@pytest.mark.parametrize("where", sorted(LOCKS))
def test_apply_of_a_saved_plan_after_a_lock_was_taken_keeps_the_partial(tmp_path, where):
    root = str(tmp_path / "hub")
    repo_dir = model(root)
    etag = sha256("late lock")
    partial = write(os.path.join(repo_dir, "blobs", etag + ".incomplete"), 100)
    age(partial, 5)
    planfile = str(tmp_path / "plan.json")
    code, out = cli("prune", "--cache-dir", root, "--junk", "--junk-grace", "0s", "--plan-out", planfile, "--dry-run")
    assert code == 0, out
    lock = Flock(LOCKS[where](root, "models--org--m", etag))
    try:
        code, out = cli("apply", planfile, "--yes")
        assert os.path.exists(partial), out
    finally:
        lock.release()


def test_a_partial_opened_between_plan_and_unit_stays(tmp_path, child):
    root = str(tmp_path / "hub")
    _trigger(root)
    repo_dir = model(root)
    partial = write(os.path.join(repo_dir, "blobs", sha256("late open") + ".downloadInProgress"), 100)
    age(partial, 5)
    plan = _plan(root)
    assert partial in {u.path for u in plan.delete}
    child(HOLD, partial)  # opened after the plan (live_hook's table is always empty: the real one is used)
    age(partial, 5)
    execute_plan(plan, hfcache.scan([root]))
    assert os.path.exists(partial)


def test_an_orphan_a_snapshot_links_after_the_plan_stays(tmp_path):
    root = str(tmp_path / "hub")
    _trigger(root)
    repo_dir = model(root)
    orphan = write(os.path.join(repo_dir, "blobs", sha256("orphan")), 50)
    age(orphan, 5)
    plan = _plan(root)
    assert orphan in {u.path for u in plan.delete}

    def linked():
        link(os.path.join(repo_dir, "snapshots", C2, "extra.bin"), "../../blobs/" + sha256("orphan"))

    execute_plan(plan, hfcache.scan([root]), live=live_hook(linked)([root]))
    assert os.path.exists(orphan)


# ---------------------------------------------------------------------------------------------
# Names in blobs/ that are neither blobs nor known temporaries


UNKNOWN = ["tmp", "partial", "download", "crdownload", "aria2", "bak", "part.1", "incomplete.bak", "lock.bak"]


@pytest.mark.parametrize("grace", [(), ("--junk-grace", "0s")], ids=["grace-default", "grace-0"])
def test_unknown_names_in_blobs_stay(tmp_path, grace):
    root = str(tmp_path / "hub")
    repo_dir = model(root)
    blobs = os.path.join(repo_dir, "blobs")
    names = [f"{sha256('u')}.{ext}" for ext in UNKNOWN]
    names += ["foo", "A" * 64, sha256("x")[:63], "sha256:" + sha256("y"), f"{'a' * 32}.part", "0" * 64 + "\n"]
    names += [".nfs000000001", "tmp_not-a-uuid", "." + sha256("z") + ".tmp"]
    paths = [write(os.path.join(blobs, n), 9) for n in names]
    for p in paths:
        age(p, 30)
    prune(root, *grace)
    gone = [p for p in paths if not os.path.lexists(p)]
    assert gone == [], gone


def test_a_directory_named_like_a_partial_is_not_emptied(tmp_path):
    """A folder in blobs/ named like a partial (a tool's staging dir): never removed with its contents."""
    root = str(tmp_path / "hub")
    repo_dir = model(root)
    folder = os.path.join(repo_dir, "blobs", sha256("dir") + ".incomplete")
    inner = write(os.path.join(folder, "chunk-0"), 10)
    age(inner, 30)
    age(folder, 30)
    doc = prune(root)
    assert os.path.exists(inner), doc


# ---------------------------------------------------------------------------------------------
# Refs


def test_a_real_ref_whose_name_ends_in_tmp_is_not_junk(tmp_path):
    """A branch or tag named ``v1.tmp`` (a valid git ref name) is written by the hub as refs/v1.tmp."""
    root = str(tmp_path / "hub")
    repo_dir = model(root)
    ref = write(os.path.join(repo_dir, "refs", "v1.tmp"), C1.encode())
    age(ref, 30)
    doc = prune(root)
    assert os.path.exists(ref), doc


def test_a_ref_tmp_renamed_into_place_during_the_run(tmp_path):
    root = str(tmp_path / "hub")
    _trigger(root)
    repo_dir = model(root)
    tmp = write(os.path.join(repo_dir, "refs", "main.tmp"), C1.encode())
    age(tmp, 5)
    plan = _plan(root)

    def renamed():
        os.replace(tmp, os.path.join(repo_dir, "refs", "main"))

    execute_plan(plan, hfcache.scan([root]), live=live_hook(renamed)([root]))
    with open(os.path.join(repo_dir, "refs", "main")) as f:
        assert f.read() == C1


def test_ref_main_tmp_as_the_only_ref_of_a_revision_is_a_ref_the_plan_names(tmp_path):
    """llama.cpp killed before renaming refs/main.tmp: the revision it names is the one it loads next."""
    root = str(tmp_path / "hub")
    a, b = sha256("a"), sha256("b")
    repo_dir = repo(root, "models--org--m", snapshots={C1: {"w": a}, C2: {"w": b}}, blobs={a: 10, b: 20}, refs={"v1": C1})
    write(os.path.join(repo_dir, "refs", "main.tmp"), C2.encode())
    # C2 older by mtime than C1 (downloaded first, main.tmp names it)
    age(os.path.join(repo_dir, "blobs", b), 10)
    age(os.path.join(repo_dir, "blobs", a), 1)
    code, doc = cli("prune", "--cache-dir", root, "--keep", "1", "--dry-run", "--json")
    going = {u["revision"]: u for u in doc["delete"]}
    # A lone main.tmp is read as a ref (huggingface_hub reads it so too): it is not main, so --keep 1
    # may select its revision, but never silently: the plan lists the ref that goes with it.
    assert C2 not in going or going[C2]["refs"] == ["main.tmp"], going


# ---------------------------------------------------------------------------------------------
# The emptied-repo leftover


def _emptied(root: str, name: str = "org--e") -> str:
    repo_dir = os.path.join(root, f"models--{name}")
    for sub in ("snapshots", "blobs", "refs"):
        os.makedirs(os.path.join(repo_dir, sub))
        age(os.path.join(repo_dir, sub), 5)
    age(repo_dir, 5)
    return repo_dir


@pytest.mark.parametrize("grace", [0.0, DAY], ids=["grace-0", "grace-default"])
def test_an_emptied_repo_a_download_starts_into_during_the_run_keeps_its_ref(tmp_path, grace):
    """hf_hub_download writes refs/main first, then takes the lock: a ref written after the checks goes."""
    root = str(tmp_path / "hub")
    _trigger(root)
    repo_dir = _emptied(root)
    plan = _plan(root, grace)
    assert repo_dir in {u.path for u in plan.delete}

    def started():
        write(os.path.join(repo_dir, "refs", "main"), C3.encode())

    execute_plan(plan, hfcache.scan([root]), live=live_hook(started)([root]))
    assert os.path.exists(os.path.join(repo_dir, "refs", "main"))


@pytest.mark.parametrize("where", ["hub", "swift"])
def test_an_emptied_repo_with_a_held_lock_stays(tmp_path, where):
    root = str(tmp_path / "hub")
    model(root)
    repo_dir = _emptied(root)
    lock = Flock(LOCKS[where](root, "models--org--e", sha256("starting")))
    try:
        doc = prune(root, "--junk-grace", "0s")
        assert os.path.isdir(repo_dir), doc
    finally:
        lock.release()


def test_an_emptied_repo_with_a_held_lock_taken_during_the_run_stays(tmp_path):
    root = str(tmp_path / "hub")
    _trigger(root)
    repo_dir = _emptied(root)
    plan = _plan(root)
    held: list[Flock] = []
    live = live_hook(lambda: held.append(Flock(LOCKS["swift"](root, "models--org--e", sha256("s")))))([root])
    try:
        execute_plan(plan, hfcache.scan([root]), live=live)
        assert os.path.isdir(repo_dir)
    finally:
        for h in held:
            h.release()


# ---------------------------------------------------------------------------------------------
# Scope


def test_scope_leaves_other_repos_junk(tmp_path):
    root = str(tmp_path / "hub")
    model(root, "org--in")
    out_repo = model(root, "org--out")
    ds = repo(root, "datasets--org--in", snapshots={C1: {"d": sha256("d")}}, blobs={sha256("d"): 5}, refs={"main": C1})
    junk = []
    for r in (out_repo, ds):
        p = write(os.path.join(r, "blobs", sha256("p") + ".incomplete"), 9)
        o = write(os.path.join(r, "blobs", sha256("o")), 9)
        t = write(os.path.join(r, "refs", "main.tmp"), C1.encode())
        junk += [p, o, t]
    # a repo folder of another type with only a partial (no item of type model)
    only = write(os.path.join(root, "datasets--org--in2", "blobs", sha256("q") + ".incomplete"), 9)
    junk.append(only)
    for p in junk:
        age(p, 30)
    doc = prune(root, "--type", "model", "--name", "org/in*")
    assert [p for p in junk if not os.path.exists(p)] == [], doc


def test_scope_name_only_partial_of_an_id_with_no_item_of_another_type(tmp_path):
    """--type model: a dataset repo folder holding only a partial is not a model's."""
    root = str(tmp_path / "hub")
    model(root, "org--x")
    p = write(os.path.join(root, "datasets--org--lonely", "blobs", sha256("q") + ".incomplete"), 9)
    age(p, 30)
    age(os.path.dirname(p), 30)
    doc = prune(root, "--type", "model")
    assert os.path.exists(p), doc


# ---------------------------------------------------------------------------------------------
# LLAMA_CACHE


def _env(tmp_path, **extra) -> dict:
    return {
        "HOME": str(tmp_path / "home"),
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "XDG_CACHE_HOME": None,
        "HF_HOME": None,
        **extra,
    }


def test_llama_cache_at_home_is_never_pruned(tmp_path):
    home = tmp_path / "home"
    stale = write(str(home / "models--org--junk" / "blobs" / (sha256("h") + ".incomplete")), 9)
    age(stale, 30)
    empty = home / "models--org--empty"
    (empty / "snapshots").mkdir(parents=True)
    age(str(empty / "snapshots"), 30)
    age(str(empty), 30)
    model(str(tmp_path / "hub"))
    code, doc = cli("prune", "--kind", "huggingface", "--junk", "--yes", "--json", env=_env(tmp_path, LLAMA_CACHE=str(home)))
    assert os.path.exists(stale) and empty.is_dir(), doc


def test_llama_cache_inside_the_hub_cache_locks_folder_is_never_pruned(tmp_path):
    hub = tmp_path / "hub"
    model(str(hub))
    lockdir = hub / ".locks" / "models--org--old"
    lockdir.mkdir(parents=True)
    age(str(lockdir), 30)
    swift = hub / ".locks" / "models--org--m" / "blobs"
    write(str(swift / (sha256("s") + ".lock")))
    age(str(swift), 30)
    code, doc = cli(
        "prune", "--kind", "huggingface", "--junk", "--yes", "--json", env=_env(tmp_path, LLAMA_CACHE=str(hub / ".locks"))
    )
    assert lockdir.is_dir() and swift.is_dir(), doc


@pytest.mark.parametrize("target", ["hub", "repo"])
def test_llama_cache_symlink_to_the_hub_cache(tmp_path, target):
    hub = tmp_path / "hub"
    repo_dir = model(str(hub))
    partial = write(os.path.join(repo_dir, "blobs", sha256("p") + ".part"), 9)
    age(partial, 5)
    lock = Flock(LOCKS["beside"](str(hub), "models--org--m", sha256("p")))
    link_path = tmp_path / "llama"
    os.symlink(str(hub) if target == "hub" else repo_dir, link_path)
    try:
        code, doc = cli(
            "prune", "--kind", "huggingface", "--junk", "--yes", "--json", env=_env(tmp_path, LLAMA_CACHE=str(link_path))
        )
        assert os.path.exists(partial) and os.path.isdir(os.path.join(repo_dir, "snapshots", C1)), doc
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------------
# The shared store under a scope


def test_scope_never_sweeps_a_payload_another_repo_links(tmp_path):
    """An orphan blob of an in-scope repo links a payload an out-of-scope repo's orphan links too."""
    from tests.trees import share, shared_store

    root = str(tmp_path / "hub")
    shared_store(root)
    a = model(root, "org--in")
    b = model(root, "org--out")
    xet = sha256("shared payload")
    etag = sha256("orphan etag")
    for r in (a, b):
        write(os.path.join(r, "blobs", etag), 1)
        payload = share(root, r, etag, xet, 64)
        age(os.path.join(r, "blobs", etag), 30)
    age(payload, 30)
    # and a payload no repo links (junk of no item): never under a scope
    lonely = write(os.path.join(root, "blobs", sha256("lonely")[:2], sha256("lonely")), 32)
    write(lonely + ".refs", b"")
    age(lonely, 30)
    doc = prune(root, "--name", "org/in")
    assert os.path.exists(payload) and os.path.lexists(os.path.join(b, "blobs", etag)), doc
    assert os.path.exists(lonely), doc
