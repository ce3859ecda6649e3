"""Keras (``keras.utils.get_file``): weights in ``models/``, data in ``datasets/``.

Layout reference: ``CACHE-LAYOUTS.md`` section 5::

    <root>/keras.json                               user config (never an item, never deleted)
    <root>/models/resnet50_weights_tf_..._notop.h5  one file per download
    <root>/datasets/mnist.npz
    <root>/datasets/foo.tar.gz + foo_extracted/     Keras 3, extract=True, fname with a "."
    <root>/datasets/flowers.tgz_archive + flowers.tgz/   Keras 3, extract=True, no fname / fname without "."
    <root>/datasets/bar.tar.gz + bar/               Keras 2, untar=True

An archive and its extraction folder are one unit. Items group the files whose names are
equal once their version token is removed (``..._no_top.h5`` and ``..._no_top_v2.h5``).
Keras takes no locks and writes straight to the final name, so a killed download looks like
a finished file.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import defaultdict
from collections.abc import Mapping

from hfcache.caches._common import (
    FunctionKind,
    Unit,
    build_item,
    env_path,
    expanduser,
    inventory,
    is_dir,
    list_dir,
    names_in,
    open_and_scan,
    unknown_item,
    url_file_name,
)
from hfcache.caches.protocol import Fetched, Wanted
from hfcache.caches.versions import group_versions, split_extension
from hfcache.model import CacheInventory, Item, ScanWarning

KIND = "keras"
TITLE = "Keras cache"
SUBDIRS = {"models": "model", "datasets": "dataset"}
CONFIG = "keras.json"
# Where Keras 3 and tf-keras fall back when the home folder is not writable (a literal "/tmp").
TMP_FALLBACK = "/tmp/.keras"


def default_root(env: Mapping[str, str]) -> str:
    """Keras 3's ``keras_home()``: ``$KERAS_HOME``, else ``~/.keras``.

    >>> default_root({"HOME": "/home/me"}), default_root({"HOME": "/home/me", "KERAS_HOME": "~/k"})
    ('/home/me/.keras', '/home/me/k')
    """
    return os.path.abspath(expanduser(env_path(env, "KERAS_HOME") or "~/.keras", env))


def default_roots(env: Mapping[str, str], tmp_fallback: str | None = None) -> list[str]:
    """Keras 3's root, then ``~/.keras`` when ``KERAS_HOME`` moved it (tf-keras always downloads
    there), then the ``/tmp/.keras`` fallback; the last two only when they exist."""
    roots = [default_root(env)]
    for extra in (os.path.abspath(expanduser("~/.keras", env)), tmp_fallback or TMP_FALLBACK):
        if extra not in roots and os.path.isdir(extra):
            roots.append(extra)
    return roots


def _units(folder: str, entries: list[os.DirEntry[str]]) -> tuple[list[tuple[str, Unit]], list[str]]:
    """Pair archives with their extraction folders; return ``(name, unit)`` pairs and the lone folders."""
    files = {e.name: e for e in entries if not is_dir(e)}
    dirs = {e.name: e for e in entries if is_dir(e)}
    paired: set[str] = set()
    units: list[tuple[str, Unit]] = []
    displays = {name: name.removesuffix("_archive") for name in files}
    versions = group_versions(list(displays.values()))
    for name, entry in files.items():
        partner = None
        if name.endswith("_archive") and name[: -len("_archive")] in dirs:
            partner = name[: -len("_archive")]  # Keras 3: <name>_archive + <name>/
        elif "." in name and name[: name.find(".")] + "_extracted" in dirs:
            partner = name[: name.find(".")] + "_extracted"  # Keras 3: <stem>.<ext> + <stem>_extracted/
        elif name.endswith(".tar.gz") and name[: -len(".tar.gz")] in dirs:
            partner = name[: -len(".tar.gz")]  # Keras 2 untar: <name>.tar.gz + <name>/
        paths: tuple[str, ...] = (entry.path,)
        if partner is not None and partner not in paired:
            paired.add(partner)
            paths = (entry.path, dirs[partner].path)
        # Items group names equal once a version token is gone: x_no_top.h5 and x_no_top_v2.h5.
        display = displays[name]
        group, version = versions[display]
        unit = Unit(name, paths, version=version)
        units.append((display if group is None else group + split_extension(display)[1], unit))
    lone = [e.path for n, e in dirs.items() if n not in paired]
    return units, lone


def looks_like_cache(root: str) -> bool:
    names = names_in(root)
    return CONFIG in names or any(os.path.isdir(os.path.join(root, s)) for s in SUBDIRS)


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one Keras folder (``~/.keras``). Never writes, never opens a file.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no keras.json, models/ or datasets/"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    seen: set[tuple[int, int]] = set()
    items: list[Item] = []
    for entry in entries:
        if entry.name == CONFIG:
            continue
        item_type = SUBDIRS.get(entry.name)
        if item_type is None or not is_dir(entry):
            warnings.append(ScanWarning(entry.path, "not written by keras.utils.get_file, left alone", blocks_deletion=False))
            continue
        units, lone = _units(entry.path, list_dir(entry.path, warnings))
        groups: dict[str, list[Unit]] = defaultdict(list)
        for group, unit in units:
            groups[group].append(unit)
        for group, members in sorted(groups.items()):
            path = members[0].paths[0] if len(members) == 1 else entry.path
            items.append(build_item(KIND, group, item_type, path, members, seen))
        for path in lone:
            items.append(unknown_item(KIND, path, real, seen, "folder without its archive"))
    protected = (os.path.join(real, CONFIG), *(os.path.join(real, s) for s in SUBDIRS))
    return inventory(KIND, TITLE, real, items, warnings, protected)


def fetch_file(root: str, wanted: Wanted) -> Fetched:
    """``hfcache sync`` of a Keras download: ``keras.utils.get_file`` into ``models/`` (``type: dataset``:
    ``datasets/``) of this Keras folder, as Keras stores it (a sha256 given as ``revision`` is checked by Keras)."""
    name = url_file_name(wanted, "a keras entry needs the file's url")
    subdir = next((folder for folder, kind in SUBDIRS.items() if kind == (wanted.type or "model")), None)
    if subdir is None:
        raise ValueError(f"type {wanted.type!r}: a Keras download is a model or a dataset")
    dst = os.path.join(root, subdir, name)
    if os.path.isfile(dst):
        return Fetched(name, dst, 0, 0)
    try:
        import keras  # type: ignore[import-not-found,import-untyped,unused-ignore]  # (optional: the integration extra)
    except ImportError:
        raise RuntimeError("keras is not installed here: its files are fetched by keras itself") from None
    with contextlib.redirect_stdout(sys.stderr):  # Keras prints its download to stdout: never into hfcache's output
        got = keras.utils.get_file(fname=name, origin=wanted.url, cache_dir=root, cache_subdir=subdir, file_hash=wanted.revision)
    return Fetched(name, str(got), 1, os.path.getsize(got))


KERAS = FunctionKind(
    KIND,
    TITLE,
    ("model", "dataset", "unknown"),
    default_roots,
    looks_like_cache,
    scan,
    shapes=(rf"(?:{'|'.join(SUBDIRS)})/[^/]+",),  # a download, an archive's extraction folder
    download=fetch_file,  # hfcache sync: keras's own get_file
)
