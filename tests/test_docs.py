"""The documentation covers the CLI, and CI runs exactly the README's commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from hfcache.caches.registry import KINDS
from hfcache.cli import app
from hfcache.plan.settings import CACHE_KEYS, ITEM_KEYS, load_config
from tests.support import run_cli
from tests.trees import commit, repo

CHECKOUT = Path(__file__).parent.parent
README = (CHECKOUT / "README.md").read_text()
MAN = (CHECKOUT / "man" / "hfcache.1").read_text()


def _man_text() -> str:
    return MAN.replace("\\-", "-")


def _commands():
    return typer.main.get_command(app).commands


def test_every_command_and_option_is_in_the_man_page_and_readme():
    man = _man_text()
    for name, command in _commands().items():
        assert f"hfcache {name}" in man and f"hfcache {name}" in README, name
        for param in command.params:
            for opt in param.opts + param.secondary_opts:
                if opt.startswith("-") and opt not in ("--help",):
                    assert opt in man, f"{name} {opt} missing from man/hfcache.1"
    for opt in ("--version", "--install-completion", "--show-completion", "--help"):
        assert opt in man


def _setup_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    return [blocks[0].strip(), blocks[1].strip()]


def test_ci_runs_the_readme_test_command():
    install_and_run, test = _setup_commands()
    assert install_and_run == "pip install . && hfcache scan"
    ci = (CHECKOUT / ".ci" / "run").read_text()
    assert test in ci.splitlines()
    assert "set -euo pipefail" in ci and "python3 -m venv" in ci


@pytest.mark.parametrize("page", ["hfcache.1", "hfcache.yaml.5"])
def test_man_page_renders_without_warnings(page, need_tool):
    done = subprocess.run(
        [need_tool("man"), "--warnings", "-l", str(CHECKOUT / "man" / page)],
        capture_output=True,
        text=True,
        env=dict(os.environ, MANWIDTH="80"),
    )
    assert done.returncode == 0 and done.stderr == ""


def test_man_pages_are_installed_with_the_package():
    pyproject = (CHECKOUT / "pyproject.toml").read_text()
    assert '"man/hfcache.1" = "share/man/man1/hfcache.1"' in pyproject
    assert '"man/hfcache.yaml.5" = "share/man/man5/hfcache.yaml.5"' in pyproject


def test_the_policy_file_page_covers_every_key_and_its_examples_load(tmp_path):
    page = (CHECKOUT / "man" / "hfcache.yaml.5").read_text().replace("\\-", "-")
    for key in (*ITEM_KEYS, *CACHE_KEYS, "version", "protect", "models", "caches"):
        assert f".B {key}" in page or f".BR {key}:" in page or f".BI {key}:" in page, key
    examples = [b for b in re.findall(r"\n\.nf\n(.*?)\n\.fi\n", page, re.S) if b.startswith("version: 1")]
    assert len(examples) == 2
    for i, text in enumerate(examples):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(text + "\n")
        assert not load_config(str(path), kinds=tuple(KINDS)).is_empty


def test_example_reads_the_json(tmp_path):
    root = str(tmp_path / "hub")
    repo(
        root,
        "models--org--m",
        snapshots={commit(1): {"a": "e1"}, commit(2): {"a": "e2"}},
        blobs={"e1": 2_000_000, "e2": 1_000_000},
        refs={"main": commit(2)},
    )
    doc = run_cli("scan", "--cache-dir", root, "--json").stdout
    done = subprocess.run(
        [sys.executable, str(CHECKOUT / "examples" / "largest_revisions.py"), "1"],
        input=doc,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["0.002", "GB", "org/m", commit(1)[:12], "(detached)"]
    assert json.loads(doc)["version"] == 1


def test_the_readme_layout_lists_every_module_and_nothing_else():
    """The Layout section of the README against the tree: a module added, renamed or removed shows here."""
    readme = (CHECKOUT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed = set()
    folders: list[str] = []  # the package folders enclosing the current line, by depth
    for line in block.splitlines()[2:]:  # after "hfcache/"
        depth, rest = divmod(len(line) - len(line.lstrip(" ")), 2)
        names = line.strip().split("  ", 1)[0].split()
        if rest or depth == 0 or not names or not all(n.endswith((".py", "/")) for n in names):
            continue  # a description going on, or the line after the package
        del folders[depth - 1 :]
        for name in names:
            listed.add("".join(folders) + name)
        if names[-1].endswith("/"):
            folders.append(names[-1])
    package = CHECKOUT / "hfcache"
    actual = {str(p.relative_to(package)) for p in package.rglob("*.py") if p.parent == package or p.name != "__init__.py"}
    actual |= {str(p.parent.relative_to(package)) + "/" for p in package.rglob("__init__.py") if p.parent != package}
    assert listed == actual, f"in the README only: {sorted(listed - actual)}; in hfcache/ only: {sorted(actual - listed)}"


def test_every_builtin_kind_is_listed_wherever_kinds_are_enumerated():
    """The README's kind table and JSON contract, both man pages and the --kind help name every built-in kind."""
    table = README.split("| kind | what | items |", 1)[1].split("\n\n", 1)[0]
    contract = README.split("`kind` is ", 1)[1].split("\n\n", 1)[0]
    man = _man_text()
    yaml_page = (CHECKOUT / "man" / "hfcache.yaml.5").read_text().replace("\\-", "-")
    helps = run_cli("scan", "--help", env={"COLUMNS": "400"}).stdout.splitlines()
    kind_help = next(line for line in helps if "│ --kind " in line)
    for name in KINDS:
        assert f"| `{name}` |" in table, name
        assert f"`{name}`" in contract, name
        assert f".B {name}\n" in man, name  # its own paragraph in DESCRIPTION
        assert name in man.split(".BI --kind", 1)[1].split(".TP", 1)[0], name  # the --kind option's list
        assert name in yaml_page.split(".B caches", 1)[1].split(".PP", 1)[0], name
        assert name in kind_help, name
