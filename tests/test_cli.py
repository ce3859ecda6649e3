"""``hfcache scan`` end to end: options, output streams, JSON contract, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

import hfcache
from hfcache.caches.scan import scan_caches
from hfcache.plan.query import Selection, select, shown_bytes
from tests.support import run_cli, small_cache
from tests.trees import commit, repo, write

C1, C2, C3 = commit(1), commit(2), commit(3)


@pytest.fixture
def hub_root(tmp_path) -> str:
    """Three repos of known sizes and ages."""
    root = str(tmp_path / "hub")
    now = time.time()
    big = repo(
        root,
        "models--meta-llama--Llama-3",
        snapshots={C1: {"model.bin": "w1", "config.json": "c1"}, C2: {"model.bin": "w1", "config.json": "c2"}},
        blobs={"w1": 3_000_000_000 // 1000, "c1": 100, "c2": 200},
        refs={"main": C2, "v1.0": C1},
    )
    small = repo(root, "models--org--tiny", snapshots={C3: {"m.bin": "t"}}, blobs={"t": 1000}, refs={"main": C3})
    data = repo(root, "datasets--org--data", snapshots={C1: {"d.csv": "d"}}, blobs={"d": 50_000}, refs={"main": C1})
    for folder, age_days in ((big, 1), (small, 40), (data, 10)):
        for name in os.listdir(os.path.join(folder, "blobs")):
            t = now - age_days * 86400
            os.utime(os.path.join(folder, "blobs", name), (t, t))
    write(os.path.join(root, ".locks", "models--org--tiny", "t.lock"))
    return root


def test_table_lists_repos_and_totals(hub_root):
    result = run_cli("scan", "--cache-dir", hub_root)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Hugging Face hub cache: {hub_root}" in out
    for ident in ("meta-llama/Llama-3", "org/tiny", "org/data"):
        assert ident in out
    assert "3 repos, 4 revisions" in out
    assert "main, v1.0" in out
    assert "3.0 MB" in out  # 3,000,300 bytes, humanized
    assert "cache total 3.1 MB" in out  # plus 1,000 and 50,000
    assert "a month ago" in out  # org/tiny, 40 days
    assert result.stderr == ""


def test_revisions_view(hub_root):
    result = run_cli("scan", "--cache-dir", hub_root, "--revisions")
    assert result.exit_code == 0
    # Commits shortened as hf cache ls and git show them (the full ones are in --json and --format ids)
    assert C1[:12] in result.stdout and C2[:12] in result.stdout and "RECLAIMABLE" in result.stdout
    assert C1 not in result.stdout


def test_json_contract_version_1(hub_root):
    result = run_cli("scan", "--cache-dir", hub_root, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["version"] == 1
    (c,) = doc["caches"]
    assert {"kind", "root", "size_bytes", "items", "warnings"} <= c.keys()
    assert c["kind"] == "huggingface" and c["root"] == hub_root and c["warnings"] == []
    assert c["size_bytes"] == 3_000_000 + 300 + 1000 + 50_000
    item = next(i for i in c["items"] if i["id"] == "meta-llama/Llama-3")
    assert {"id", "type", "path", "size_bytes", "last_accessed", "last_modified", "revisions"} <= item.keys()
    assert item["type"] == "model" and item["size_bytes"] == 3_000_300
    assert item["last_accessed"].endswith("Z") and "T" in item["last_accessed"]
    rev = next(r for r in item["revisions"] if r["revision"] == C1)
    assert {"revision", "refs", "size_bytes", "reclaimable_bytes", "path", "last_accessed", "last_modified"} <= rev.keys()
    assert rev["refs"] == ["v1.0"] and rev["size_bytes"] == 3_000_100 and rev["reclaimable_bytes"] == 100
    again = json.loads(run_cli("scan", "--cache-dir", hub_root, "--format", "json").stdout)
    assert again["caches"] == doc["caches"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--type", "dataset"], {"org/data"}),
        (["--type", "model", "--type", "dataset"], {"org/data", "org/tiny", "meta-llama/Llama-3"}),
        (["--name", "META-LLAMA/*"], {"meta-llama/Llama-3"}),
        (["--name", "org/*", "--name", "*llama*"], {"org/data", "org/tiny", "meta-llama/Llama-3"}),
        (["--larger-than", "1MB"], {"meta-llama/Llama-3"}),
        (["--larger-than", "1000"], {"org/data", "meta-llama/Llama-3"}),  # strictly larger
        (["--smaller-than", "48.9KiB"], {"org/tiny", "org/data"}),  # 48.9 KiB = 50073.6 bytes > 50000
        (["--smaller-than", "48.8KiB"], {"org/tiny"}),  # 48.8 KiB = 49971.2 bytes < 50000
        (["--smaller-than", "0.05MB"], {"org/tiny"}),  # exactly 50000 is not smaller
        (["--older-than", "30d"], {"org/tiny"}),
        (["--older-than", "5d", "--newer-than", "2w"], {"org/data"}),
        (["--newer-than", "2d"], {"meta-llama/Llama-3"}),
    ],
)
def test_selection(hub_root, args, expected):
    result = run_cli("scan", "--cache-dir", hub_root, "--json", *args)
    assert result.exit_code == 0, result.output
    assert {i["id"] for i in json.loads(result.stdout)["caches"][0]["items"]} == expected


def test_selection_of_revisions(hub_root):
    result = run_cli(
        "scan", "--cache-dir", hub_root, "--json", "--revisions", "--name", "meta-llama/*", "--smaller-than", "3000150"
    )
    (item,) = json.loads(result.stdout)["caches"][0]["items"]
    assert [r["revision"] for r in item["revisions"]] == [C1]


@pytest.mark.parametrize(
    ("sort", "first"),
    [
        ("size", "meta-llama/Llama-3"),
        ("size:asc", "org/tiny"),
        ("name", "meta-llama/Llama-3"),
        ("name:desc", "org/tiny"),
        ("accessed", "meta-llama/Llama-3"),
        ("accessed:asc", "org/tiny"),
    ],
)
def test_sort(hub_root, sort, first):
    doc = json.loads(run_cli("scan", "--cache-dir", hub_root, "--json", "--sort", sort).stdout)
    assert doc["caches"][0]["items"][0]["id"] == first


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--larger-than", "5XB"], "invalid size '5XB'"),
        (["--older-than", "30"], "invalid duration '30'"),
        (["--sort", "colour"], "invalid sort 'colour'"),
    ],
)
def test_bad_values_are_usage_errors(hub_root, args, fragment):
    result = run_cli("scan", "--cache-dir", hub_root, *args)
    assert result.exit_code == 2
    assert fragment in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


def test_bad_choice_is_a_usage_error(hub_root):
    result = run_cli("scan", "--cache-dir", hub_root, "--type", "banana")
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["scan", "--cache-dir", "{root}", "--kind", "nope"], "known: huggingface, torch"),  # hfcache's own check
        (["prune", "--cache-dir", "{root}", "--keep", "x"], "Invalid value for '--keep'"),  # Typer's parsing
        (["prune", "--cache-dir", "{root}", "--keep", "1", "--keep-per", "x"], "'x' is not one of 'major', 'minor'"),
        (["scan", "--format", "yaml"], "'yaml' is not one of 'table', 'json', 'markdown'"),
        (["scan", "--bogus"], "No such option: --bogus"),
        (["apply"], "Missing argument 'FILE'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_every_usage_error_is_one_line_with_exit_2(hub_root, args, fragment):
    """Typer's errors as hfcache's own: one line on stderr, the valid values where there are some, exit 2, no box."""
    result = run_cli(*(a.replace("{root}", hub_root) for a in args))
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and fragment in line, line
    assert not set("╭│╰─") & set(result.stderr)


def test_help_shows_no_type_placeholders():
    """A flag takes no value and an argument's name says what it is: no <bool>, <int> or <str>; choices stay."""
    for command in ([], ["scan"], ["prune"], ["apply"], ["metrics"]):
        text = run_cli(*command, "--help", env={"COLUMNS": "160"}).stdout
        assert not re.search(r"<(bool|int|str|float|text)>", text), (command, text)
    assert "<major|minor>" in run_cli("prune", "--help", env={"COLUMNS": "160"}).stdout


