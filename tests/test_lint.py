"""ruff's lint (with a complexity limit of 15) and format over the package and the tests, and mypy --strict over
the package, as CI runs them.

Locally: ``ruff check hfcache tests benchmarks examples && ruff format --check hfcache tests benchmarks examples && mypy``
(ruff, mypy and the stubs mypy needs come with the test extra; mypy takes its settings and its files,
``hfcache/``, from pyproject.toml). Only the Python is checked: ruff 0.17 would also format
the README's code blocks.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = ("hfcache", "tests", "benchmarks", "examples")


def _tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` at the checkout's root; without the module, skipped locally and failed under CI=true."""
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, and {module} is not installed (it comes with the test extra)")
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=CHECKOUT, capture_output=True, text=True)


def test_ruff_check_passes():
    done = _tool("ruff", "check", "--no-cache", *PYTHON)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_leaves_everything_as_it_is():
    done = _tool("ruff", "format", "--no-cache", "--check", *PYTHON)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_passes():
    # No arguments: strict, the Python version and the files (hfcache/) come from pyproject.toml's
    # [tool.mypy]. Its cache (.mypy_cache/) makes every run after the first take about a second.
    done = _tool("mypy")
    assert done.returncode == 0, done.stdout + done.stderr
