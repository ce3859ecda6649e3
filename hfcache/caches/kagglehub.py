"""kagglehub (Kaggle models and datasets; Keras Hub presets land here too).

Layout reference: ``CACHE-LAYOUTS.md`` section 7.5, checked against kagglehub 1.0.3 ``cache.py``::

    <root>/models/<owner>/<model>/<framework>/<variation>/<version>/          a model version
    <root>/models/<owner>/<model>/<framework>/<variation>/<version>.complete  whole bundle done
    <root>/models/.../<variation>/.complete/<version>/<path>.complete         single files done
    <root>/models/.../<variation>/<version>.archive                           download in progress
    <root>/datasets/<owner>/<dataset>/versions/<version>/   markers and archive in <owner>/<dataset>/
    <root>/competitions/<competition>/                      unversioned, marker <competition>.complete

A version folder kagglehub has not marked complete is never loaded from the cache (it is
fetched again): it is reported as a partial download, not as a revision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hfcache.caches._common import (
    FunctionKind,
    ScanState,
    Unit,
    build_item,
    env_path,
    expanduser,
    inventory,
    is_dir,
    list_dir,
    names_in,
    open_and_scan,
)
from hfcache.caches.deletion import TRASH, TrashDeletion, trash_left
from hfcache.caches.versions import parse_version
from hfcache.model import CacheInventory, ScanWarning

KIND = "kagglehub"
TITLE = "kagglehub cache"
MARKERS = ".complete"
SECTIONS = ("models", "datasets", "competitions")


def default_root(env: Mapping[str, str]) -> str:
    """``$KAGGLEHUB_CACHE``, else ``~/.cache/kagglehub`` (the home folder, not ``XDG_CACHE_HOME``).

    >>> default_root({"HOME": "/home/me", "XDG_CACHE_HOME": "/x"})
    '/home/me/.cache/kagglehub'
    """
    return os.path.abspath(expanduser(env_path(env, "KAGGLEHUB_CACHE") or "~/.cache/kagglehub", env))


class _Scan(ScanState):
    def versions(self, item_id: str, item_type: str, versions_dir: str, marker_dir: str) -> None:
        """One item from the integer-named version folders in ``versions_dir``; markers live in ``marker_dir``."""
        units = []
        for entry in list_dir(versions_dir, self.warnings):
            name = entry.name
            if versions_dir == marker_dir and (name == MARKERS or name.endswith((".complete", ".archive"))):
                continue  # markers and archives sit beside the version folders of models
            version = parse_version(name, integers=True)
            if not is_dir(entry) or version is None or not name.isdigit():
                self.unknown(entry.path, "not a kagglehub version folder")
                continue
            bundle = os.path.join(marker_dir, f"{name}.complete")
            files = os.path.join(marker_dir, MARKERS, name)
            markers = tuple(p for p in (bundle, files) if os.path.lexists(p))
            if not markers:
                self.partial(entry.path, item_id, "unmarked")
                continue
            units.append(Unit(name, (entry.path, *markers), version=version))
        for entry in list_dir(marker_dir, self.warnings):
            if entry.name.endswith(".archive"):
                self.partial(entry.path, item_id, "temporary")
        if units:
            self.items.append(build_item(KIND, item_id, item_type, versions_dir, units, self.seen))

    def models(self, folder: str) -> None:
        for owner in list_dir(folder, self.warnings):
            for model in list_dir(owner.path, self.warnings):
                for framework in list_dir(model.path, self.warnings):
                    for variation in list_dir(framework.path, self.warnings):
                        ident = "/".join((owner.name, model.name, framework.name, variation.name))
                        if is_dir(variation):
                            self.versions(ident, "model", variation.path, variation.path)
                        else:
                            self.unknown(variation.path, "not a kagglehub model variation")

    def datasets(self, folder: str) -> None:
        for owner in list_dir(folder, self.warnings):
            for dataset in list_dir(owner.path, self.warnings):
                versions = os.path.join(dataset.path, "versions")
                if os.path.isdir(versions):
                    self.versions(f"{owner.name}/{dataset.name}", "dataset", versions, dataset.path)
                else:
                    self.unknown(dataset.path, "kagglehub dataset without versions/")

    def competitions(self, folder: str) -> None:
        for entry in list_dir(folder, self.warnings):
            name = entry.name
            if name == MARKERS or name.endswith(".complete"):
                continue
            if name.endswith(".archive"):
                self.partial(entry.path, name[: -len(".archive")], "temporary")
                continue
            markers = tuple(
                p for p in (os.path.join(folder, f"{name}.complete"), os.path.join(folder, MARKERS, name)) if os.path.lexists(p)
            )
            if not is_dir(entry):
                self.unknown(entry.path, "not a kagglehub competition folder")
            elif not markers:
                self.partial(entry.path, name, "unmarked")
            else:
                self.items.append(
                    build_item(KIND, name, "competition", entry.path, [Unit(name, (entry.path, *markers))], self.seen)
                )


def looks_like_cache(root: str) -> bool:
    return any(n in SECTIONS for n in names_in(root))


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one kagglehub cache folder.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no models/, datasets/ or competitions/"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    state = _Scan(KIND, real, warnings)
    for entry in entries:
        if entry.name in SECTIONS and is_dir(entry):
            getattr(state, entry.name)(entry.path)
        elif entry.name == TRASH:
            state.warnings.append(trash_left(entry.path))
        else:
            state.warnings.append(ScanWarning(entry.path, "not written by kagglehub, left alone", blocks_deletion=False))
    protected = [*(os.path.join(real, s) for s in SECTIONS), os.path.join(real, TRASH)]
    return inventory(KIND, TITLE, real, state.items, warnings, protected, state.partials)


KAGGLEHUB = FunctionKind(
    KIND,
    TITLE,
    ("model", "dataset", "competition", "unknown"),
    lambda env: [default_root(env)],
    looks_like_cache,
    scan,
    shapes=(
        rf"(?:{'|'.join(SECTIONS)})/[^/]+/.+",  # versions, markers, archives under models|datasets|competitions
        r"competitions/[^/]+",  # a competition's folder and its <name>.complete, right under competitions/
    ),
    # kagglehub loads a version whose folder and marker both exist: a folder leaves its place whole (renamed into
    # <root>/.hfcache-trash/ first), so a killed prune never leaves half a model still marked complete.
    deletion=TrashDeletion(),
)
