"""``hfcache sync``: make a node hold what its manifest lists, with the owning libraries, and keep it there.

A manifest (YAML)::

    version: 1
    models:
      - id: meta-llama/Llama-3.2-1B        # required
        revision: main                     # a branch, tag or commit (default main)
        type: model                        # model, dataset or space (default model)
        include: ["*.safetensors", "*.json"]  # only these files (snapshot_download's allow_patterns)
        exclude: ["original/*"]
        kind: huggingface                  # the cache kind that fetches it (default huggingface)
      - kind: torch                        # a torch hub checkpoint, fetched by torch from its address
        url: https://download.pytorch.org/models/resnet18-f37072fd.pth
      - kind: keras                        # a Keras download (type: model or dataset), by keras.utils.get_file
        url: https://example.org/weights.h5

Each entry is fetched by its kind (:meth:`~hfcache.caches.protocol.CacheKind.fetch`: for the
hub, ``snapshot_download``: its locks, its resumed partial downloads, ``HF_ENDPOINT`` and
``HF_TOKEN``), and what is already there is not downloaded again. The revisions it resolves
to are recorded as *desired*, in ``desired.json`` beside the state database
(:func:`hfcache.desired.record`, replacing what this manifest wanted before): ``prune``,
``apply`` and ``rm`` keep them.
A failed entry is reported and fails the run (exit 1); the others are done all the same.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import yaml

from hfcache import progress
from hfcache.caches.protocol import CacheKind, Fetched, Wanted
from hfcache.errors import ConfigError
from hfcache.plan.policyfile import load_strict
from hfcache.units import iso

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_KEYS = {"id", "revision", "type", "include", "exclude", "kind", "url"}


class Entry(NamedTuple):
    """One line of a manifest: which kind fetches it, and what."""

    kind: str
    wanted: Wanted


class Synced(NamedTuple):
    """What syncing one entry did: ``fetched`` (files and bytes downloaded), ``present`` (nothing to download) or
    ``failed`` (``error``)."""

    entry: Entry
    status: str
    fetched: Fetched | None = None
    error: str | None = None


def _strings(path: str, where: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{path}: {where}: expected a glob or a list of globs", path=path)


def load_manifest(path: str, *, kinds: Mapping[str, CacheKind]) -> list[Entry]:
    """The entries of the manifest at ``path``; :class:`~hfcache.errors.ConfigError` (exit 2) naming what is wrong."""
    try:
        if not stat_mod.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read for ever
            raise ConfigError(f"manifest {path} is not a file", path=path)
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ConfigError(f"{path}: larger than 4 MiB: not a manifest", path=path)
        doc = load_strict(data.decode("utf-8"), path, "manifest")  # (a key given twice is refused, as in a policy file)
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"cannot read manifest {path}: {getattr(e, 'strerror', None) or e}", path=path) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {getattr(e, 'problem', None) or e}", path=path) from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("models"), list):
        raise ConfigError(f"{path}: expected 'version: 1' and a list 'models'", path=path)
    entries = []
    for n, raw in enumerate(doc["models"], start=1):
        where = f"models[{n}]"
        if isinstance(raw, dict) and isinstance(raw.get("url"), str) and raw.get("id") is None:  # (a file by its address)
            raw = {**raw, "id": os.path.basename(raw["url"].split("?", 1)[0]).split("-", 1)[0].split(".", 1)[0] or raw["url"]}
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"].strip():
            raise ConfigError(f"{path}: {where}: expected a mapping with an 'id' (or a 'url')", path=path)
        if raw.get("url") is not None and not isinstance(raw["url"], str):
            raise ConfigError(f"{path}: {where}.url: expected an address", path=path)
        unknown = set(raw) - _KEYS
        if unknown:
            raise ConfigError(
                f"{path}: {where}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_KEYS))}", path=path
            )
        kind = str(raw.get("kind") or next(iter(kinds)))  # (the registry's first kind: the hub)
        if kind not in kinds:
            raise ConfigError(f"{path}: {where}: unknown cache kind {kind!r}; known: {', '.join(kinds)}", path=path)
        for key in ("revision", "type"):
            if raw.get(key) is not None and not isinstance(raw[key], str):  # YAML reads 1.0, 0123 as numbers: 1.0, 83
                raise ConfigError(f'{path}: {where}.{key}: expected a name; quote it ({key}: "{raw[key]}")', path=path)
        wanted = Wanted(
            raw["id"].strip(),
            str(raw["revision"]) if raw.get("revision") is not None else None,
            str(raw["type"]) if raw.get("type") is not None else None,
            _strings(path, f"{where}.include", raw.get("include")),
            _strings(path, f"{where}.exclude", raw.get("exclude")),
            raw.get("url"),
        )
        entries.append(Entry(kind, wanted))
    return entries


def sync(entries: list[Entry], *, kinds: Mapping[str, CacheKind], roots: Mapping[str, str]) -> list[Synced]:
    """Fetch every entry into the root of its kind (``roots``); each result says what happened, none raises.

    Progress is reported per entry (a bar on a terminal: ``syncing``, entries done of all).
    """
    out = []
    progress.report("syncing", 0, len(entries))
    for n, entry in enumerate(entries, start=1):
        try:
            fetched = kinds[entry.kind].fetch(roots[entry.kind], entry.wanted)
        except Exception as e:  # noqa: BLE001 - a download's failure (the network, a gated repo, a full disk): this entry's
            out.append(Synced(entry, "failed", error=f"{type(e).__name__}: {e}".splitlines()[0][:300]))
        else:
            out.append(Synced(entry, "fetched" if fetched.files else "present", fetched))
        progress.report("syncing", n, len(entries))
    return out


def warm(results: list[Synced]) -> int:
    """Ask the kernel to read the files of every synced revision into the page cache (``WILLNEED``); bytes asked."""
    asked = 0
    if not hasattr(os, "posix_fadvise"):
        return 0
    for r in results:
        if r.fetched is None:
            continue
        for dirpath, _, names in os.walk(r.fetched.path):
            for name in names:
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | getattr(os, "O_NOATIME", 0))
                except OSError:
                    try:
                        fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                    except OSError:
                        continue
                try:
                    size = os.fstat(fd).st_size
                    os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
                    asked += size
                finally:
                    os.close(fd)
    return asked


def desired_rows(results: list[Synced], roots: Mapping[str, str]) -> list[dict[str, str]]:
    """What :mod:`hfcache.desired` records as wanted: each entry that is there, its root, kind, id, revision and path."""
    out = []
    for r in results:
        if r.fetched is not None:
            out.append(
                {
                    "root": os.path.realpath(roots[r.entry.kind]),
                    "kind": r.entry.kind,
                    "id": r.entry.wanted.id,
                    "revision": r.fetched.revision,
                    "path": os.path.realpath(r.fetched.path),
                }
            )
    return out


def report(manifest: str, results: list[Synced], *, warmed: int = 0, now: float | None = None) -> dict[str, Any]:
    """The JSON of a sync: each entry and what it did."""
    return {
        "version": 1,
        "manifest": manifest,
        "synced_at": iso(now if now is not None else time.time()),
        "warmed_bytes": warmed,
        "entries": [
            {
                "kind": r.entry.kind,
                "id": r.entry.wanted.id,
                "revision": r.entry.wanted.revision,
                "resolved": r.fetched.revision if r.fetched else None,
                "path": r.fetched.path if r.fetched else None,
                "status": r.status,
                "files_fetched": r.fetched.files if r.fetched else 0,
                "bytes_fetched": r.fetched.bytes if r.fetched else 0,
                "error": r.error,
            }
            for r in results
        ],
    }
