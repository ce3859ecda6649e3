"""Output for machines and people (issue 6): --format markdown, --quiet, --verbose, the progress bar, the prompt.

The terminal cases run the real command in a child process with stdin and stderr on a
pseudo-terminal, since Rich and the prompt decide by ``isatty()``.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from tests.support import (
    SLOW_CLI,
    many_repos,
    markdown_tables,
    run_cli,
    small_cache,
)


@pytest.fixture
def hub_root(tmp_path) -> str:
    root = str(tmp_path / "hub|cache")  # a | in the root, which Markdown must escape
    os.makedirs(root)
    small_cache(root)
    return root


def test_scan_as_markdown_matches_the_json(hub_root):
    md = run_cli("scan", "--cache-dir", hub_root, "--format", "markdown", "--revisions")
    data = json.loads(run_cli("scan", "--cache-dir", hub_root, "--json").stdout)
    assert md.exit_code == 0, md.output
    assert f"#### Hugging Face hub cache: {hub_root.replace('|', chr(92) + '|')}" in md.stdout
    [table] = markdown_tables(md.stdout)
    header, *rows = table
    assert header[:4] == ["ID", "REVISION", "VERSION", "SIZE"]
    revisions = sorted((i["id"], r["revision"][:12]) for c in data["caches"] for i in c["items"] for r in i["revisions"])
    assert sorted((r[0], r[1][:12]) for r in rows) == revisions
    assert "2 repos, 4 revisions" in md.stdout


def test_prune_as_markdown_lists_the_plan_and_then_the_outcome(hub_root):
    planned = json.loads(run_cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--dry-run", "--json").stdout)
    md = run_cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--dry-run", "--format", "markdown")
    assert md.exit_code == 0, md.output
    [table] = markdown_tables(md.stdout)
    assert table[0] == ["KIND", "ID", "REVISION", "FREES", "WHY"]
    assert sorted(r[1] for r in table[1:]) == sorted(u["id"] for u in planned["delete"])
    assert all(r[4].startswith("max-age: not accessed for 60d") for r in table[1:])

    ran = run_cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--yes", "--format", "markdown")
    assert ran.exit_code == 0, ran.output
    [table] = markdown_tables(ran.stdout)
    assert table[0] == ["KIND", "ID", "REVISION", "STATUS", "FREED", "WHY"]
    assert [r[3] for r in table[1:]] == ["deleted", "deleted"]
    assert "Freed 2.0 kB of 2.0 kB planned (2 units: 2 deleted)." in ran.stdout


def test_apply_takes_the_same_formats(hub_root, tmp_path):
    plan = str(tmp_path / "plan.json")
    assert run_cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--dry-run", "--plan-out", plan, "-q").exit_code == 0
    md = run_cli("apply", plan, "--dry-run", "--format", "markdown")
    assert len(markdown_tables(md.stdout)[0]) == 3
    as_json = run_cli("apply", plan, "--dry-run", "--format", "json")
    assert json.loads(as_json.stdout)["delete"] == json.loads(open(plan).read())["delete"]


def test_verbose_logs_each_cache_and_unit_to_stderr_and_quiet_says_nothing(hub_root):
    quiet = run_cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--dry-run", "--json", "--quiet")
    assert quiet.stderr == ""
    json.loads(quiet.stdout)

    plain = run_cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--yes", "--json")
    assert " INFO " not in plain.stderr


def test_verbose_levels(tmp_path):
    for level, expected, absent in (("-v", " INFO ", " DEBUG "), ("-vv", " DEBUG ", None)):
        root = str(tmp_path / level)
        os.makedirs(root)
        small_cache(root)
        result = run_cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json", level)
        assert result.exit_code == 0, result.output
        json.loads(result.stdout)  # logging never mixes into the data on stdout
        log = result.stderr
        assert re.search(
            rf"INFO hfcache.caches.scan: huggingface: scanned {re.escape(root)} in [\d.]+s: 2 items, 4 revisions", log
        )
        deleted = [line for line in log.splitlines() if "INFO hfcache.execute.run: deleted revision" in line]
        assert len(deleted) == 2 and all("max-age" in line and "1000 bytes freed" in line for line in deleted)
        assert expected in log
        if absent:
            assert absent not in log
        else:
            assert re.search(
                r"DEBUG hfcache\.caches\.huggingface\.delete: remove \S+/blobs/org--a-e1: done, 1000 bytes freed", log
            )


# ---------------------------------------------------------------------------------------------
# On a terminal


def on_a_terminal(args: list[str], *, answer: bytes = b"", code: str | None = None, timeout: float = 60):
    """Run the command with stdin and stderr on a pseudo-terminal; returns (exit code, stdout, terminal text)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "hfcache", *args]
    proc = subprocess.Popen(command, stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    if answer:
        os.write(master, answer)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            seen += data
        elif proc.poll() is not None:
            break
    os.close(master)
    out = proc.stdout.read().decode()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    return proc.wait(timeout=timeout), out, seen.decode(errors="replace")


def test_a_progress_bar_on_a_terminal_only_and_not_with_quiet(tmp_path):
    root = str(tmp_path / "hub")
    policy = many_repos(root, 30)
    # Each removal slowed to 4 ms (about 30 ms a revision), so the bar is drawn while the plan executes.
    code, out, terminal = on_a_terminal(["0.004", "prune", "--cache-dir", root, "--config", policy, "--yes"], code=SLOW_CLI)
    assert code == 0, terminal
    assert f"scanning {root}" in terminal
    assert re.search(r"deleting .*\d+/\d+", terminal), terminal
    assert "Deleted:" in out and "scanning" not in out

    code, out, terminal = on_a_terminal(["scan", "--cache-dir", root, "--quiet"])
    assert code == 0 and "scanning" not in terminal and "org/new-1" in out

    # Off a terminal (run_cli's stderr is a buffer): no bar at all.
    assert "scanning" not in run_cli("scan", "--cache-dir", root).stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_the_progress_bar_counts_what_forked_workers_scan(tmp_path):
    root = str(tmp_path / "hub")
    many_repos(root, 40)
    code, out, terminal = on_a_terminal(["scan", "--cache-dir", root, "--jobs", "2", "-vv"])
    assert code == 0, terminal
    plain = re.sub(r"\s+", " ", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal))  # no colours, no line wraps
    assert f"scanning {root}: 40 inputs, 2 worker processes" in plain, plain
    assert re.search(r"━ 40/40", plain), plain  # the bar reached the end: every repo counted once
    assert "org/new-39" in out and "org/old-0" in out


