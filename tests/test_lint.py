"""ruff's lint (with a complexity limit of 15) and format over the package and the tests, as CI runs them.

Locally: ``ruff check hfcache tests benchmarks examples && ruff format --check hfcache tests benchmarks examples``
(ruff comes with the test extra). Only the Python is checked: ruff 0.17 would also format
the README's code blocks.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = ("hfcache", "tests", "benchmarks", "examples")


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        import ruff  # noqa: F401 - only to know it is installed
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true, and ruff is not installed (it comes with the test extra)")
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=CHECKOUT, capture_output=True, text=True)


def test_ruff_check_passes():
    done = _ruff("check", "--no-cache", *PYTHON)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_leaves_everything_as_it_is():
    done = _ruff("format", "--no-cache", "--check", *PYTHON)
    assert done.returncode == 0, done.stdout + done.stderr
