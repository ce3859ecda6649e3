"""The shape of the package: no module outside ``caches/`` knows a particular cache kind."""

from __future__ import annotations

import ast
from pathlib import Path

from hfcache.caches.registry import KINDS

PACKAGE = Path(__file__).resolve().parent.parent / "hfcache"
KIND_MODULES = {"hfcache.caches." + p.stem for p in (PACKAGE / "caches").glob("*.py") if not p.stem.startswith("_")} | {
    "hfcache.caches." + p.parent.name
    for p in (PACKAGE / "caches").glob("*/__init__.py")  # a kind's package
}
GENERIC = {"hfcache.caches.protocol", "hfcache.caches.registry", "hfcache.caches.scan", "hfcache.caches.deletion"}
GENERIC |= {"hfcache.caches.versions", "hfcache.caches.confine", "hfcache.caches.accounts"}  # (every kind's places, per account)


def _outside_caches() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if (PACKAGE / "caches") not in p.parents]


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_no_module_outside_caches_names_a_kind():
    """A kind's name in code (not prose) outside caches/ is knowledge that belongs to the kind's protocol."""
    found = []
    for path in _outside_caches():
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in KINDS and id(node) not in docs:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_no_module_outside_caches_imports_a_kind():
    """Only the registry knows which kinds exist; everything else goes through the protocol."""
    found = []
    for path in _outside_caches():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            else:
                continue
            bad = {n for n in names for k in KIND_MODULES - GENERIC if n == k or n.startswith(k + ".")}
            if bad:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {sorted(bad)}")
    assert found == []