@pytest.mark.parametrize(("answer", "deleted"), [(b"y\n", True), (b"n\n", False), (b"\n", False)])
def test_prune_asks_on_a_terminal_and_does_only_what_it_is_told(hub_root, answer, deleted):
    going = json.loads(run_cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--dry-run", "--json").stdout)["delete"]
    code, out, terminal = on_a_terminal(["prune", "--cache-dir", hub_root, "--max-age", "30d"], answer=answer)
    assert code == 0, terminal
    assert "Would delete:" in out and "Delete these 2 units? [y/N]" in out
    # Right above the question: what it would do per cache, then the total (not thousands of kept units).
    before = [line.strip() for line in out.split("Delete these")[0].strip().splitlines()][-2:]
    assert before == [f"huggingface {hub_root}: 2 units to delete, 2.0 kB (max-age 2)", "Would free 2.0 kB (2 units)."]
    assert all(os.path.exists(u["path"]) != deleted for u in going)
    if deleted:
        assert "Deleted:" in out and "Freed 2.0 kB" in out
    else:
        assert "Nothing deleted." in terminal


# ---------------------------------------------------------------------------------------------
# Shell completion, as the README installs it


# The installed command (pip puts it beside the interpreter): completion keys on its name.
HFCACHE = os.path.join(os.path.dirname(sys.executable), "hfcache")


def completion(**env: str) -> str:
    return subprocess.run([HFCACHE], env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout


def test_bash_completion_from_the_installed_script(tmp_path, need_tool):
    need_tool("bash")
    script = tmp_path / "hfcache.bash"
    script.write_text(completion(_HFCACHE_COMPLETE="source_bash"))
    probe = f"""
source {script}
complete -p hfcache
for line in "hfcache pr" "hfcache scan --ki" "hfcache scan --kind t" "hfcache scan --format m"; do
  read -r -a COMP_WORDS <<< "$line"
  [[ "$line" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
  _hfcache_completion hfcache
  echo "$line => ${{COMPREPLY[*]}}"
done
"""
    env = {**os.environ, "PATH": f"{os.path.dirname(HFCACHE)}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert "-F _hfcache_completion hfcache" in out
    assert "hfcache pr => prune" in out
    assert "hfcache scan --ki => --kind" in out
    assert "hfcache scan --kind t => torch tfhub transformers-legacy" in out
    assert "hfcache scan --format m => markdown" in out


def test_zsh_and_fish_scripts_and_their_answers():
    zsh = completion(_HFCACHE_COMPLETE="source_zsh")
    assert zsh.startswith("\n#compdef hfcache") or zsh.lstrip().startswith("#compdef hfcache")
    assert "_HFCACHE_COMPLETE=complete_zsh" in zsh
    answer = completion(_HFCACHE_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="hfcache scan --kind k")
    assert "kagglehub" in answer and "keras" in answer and "torch" not in answer

    fish = completion(_HFCACHE_COMPLETE="source_fish")
    assert fish.startswith("complete --command hfcache")
    answer = completion(
        _HFCACHE_COMPLETE="complete_fish",
        _TYPER_COMPLETE_FISH_ACTION="get-args",
        _TYPER_COMPLETE_ARGS="hfcache prune --keep-per ",
    )
    assert answer.split() == ["major", "minor"]


@pytest.mark.parametrize(
    "args",
    [["scan"], ["scan", "--json"], ["scan", "--revisions", "--format", "markdown"], ["prune", "--dry-run", "--keep", "1"]],
    ids=["table", "json", "markdown", "plan"],
)
def test_a_reader_that_leaves_ends_the_output_quietly_with_the_commands_own_code(tmp_path, args):
    """``hfcache scan | head``: no error, no traceback, exit 0 (more output than a pipe holds, so the write meets it)."""
    root = str(tmp_path / "hub")
    many_repos(root, 300)
    env = {**os.environ, "COLUMNS": "80"}
    cmd = [sys.executable, "-m", "hfcache", *args, "--cache-dir", root, *(["--no-config"] if args[0] == "prune" else [])]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.read(200)  # a reader that takes a little and goes
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert first
    assert (code, err) == (0, "")


def test_kept_units_are_counted_and_listed_only_when_asked(hub_root):
    """Kept units are most of a real plan: counted by default, listed (with the rule that keeps each) under --show-kept."""
    args = ["prune", "--cache-dir", hub_root, "--keep", "1", "--dry-run", "--format", "markdown", "--no-config"]
    plan = json.loads(run_cli(*args[:-3], "--json", "--no-config").stdout)
    kept = [u for u in plan["keep"]]
    assert kept  # the newest revision of each model
    default = run_cli(*args).stdout
    assert "Kept" not in default and f"{len(kept)} kept by a rule (--show-kept lists them)" in default
    listed = run_cli(*args, "--show-kept").stdout
    assert "#### Kept, and the rule that keeps each:" in listed
    assert all(u["reasons"][0] in listed for u in kept)
    assert listed.index("Kept, and the rule") < listed.index("units to delete")  # the summary comes last


def test_a_run_says_per_cache_what_happened(hub_root):
    result = run_cli("prune", "--cache-dir", hub_root, "--max-age", "30d", "--yes", "--no-config")
    assert result.exit_code == 0
    assert f"huggingface {hub_root}: 2 deleted, 2.0 kB freed (max-age 2)\n" in result.stdout


def test_off_a_terminal_a_table_cuts_and_wraps_nothing(hub_root):
    """Cron mail and CI logs: each row whole on one line, whatever its length (a reason is a long sentence)."""
    plan = json.loads(run_cli("prune", "--cache-dir", hub_root, "--keep", "1", "--dry-run", "--json", "--no-config").stdout)
    table = run_cli("prune", "--cache-dir", hub_root, "--keep", "1", "--dry-run", "--no-config", env={"COLUMNS": "60"}).stdout
    for unit in plan["delete"]:
        [row] = [line for line in table.splitlines() if unit["revision"][:12] in line]
        assert row.endswith(unit["reasons"][0]) and len(row) > 60
