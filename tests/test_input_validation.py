"""Plans and policy files from outside: anything that is not one is a one-line error and exit 2.

A plan is JSON anyone can edit (``hfcache apply FILE``), a policy file YAML anyone with
access to ``/etc/hfcache`` or the user's config dir can write. Neither may double a
deletion, slip a NaN past a time comparison, crash on deep nesting (exit 70), silently
drop a duplicated setting, or silently vanish because its folder cannot be searched.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace

import pytest

from hfcache.errors import ConfigError, PlanFileError, UsageError
from hfcache.output.words import describe, recorded
from hfcache.plan import settings as config
from hfcache.plan.decisions import Plan, PlanCache, PlanUnit, What
from hfcache.plan.planfile import MAX_PLAN_BYTES, load_plan_file, plan_to_dict
from hfcache.plan.policies import Case, Decision, Rule
from hfcache.plan.policyfile import parse_config
from hfcache.plan.settings import MinFree, Settings, find_config, load_config, validate
from tests.support import run_cli
from tests.trees import commit

ROOT = "/srv/cache/hub"
SNAPSHOT = f"{ROOT}/models--org--a/snapshots/{commit(1)}"


def unit(**changes) -> dict:
    """One delete unit as ``prune --plan-out`` writes it."""
    out = {
        "kind": "huggingface",
        "id": "org/a",
        "revision": commit(1),
        "path": SNAPSHOT,
        "reclaim_bytes": 1000,
        "reasons": ["max-age: not accessed for 40 days"],
        "root": ROOT,
        "what": "revision",
        "type": "model",
        "version": None,
        "refs": [],
        "size_bytes": 1000,
        "item_removed": False,
        "last_accessed": "2024-01-01T00:00:00Z",
        "last_modified": "2024-01-01T00:00:00Z",
        "last_accessed_epoch": 1704067200.0,
        "last_modified_epoch": 1704067200.0,
    }
    out.update(changes)
    return out


def plan(**changes) -> dict:
    out = {
        "version": 1,
        "dry_run": True,
        "reclaim_bytes": 1000,
        "created_at": "2024-02-10T00:00:00Z",
        "created_at_epoch": 1707523200.0,
        "policy": ["defaults: max_age=30 days"],
        "caches": [{"kind": "huggingface", "root": ROOT, "junk_grace": 86400.0}],
        "warnings": [],
        "delete": [unit()],
        "keep": [],
    }
    out.update(changes)
    return out


def apply(tmp_path, text: str):
    """``hfcache apply FILE --dry-run`` on this text: (exit code, stderr)."""
    path = tmp_path / "plan.json"
    path.write_text(text)
    result = run_cli("apply", str(path), "--dry-run")
    return result.exit_code, result.stderr


def assert_one_line_exit_2(code: int, stderr: str, message: str) -> None:
    assert code == 2, stderr
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


# ---------------------------------------------------------------------------------------------
# Plans


def test_a_plan_written_by_hfcache_reads_back_unchanged(tmp_path):
    """The strict reader still takes every field the writer writes, junk units with null ids included."""
    kept = PlanUnit(
        "huggingface",
        ROOT,
        "org/a",
        commit(2),
        f"{ROOT}/models--org--a/snapshots/{commit(2)}",
        0,
        (Decision(Rule.KEEP_LATEST, Case.LATEST, keep=True, rank=1, n=1, scope="org/a", by="version"),),
        refs=("main",),
        size_bytes=5,
        last_accessed=10.5,
        last_modified=3,
    )
    partial = PlanUnit(
        "huggingface",
        ROOT,
        None,
        None,
        f"{ROOT}/models--org--a/blobs/x.incomplete",
        7,
        (Decision(Rule.JUNK, Case.PARTIAL, age=2.0, subject="resumable", held=False),),
        what=What.PARTIAL,
        last_accessed=0.0,
        last_modified=2.0,
    )
    original = Plan(
        delete=(replace(kept, revision=commit(1), path=SNAPSHOT, reclaim_bytes=9, refs=(), item_removed=True), partial),
        keep=(kept,),
        created_at=1707523200.25,
        policy=("defaults: keep=1",),
        caches=(PlanCache("huggingface", ROOT, 3600.0),),
        warnings=("a warning",),
    )
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_to_dict(original)))
    loaded = load_plan_file(str(path))
    assert plan_to_dict(loaded) == plan_to_dict(original)

    # Reasons come back as the sentences they were written as; everything else as it was.
    def as_written(u: PlanUnit) -> PlanUnit:
        return replace(u, reasons=tuple(recorded(describe(r)) for r in u.reasons))

    assert [u.reasons[0].subject for u in loaded.delete] == [
        "keep-latest: #1 of the 1 latest of org/a (by version)",
        "junk: resumable partial download, 2s old, lock free",
    ]
    assert loaded == replace(original, delete=tuple(map(as_written, original.delete)), keep=tuple(map(as_written, original.keep)))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (plan(delete=[unit(), unit()]), "delete[1] repeats delete[0]"),
        # the same path written another way is the same unit
        (plan(delete=[unit(), unit(path=SNAPSHOT.replace("/snapshots/", "//snapshots/") + "/")]), "delete[1] repeats delete[0]"),
        # same path, another kind or root: still one folder on disk
        (plan(delete=[unit(), unit(kind="torch", id="x")]), "delete[1] repeats delete[0]"),
        (plan(keep=[unit(reclaim_bytes=0)]), "keep[0] repeats delete[0]"),
    ],
    ids=["same-unit", "same-path-spelled-differently", "same-path-other-kind", "deleted-and-kept"],
)
def test_duplicated_units_are_refused(tmp_path, doc, message):
    """A duplicated unit doubled freed_bytes and the audit lines; now the plan is refused whole."""
    code, err = apply(tmp_path, json.dumps(doc))
    assert_one_line_exit_2(code, err, message)
    assert "a plan lists each unit once" in err


def _with(token: str, field: str, where: str = "unit") -> str:
    """The plan text with ``field`` (of the first unit, of the first cache, or of the plan) set to a raw token."""
    doc = plan()
    target = {"unit": doc["delete"][0], "cache": doc["caches"][0], "plan": doc}[where]
    target[field] = "@@"
    return json.dumps(doc).replace('"@@"', token)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_with("NaN", "last_accessed_epoch"), "NaN is not a number"),
        (_with("Infinity", "last_modified_epoch"), "Infinity is not a number"),
        (_with("-Infinity", "created_at_epoch", "plan"), "-Infinity is not a number"),
        (_with("NaN", "junk_grace", "cache"), "NaN is not a number"),
        (_with("1e400", "last_accessed_epoch"), "1e400 is out of range"),
        (_with("1e400", "reclaim_bytes"), "1e400 is out of range"),
        (_with("-5", "last_accessed_epoch"), "last_accessed_epoch: expected a time"),
        (_with("-1", "reclaim_bytes"), "reclaim_bytes: expected a number of bytes"),
        (_with("-1", "size_bytes"), "size_bytes: expected a number of bytes"),
        (_with("12.5", "reclaim_bytes"), "reclaim_bytes: expected a number of bytes"),
        (_with(str(2**64), "reclaim_bytes"), "reclaim_bytes: expected a number of bytes"),
        (_with("true", "reclaim_bytes"), "reclaim_bytes: expected a number of bytes"),
        (_with('"12"', "reclaim_bytes"), "reclaim_bytes: expected a number of bytes"),
        (_with("-1", "junk_grace", "cache"), "junk_grace: expected a duration"),
        (_with("-1.5", "created_at_epoch", "plan"), "created_at_epoch: expected a time"),
    ],
)
def test_non_finite_and_negative_numbers_are_refused(tmp_path, text, message):
    """NaN passed the "read since the plan" check (every comparison is false); 1e400 is inf, then exit 70."""
    code, err = apply(tmp_path, text)
    assert_one_line_exit_2(code, err, message)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (plan(delete=5), "delete: expected a list"),
        (plan(keep={"a": 1}), "keep: expected a list"),
        (plan(policy=5), "policy: expected a list of strings"),
        (plan(warnings=[["x"]]), "warnings: expected a list of strings"),
        (plan(caches=5), "caches: expected a list"),
        (plan(created_at_epoch="x"), "created_at_epoch: expected a time"),
        (plan(version=True), "not an hfcache plan"),
        (plan(dry_run="false"), "dry_run: expected true or false"),
        (plan(delete=[unit(path="models--org--a/snapshots/x")]), "path: expected an absolute path"),
        (plan(delete=[unit(root=ROOT + "\0")]), "root: expected an absolute path"),
        (plan(delete=[unit(path=["/x"])]), "path: expected an absolute path"),
        (plan(delete=[unit(item_removed="no")]), "item_removed: expected true or false"),
        (plan(delete=[unit(refs="main")]), "refs: expected a list of strings"),
        (plan(delete=[unit(id=5)]), "id: expected a string or null"),
        (plan(delete=[unit(what="everything")]), "unknown unit kind 'everything'"),
    ],
)
def test_wrong_types_are_refused(tmp_path, doc, message):
    """Each used to be a TypeError or ValueError (exit 70), or a silent coercion ("false" is true)."""
    code, err = apply(tmp_path, json.dumps(doc))
    assert_one_line_exit_2(code, err, message)


def test_duplicate_keys_in_a_plan_object_are_refused(tmp_path):
    text = json.dumps(plan()).replace('"reclaim_bytes": 1000,', '"reclaim_bytes": 1000, "reclaim_bytes": 0,', 1)
    code, err = apply(tmp_path, text)
    assert_one_line_exit_2(code, err, "key 'reclaim_bytes' given twice")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # deeper than Python's recursion limit: was RecursionError, exit 70
        json.dumps(plan(warnings=[json.loads("[" * 40 + "]" * 40)])),  # parses, but no plan is 40 levels deep
        json.dumps(plan(extra=json.loads('{"a":' * 40 + "1" + "}" * 40))),
    ],
    ids=["100000", "40-in-a-list", "40-in-an-unknown-field"],
)
def test_deep_nesting_is_refused(tmp_path, text):
    code, err = apply(tmp_path, text)
    assert_one_line_exit_2(code, err, "nested more than 32 levels deep")


def test_a_plan_nested_as_deep_as_allowed_reads(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan(extra=json.loads('{"a":' * 31 + "1" + "}" * 31))))
    assert load_plan_file(str(path)).delete[0].path == SNAPSHOT


def test_an_oversized_plan_is_refused_before_it_is_read(tmp_path):
    """A sparse file past the limit: refused from its size, without reading (or allocating) it."""
    path = tmp_path / "plan.json"
    with open(path, "wb") as f:
        f.truncate(MAX_PLAN_BYTES + 1)
    with pytest.raises(PlanFileError, match=r"larger than 256 MiB"):
        load_plan_file(str(path))
    result = run_cli("apply", str(path), "--dry-run")
    assert_one_line_exit_2(result.exit_code, result.stderr, "larger than 256 MiB: not an hfcache plan")


def test_an_oversized_stream_is_refused(tmp_path, monkeypatch):
    """A pipe has no size to look at: reading stops at the limit."""
    monkeypatch.setattr("hfcache.plan.planfile.MAX_PLAN_BYTES", 1000)
    fifo = str(tmp_path / "plan.fifo")
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"head -c 100000 /dev/zero | tr '\\0' ' ' > {fifo}"])
    try:
        with pytest.raises(PlanFileError, match=r"larger than"):
            load_plan_file(fifo)
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("", "not JSON"),
        ("5", "not an hfcache plan"),
        ("null", "not an hfcache plan"),
        ("[]", "not an hfcache plan"),
        ('"x"', "not an hfcache plan"),
    ],
)
def test_unreadable_plans_stay_one_line(tmp_path, content, message):
    path = tmp_path / "plan.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PlanFileError, match=message):
        load_plan_file(str(path))
    with pytest.raises(PlanFileError, match="cannot read plan"):
        load_plan_file(str(tmp_path))  # a folder


# ---------------------------------------------------------------------------------------------
# Policy files

KINDS = ("huggingface", "torch")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keep: 2\nmax_age: 1d\nkeep: 3\n", "p.yaml:3: keep: given twice (first at line 1)"),
        (
            "caches:\n  huggingface:\n    models:\n      'org/*': {protect: true}\n  huggingface:\n    keep: 1\n",
            "p.yaml:5: caches.huggingface: given twice (first at line 2)",
        ),
        ("models:\n  'a/*': {protect: true}\n  a/*: {keep: 1}\n", "p.yaml:3: models.a/*: given twice (first at line 2)"),
        ("models:\n  'a/*':\n    keep: 1\n    keep: 2\n", "p.yaml:4: models.a/*.keep: given twice (first at line 3)"),
        (
            "caches:\n  torch:\n    models:\n      x:\n        max_age: 1d\n        max_age: 2d\n",
            "p.yaml:6: caches.torch.models.x.max_age: given twice (first at line 5)",
        ),
        ("protect: [a]\nprotect: [b]\n", "p.yaml:2: protect: given twice (first at line 1)"),
        ("max_age: 1d\nmax-age: 2d\n", "p.yaml:2: max-age: given twice (first at line 1, as max_age)"),
        # even where hfcache reads nothing (an unknown key is refused anyway, but the duplicate first)
        ("x: {a: 1, a: 2}\n", "p.yaml:1: x.a: given twice (first at line 1)"),
    ],
    ids=["top", "cache-kind", "model-glob", "in-a-model-rule", "deepest", "protect-list", "dash-and-underscore", "any"],
)
def test_duplicate_keys_at_any_level_name_file_line_and_key(text, message):
    """A second ``caches.huggingface`` block used to replace the first, dropping its ``protect: true``."""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "p.yaml", kinds=KINDS)
    assert str(e.value) == message


def prune_with(policy_file: str, tmp_path):
    result = run_cli("prune", "--config", policy_file, "--cache-dir", str(tmp_path / "hub"), "--dry-run")
    return result.exit_code, result.stderr


def test_duplicate_keys_end_to_end(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("caches:\n  huggingface:\n    models:\n      'org/*': {protect: true}\n  huggingface:\n    keep: 1\n")
    code, err = prune_with(str(f), tmp_path)
    assert_one_line_exit_2(code, err, f"{f}:5: caches.huggingface: given twice")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("keep: " + "[" * 20_000 + "]" * 20_000 + "\n", 1),
        ("models: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", 1),
        ("".join(" " * i + "a:\n" for i in range(200)) + " " * 200 + "b: 1\n", 32),
    ],
    ids=["flow-list", "flow-mapping", "block"],
)
def test_deep_nesting_in_a_policy_is_refused(text, line):
    """Was RecursionError from the YAML composer: exit 70."""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "p.yaml", kinds=KINDS)
    assert str(e.value) == f"p.yaml:{line}: nested more than 32 levels deep: not a policy file"


def test_deep_nesting_end_to_end(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("keep: " + "[" * 20_000 + "]" * 20_000 + "\n")
    code, err = prune_with(str(f), tmp_path)
    assert_one_line_exit_2(code, err, "nested more than 32 levels deep")


def test_an_oversized_policy_file_is_refused(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("keep: 1\n" + "# padding\n" * (config.MAX_POLICY_BYTES // 10))
    with pytest.raises(ConfigError, match=r"larger than 1 MiB: not a policy file"):
        load_config(str(f), kinds=KINDS)
    code, err = prune_with(str(f), tmp_path)
    assert_one_line_exit_2(code, err, "larger than 1 MiB")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_age: .nan\n", "p.yaml:1: max_age: invalid duration '.nan'"),
        ("max_age: .inf\n", "p.yaml:1: max_age: invalid duration '.inf'"),
        ("max_age: -1d\n", "p.yaml:1: max_age: invalid duration '-1d'"),
        ("junk: true\njunk_grace: -.inf\n", "p.yaml:2: junk_grace: invalid duration '-.inf'"),
        ("max_size: .inf\n", "p.yaml:1: max_size: invalid size '.inf'"),
        ("max_size: -1GB\n", "p.yaml:1: max_size: invalid size '-1GB'"),
        ("min_free: .nan%\n", "p.yaml:1: min_free: invalid free-space target '.nan%'"),
        ("keep: -1\n", "p.yaml:1: keep: expected a whole number, got '-1'"),
        ("keep: .inf\n", "p.yaml:1: keep: expected a whole number, got '.inf'"),
        # were OverflowError / ValueError: exit 70
        (
            "max_age: " + "9" * 400 + "d\n",
            "p.yaml:1: max_age: invalid duration '" + "9" * 37 + "...': longer than 10,000 years",
        ),
        ("keep: ²\n", "p.yaml:1: keep: expected a whole number, got '²'"),
        ("keep: " + "9" * 5000 + "\n", "p.yaml:1: keep: keep must be at most"),
        ("max_size: " + "9" * 5000 + "\n", "p.yaml:1: max_size: max_size must be at most"),
        ("min_free: " + "9" * 30 + "\n", "p.yaml:1: min_free: min_free must be at most"),
    ],
)
def test_non_finite_negative_and_absurd_values_in_a_policy(text, message):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "p.yaml", kinds=KINDS)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(max_age=math.nan), "max_age must be longer than 0s"),
        (Settings(max_age=math.inf), "max_age must be finite"),
        (Settings(max_age=10**400), "max_age must be finite"),
        (Settings(junk_grace=-1.0), "junk_grace must be 0s or longer"),
        (Settings(junk_grace=math.nan), "junk_grace must be 0s or longer"),
        (Settings(junk_grace=math.inf), "junk_grace must be finite"),
        (Settings(max_size=-1), "max_size must be 0 or more"),
        (Settings(min_free=MinFree(bytes=-1)), "min_free must be 0 or more"),
        (Settings(min_free=MinFree(percent=math.nan)), "min_free must be a percentage between 0 and 100"),
    ],
)
def test_validate_fills_the_library_gaps(settings, message):
    """The command line and files cannot spell these, but the library API can: validate() says no."""
    with pytest.raises(UsageError, match=message):
        validate(settings)


# ---------------------------------------------------------------------------------------------
# Policy locations that exist but cannot be read or searched

# Run hfcache with the system policy moved to argv[1]; the rest of argv is the command line.
_HFCACHE = (
    "import sys, hfcache.plan.settings as c; c.SYSTEM_CONFIG = sys.argv[1]; "
    "sys.argv = ['hfcache', *sys.argv[2:]]; from hfcache.cli import main; main()"
)
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _without_dac_override() -> None:  # pragma: no cover - runs in the child, before exec
    """As root, give up what lets root read and search anything (the interpreter may live under /root,
    so switching to nobody would not even start Python). Root then meets permissions like anyone else."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _lock_out(path: str) -> None:
    """Make ``path`` unreadable and unsearchable to the child: owned by nobody 0700 for root, 000 for a user."""
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        os.chmod(path, 0o700)
    else:
        os.chmod(path, 0o000)


