"""The Hugging Face ``datasets`` library's own cache: prepared Arrow datasets and non-Hub downloads.

Layout reference: ``CACHE-LAYOUTS.md`` section 7.1, checked against datasets 5.2.0::

    <root>/<ns>___<name>/<config>/<version>/<hash>/        a prepared dataset (Arrow files)
    <root>/<ns>___<name>/<config>/<version>/<hash>.incomplete/   being prepared
    <root>/<ns>___<name>/<config>/<version>/<hash>_builder.lock  flock held while preparing
    <root>/_<abs path with / -> _>.lock                     per-dataset flock (left in place)
    <root>/downloads/<sha256(url)>[.<sha256(etag)>][.py]    + .json {"url", "etag"} + .lock + .incomplete
    <root>/downloads/extracted/<sha256(abs path of archive)>/

Files of Hub repos are not here: ``datasets`` sends them to the hub cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping

from hfcache.caches._common import (
    TEMPFILE_RE,
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
    read_small_json,
    xdg_cache_home,
)
from hfcache.caches.versions import parse_version
from hfcache.fs.locks import is_lock_held
from hfcache.model import CacheInventory, ScanWarning

KIND = "datasets"
TITLE = "Hugging Face datasets cache"
DOWNLOADS = "downloads"
EXTRACTED = "extracted"
_DOWNLOAD_RE = re.compile(r"(?P<url>[0-9a-f]{64})(?:\.(?P<etag>[0-9a-f]{64}))?(?P<py>\.py)?")
_HASH_RE = re.compile(r"[0-9a-f]{64}")


def default_root(env: Mapping[str, str]) -> str:
    """``$HF_DATASETS_CACHE``, else ``$HF_HOME/datasets`` (datasets only expands ``~``).

    >>> default_root({"HOME": "/home/me"})
    '/home/me/.cache/huggingface/datasets'
    """
    explicit = env_path(env, "HF_DATASETS_CACHE")
    if explicit is not None:
        return os.path.abspath(explicit)
    hf_home = env_path(env, "HF_HOME") or os.path.join(xdg_cache_home(env), "huggingface")
    return os.path.abspath(os.path.join(expanduser(hf_home, env), "datasets"))


class _Scan(ScanState):
    def dataset(self, folder: os.DirEntry[str]) -> None:
        """``<ns>___<name>/<config>/<version>/<hash>/`` -> one item, a revision per prepared folder."""
        item_id = folder.name.replace("___", "/", 1)
        units: list[Unit] = []
        known = len(self.items)
        for config in list_dir(folder.path, self.warnings):
            if not is_dir(config):
                self.unknown(config.path, "not a dataset config folder")
                continue
            for version in list_dir(config.path, self.warnings):
                if not is_dir(version):
                    self.unknown(version.path, "not a dataset version folder")
                    continue
                for entry in list_dir(version.path, self.warnings):
                    name = entry.name
                    if name.endswith(".lock"):
                        continue
                    lock = os.path.join(version.path, name.split(".", 1)[0] + "_builder.lock")
                    if name.endswith(".incomplete") and is_dir(entry):
                        self.partial(entry.path, item_id, "temporary", lock)
                    elif is_dir(entry):
                        revision = f"{config.name}/{version.name}/{name}"
                        unit = Unit(revision, (entry.path,), version=parse_version(version.name))
                        if is_lock_held(lock):
                            unit.warnings.append(ScanWarning(entry.path, "being prepared (builder lock held)"))
                        units.append(unit)
                    else:
                        self.unknown(entry.path, "loose file in a dataset version folder")
        if units:
            # The folder goes with the last prepared version only when it holds nothing else: a loose file in it is an
            # item of its own, reported and never deleted, which no archive of the versions holds.
            alone = len(self.items) == known
            self.items.append(build_item(KIND, item_id, "dataset", folder.path, units, self.seen, owns_path=alone))

    def downloads(self, folder: str) -> None:
        entries = list_dir(folder, self.warnings)
        names = {e.name for e in entries}
        extracted_dir = os.path.join(folder, EXTRACTED)
        extracted = {e.name: e.path for e in list_dir(extracted_dir, self.warnings)} if EXTRACTED in names else {}
        for entry in entries:
            name = entry.name
            if name == EXTRACTED or name.endswith((".json", ".lock")):
                continue
            if name.endswith(".incomplete"):
                target = os.path.join(folder, name[: -len(".incomplete")])
                self.partial(entry.path, None, "resumable", target + ".lock")
                continue
            if TEMPFILE_RE.fullmatch(name):
                self.partial(entry.path, None, "temporary")
                continue
            match = _DOWNLOAD_RE.fullmatch(name)
            if not match or is_dir(entry):
                self.unknown(entry.path, "not a datasets download")
                continue
            meta = read_small_json(entry.path + ".json") if name + ".json" in names else None
            url = meta.get("url") if meta else None
            paths = [entry.path, *(entry.path + s for s in (".json", ".lock") if name + s in names)]
            # Extraction folders are named after the archive's absolute path: pair them with it.
            for spelling in {entry.path, os.path.join(os.path.realpath(folder), name)}:
                key = hashlib.sha256(spelling.encode("utf-8")).hexdigest()
                if key in extracted:
                    paths.append(extracted.pop(key))
            item_id = url if isinstance(url, str) else f"downloads/{name}"
            unit = Unit(match.group("etag") or name, tuple(paths))
            self.items.append(build_item(KIND, item_id, "download", entry.path, [unit], self.seen))
        for name, path in sorted(extracted.items()):
            if _HASH_RE.fullmatch(name):
                unit = Unit(name, (path,))
                self.items.append(build_item(KIND, f"downloads/extracted/{name}", "extracted", path, [unit], self.seen))
            else:
                self.unknown(path, "not a datasets extraction folder")


def looks_like_cache(root: str) -> bool:
    names = names_in(root)
    return DOWNLOADS in names or any(n.endswith(".lock") or "___" in n for n in names)


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one datasets cache folder.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no downloads/, dataset folders or locks"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    state = _Scan(KIND, real, warnings)
    for entry in entries:
        name = entry.name
        if name.endswith(".lock") and not is_dir(entry):
            continue  # per-dataset flock files: datasets leaves them, and they cost nothing
        if name == DOWNLOADS and is_dir(entry):
            state.downloads(entry.path)
        elif is_dir(entry):
            state.dataset(entry)
        else:
            state.unknown(entry.path, "not written by datasets")
    protected = (os.path.join(real, DOWNLOADS), os.path.join(real, DOWNLOADS, EXTRACTED))
    return inventory(KIND, TITLE, real, state.items, warnings, protected, state.partials)


DATASETS = FunctionKind(
    KIND,
    TITLE,
    ("dataset", "download", "extracted", "unknown"),
    lambda env: [default_root(env)],
    looks_like_cache,
    scan,
    shapes=(
        r"[^/]+",  # a dataset folder, once its last prepared version goes
        r"[^/]+/[^/]+/[^/]+/[^/]+",  # <dataset>/<config>/<version>/<hash>[.incomplete]
        rf"{DOWNLOADS}/[^/]+",  # a download, its .json and .lock, a partial
        rf"{DOWNLOADS}/{EXTRACTED}/[^/]+",
    ),
)