def test_missing_default_cache_is_friendly(isolated_home):
    result = run_cli("scan")
    assert result.exit_code == 0
    expected_root = os.path.join(isolated_home, ".cache", "huggingface", "hub")
    assert "nothing cached" in result.stderr and expected_root in result.stderr
    doc = json.loads(run_cli("scan", "--json").stdout)
    assert doc["caches"][0]["items"] == []
    assert doc["caches"][0]["exists"] is False and doc["caches"][0]["root"] == expected_root


def test_default_root_follows_the_environment(hub_root, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", hub_root)
    doc = json.loads(run_cli("scan", "--json").stdout)
    assert doc["caches"][0]["root"] == hub_root and len(doc["caches"][0]["items"]) == 3


@pytest.mark.parametrize(
    ("setup", "code", "fragment"),
    [
        ("missing", 3, "cache directory not found"),
        ("file", 5, "is not a directory"),
        ("home", 6, "not a Hugging Face hub cache"),
    ],
)
def test_bad_cache_dir_exit_codes(tmp_path, setup, code, fragment):
    path = str(tmp_path / "x")
    if setup == "file":
        write(path, b"not a folder")
    elif setup == "home":
        write(os.path.join(path, "Documents", "cv.pdf"), b"%PDF")
    result = run_cli("scan", "--cache-dir", path)
    assert result.exit_code == code
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_corrupted_repo_warns_on_stderr_and_goes_on(hub_root):
    os.unlink(os.path.join(hub_root, "models--org--tiny", "blobs", "t"))  # now a broken symlink
    result = run_cli("scan", "--cache-dir", hub_root)
    assert result.exit_code == 0
    assert "warning: broken symlink" in result.stderr
    assert "org/tiny !" in result.stdout and "meta-llama/Llama-3" in result.stdout
    doc = json.loads(run_cli("scan", "--cache-dir", hub_root, "--json").stdout)
    tiny = next(i for i in doc["caches"][0]["items"] if i["id"] == "org/tiny")
    assert tiny["deletable"] is False and tiny["revisions"][0]["warnings"]
    assert any("broken symlink" in w for w in doc["caches"][0]["warnings"])
    assert run_cli("scan", "--cache-dir", hub_root, "--quiet").stderr == ""


def test_several_cache_dirs_and_duplicates(hub_root, tmp_path):
    other = str(tmp_path / "other")
    repo(other, "models--x--y", snapshots={C1: {"a": "e"}}, blobs={"e": 5}, refs={"main": C1})
    os.symlink(hub_root, str(tmp_path / "alias"))
    doc = json.loads(
        run_cli("scan", "--cache-dir", hub_root, "--cache-dir", other, "--cache-dir", str(tmp_path / "alias"), "--json").stdout
    )
    assert [c["root"] for c in doc["caches"]] == [hub_root, other]


def test_version_and_python_m():
    assert run_cli("--version").stdout.strip() == f"hfcache {hfcache.__version__}"
    done = subprocess.run([sys.executable, "-m", "hfcache", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"hfcache {hfcache.__version__}"


def test_installed_command_uses_env_and_never_tracebacks(hub_root, tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "nothing-here"))
    done = subprocess.run([sys.executable, "-m", "hfcache", "scan"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "nothing cached" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "hfcache", "scan", "--cache-dir", str(tmp_path / "nope")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 3 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_unreadable_cache_dir_exit_code():
    from pyfakefs.fake_filesystem_unittest import Patcher

    with Patcher(allow_root_user=False) as patcher:
        patcher.fs.create_file("/locked/hub/CACHEDIR.TAG")
        os.chmod("/locked/hub", 0o000)
        result = run_cli("scan", "--cache-dir", "/locked/hub")
    assert result.exit_code == 7
    assert "cannot read cache directory /locked/hub" in result.stderr and "Traceback" not in result.output


def test_ctrl_c_exits_130_without_traceback(hub_root, monkeypatch, capsys):
    import signal

    from hfcache import cli

    def interrupted_scan(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(cli.scan, "scan_caches", interrupted_scan)
    monkeypatch.setattr(sys, "argv", ["hfcache", "scan", "--cache-dir", hub_root])
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exited.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_internal_error_is_one_line_with_code_70(hub_root, monkeypatch, capsys):
    from hfcache import cli

    def broken_scan(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.scan, "scan_caches", broken_scan)
    monkeypatch.setattr(sys, "argv", ["hfcache", "scan", "--cache-dir", hub_root])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# Issue 17, point 1: totals of the rows shown, one order over all revisions, --limit, --format ids


def test_the_footer_counts_the_revisions_shown_each_blob_once(tmp_path):
    """Two repos of two revisions (1010 and 2010 bytes, sharing a 10-byte config): the footer is what the rows hold."""
    root = str(tmp_path / "hub")
    small_cache(root)
    inventory = scan_caches([root])
    everything = select(inventory, Selection(revisions=True), now=inventory.scanned_at)
    assert shown_bytes(everything.caches[0], revisions=True) == 2 * 3010  # the config once per repo, not 2 * 3020
    footer = run_cli("scan", "--cache-dir", root, "--revisions", "--larger-than", "1500", "--format", "markdown").stdout
    assert "2 repos, 2 revisions (4.0 kB shown); cache total 6.0 kB" in footer  # the new revisions: 2 * 2010
    whole = run_cli("scan", "--cache-dir", root, "--name", "org/a", "--format", "markdown").stdout
    assert "1 repo, 2 revisions (3.0 kB shown)" in whole


def test_revisions_sort_over_the_whole_cache_biggest_first(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    ids = run_cli("scan", "--cache-dir", root, "--revisions", "--sort", "size", "--format", "ids").stdout.split()
    sizes = [2010, 2010, 1010, 1010]
    assert [i.split("@")[0] for i in ids] == ["org/a", "org/b", "org/a", "org/b"]  # not org/a's two, then org/b's
    [cache] = scan_caches([root]).caches
    by_id = {f"{i.id}@{r.revision}": r.size_bytes for i in cache.items for r in i.revisions}
    assert [by_id[i] for i in ids] == sizes


def test_limit_keeps_the_first_rows_in_order_in_every_format(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    assert run_cli("scan", "--cache-dir", root, "--limit", "1", "--format", "ids").stdout == "org/a\n"
    doc = json.loads(run_cli("scan", "--cache-dir", root, "--revisions", "--sort", "size", "--limit", "3", "--json").stdout)
    assert sum(len(i["revisions"]) for i in doc["caches"][0]["items"]) == 3
    table = run_cli("scan", "--cache-dir", root, "--revisions", "--sort", "size", "--limit", "3", "--format", "markdown").stdout
    assert "2 repos, 3 revisions (5.0 kB shown)" in table  # 2010 + 2010 + 1010, the config of org/a once
    assert run_cli("scan", "--cache-dir", root, "--limit", "0").exit_code == 2


def test_ids_for_scripts_from_scan_and_prune(tmp_path):
    root = str(tmp_path / "hub")
    made = small_cache(root)
    [cache] = scan_caches([root]).caches
    revisions = {f"{i.id}@{r.revision}" for i in cache.items for r in i.revisions}
    listed = run_cli("scan", "--cache-dir", root, "--revisions", "--format", "ids").stdout.splitlines()
    assert set(listed) == revisions and len(listed) == 4
    planned = run_cli("prune", "--cache-dir", root, "--max-age", "30d", "--dry-run", "--format", "ids", "--no-config")
    assert planned.exit_code == 0
    old = {f"org/{n[-1]}@{commit(f'org--{n[-1]}-old')}" for n in made}
    assert set(planned.stdout.splitlines()) == old


@pytest.mark.parametrize("command", ["scan", "prune", "apply", "rm", "metrics"])
def test_help_paragraphs_wrap_at_the_terminal_not_at_the_source_line_breaks(command):
    """Each paragraph of a command's docstring comes out as one run of text, wrapped only by width."""
    import inspect

    from hfcache.cli import app as typer_app

    callback = next(c.callback for c in typer_app.registered_commands if (c.name or c.callback.__name__) == command)
    text = run_cli(command, "--help", env={"COLUMNS": "400"}).stdout
    lines = [line.strip() for line in text.splitlines()]
    for paragraph in inspect.cleandoc(callback.__doc__ or "").split("\n\n"):
        if not paragraph.startswith(("Example", " ", "- ")):
            assert " ".join(paragraph.split()) in lines, paragraph


def test_the_plan_header_shows_sizes_and_ages_in_their_units():
    from hfcache.plan.settings import Policy, Settings

    described = Policy(overrides=Settings(max_size=200 * 10**9, max_age=30 * 86400.0, keep=2)).describe()
    assert described == ["command line: max_age=30d, keep=2, max_size=200.0 GB"]