@pytest.fixture
def world():
    """A folder everyone can enter (pytest's tmp_path is root's 0700), removed afterwards."""
    top = tempfile.mkdtemp(prefix="hfcache-perm-")
    os.chmod(top, 0o755)
    yield top
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chmod(os.path.join(folder, name), 0o700, follow_symlinks=False)
    shutil.rmtree(top)


def run_locked_out(world: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": f"{world}/home", "XDG_CONFIG_HOME": f"{world}/home/.config"}
    return subprocess.run(
        [sys.executable, "-c", _HFCACHE, f"{world}/etc/hfcache/config.yaml", *args],
        env=env,
        preexec_fn=_without_dac_override,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _policy(path: str, text: str = "protect: ['org/*']\nkeep: 1\n") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


PRUNE = ("prune", "--keep", "1", "--dry-run", "--cache-dir")


@pytest.mark.parametrize(
    ("locked", "message"),
    [
        ("etc/hfcache", "cannot look for a policy file at {world}/etc/hfcache/config.yaml: Permission denied"),
        ("home/.config/hfcache", "cannot look for a policy file at {world}/home/.config/hfcache/config.yaml: Permission denied"),
        ("etc/hfcache/config.yaml", "cannot read policy file {world}/etc/hfcache/config.yaml: Permission denied"),
    ],
    ids=["system-folder-not-searchable", "user-folder-not-searchable", "system-file-mode-000"],
)
def test_a_policy_location_that_cannot_be_read_is_exit_2_never_skipped(world, locked, message):
    """/etc/hfcache root-only made the system policy, and its protections, silently disappear."""
    _policy(f"{world}/etc/hfcache/config.yaml")
    if locked.startswith("home"):
        _policy(f"{world}/home/.config/hfcache/config.yaml")
    os.makedirs(f"{world}/hub")
    _lock_out(f"{world}/{locked}")
    result = run_locked_out(world, *PRUNE, f"{world}/hub")
    assert result.returncode == 2, result.stderr
    line = f"error: {message.format(world=world)}"
    if not locked.endswith(".yaml"):
        line += "; use --config FILE or --no-config to run without it"
    assert line in result.stderr.splitlines() and "Traceback" not in result.stderr
    assert result.stdout == ""
    # --no-config is the way out: only the command line counts
    result = run_locked_out(world, *PRUNE, f"{world}/hub", "--no-config")
    assert "policy file" not in result.stderr and "command line: keep=1" in result.stdout, result.stderr


def test_the_child_really_cannot_search(world):
    """The permission tests above mean something only if the child is refused (as root: no DAC override)."""
    os.makedirs(f"{world}/etc/hfcache")
    _lock_out(f"{world}/etc/hfcache")
    probe = "import os, sys; os.listdir(sys.argv[1])"
    result = subprocess.run(
        [sys.executable, "-c", probe, f"{world}/etc/hfcache"], preexec_fn=_without_dac_override, capture_output=True, text=True
    )
    assert "PermissionError" in result.stderr


def test_a_policy_location_that_is_not_a_file_is_refused(tmp_path, monkeypatch):
    """A folder (or a fifo) where the policy file belongs was skipped as "no policy"."""
    system = tmp_path / "etc" / "hfcache" / "config.yaml"
    system.mkdir(parents=True)
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(system))
    with pytest.raises(ConfigError, match=rf"^policy file {system} is not a regular file$"):
        find_config(None, env={})
    with pytest.raises(ConfigError, match=rf"^policy file {system} is not a regular file$"):
        find_config(str(system), env={})
    system.rmdir()
    os.mkfifo(system)
    with pytest.raises(ConfigError, match="is not a regular file"):
        find_config(None, env={})
    os.unlink(system)
    os.symlink("gone.yaml", system)
    with pytest.raises(ConfigError, match=rf"^policy file {system} is a symbolic link to nothing$"):
        find_config(None, env={})
    os.unlink(system)
    assert find_config(None, env={}) is None  # absent is fine: no policy file
    system.parent.rmdir()
    system.parent.parent.joinpath("hfcache").write_text("")  # a file where the folder belongs: nothing there
    assert find_config(None, env={}) is None


@pytest.mark.parametrize("option", ["--max-age", "--lock-wait"])
def test_a_duration_of_hundreds_of_digits_on_the_command_line_is_exit_2(tmp_path, option):
    """Was an OverflowError (exit 70) once the duration met a float; the policy file already refused it."""
    huge = "9" * 400 + "d"
    result = run_cli("prune", "--cache-dir", str(tmp_path), "--keep", "1", option, huge, "--dry-run")
    assert result.exit_code == 2, result.output
    assert "longer than 10,000 years" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
