"""llama.cpp's flat cache, as builds before March 2026 wrote it (``llama-cli -hf``, ``-mu``, ``-dr``).

Layout (llama.cpp ``common/arg.cpp`` and ``common/download.cpp`` before PRs #20775, #20935,
#21009, which moved llama.cpp to the hub layout; a new build migrates this cache when it
first starts, so it stays only where no new build ran)::

    <root>/manifest=<user>=<model>=<tag>.json      the Hub's manifest answer for -hf user/model:tag
                                                   (ggufFile.rfilename, mmprojFile.rfilename)
    <root>/<user>_<model>_<rfilename>              the file, "/" made "_" (common_params_handle_model)
    <root>/<...>-00002-of-00003.gguf               the other parts of a split model (llama_split_path)
    <root>/<file>.etag                             its ETag (write_etag); older builds: <file>.json
    <root>/<file>.downloadInProgress               a download under way or interrupted: appended and
                                                   resumed with a Range request, no lock at all
    <root>/<name>.tmp                              an atomic write (write_file) a kill interrupted
    <root>/ai_smollm2_135M-Q4_0.gguf               a Docker model (-dr), a -mu download: no manifest

The root is ``fs_get_cache_directory()``: ``$LLAMA_CACHE``, else ``$XDG_CACHE_HOME/llama.cpp``,
else ``~/.cache/llama.cpp`` (``~/Library/Caches/llama.cpp`` on macOS). A model is ``user/model``;
its revisions are its tags (``latest`` is what ``-hf user/model`` loads). A tag's unit is its
manifest and the files it names, with their ``.etag``; a file two tags name goes with the last
of them. A ``.gguf`` no manifest names is an item of its own. Anything else in the folder
(``$LLAMA_CACHE`` may also hold a hub cache: the hub kind scans that) is left alone.
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace

from hfcache.caches._common import (
    FunctionKind,
    ScanState,
    Unit,
    build_item,
    env_path,
    expanduser,
    inventory,
    measure,
    names_in,
    open_and_scan,
    read_small_json,
)
from hfcache.caches.protocol import Layout, unit_layout
from hfcache.model import CacheInventory, Item, Revision, ScanWarning

KIND = "llama-cpp-flat"
TITLE = "llama.cpp flat cache (before March 2026)"
MANIFEST_RE = re.compile(r"manifest=([^=/]+)=([^=/]+)=([^=/]+)\.json")
SPLIT_RE = re.compile(r"(?P<prefix>.+)-(?P<i>[0-9]{5})-of-(?P<n>[0-9]{5})\.gguf")
IN_PROGRESS = ".downloadInProgress"
COMPANIONS = (".etag", ".json")  # beside each file: its ETag; older builds wrote a .json of metadata
# What a hub cache in the same folder holds ($LLAMA_CACHE of a new build): the hub kind's, never ours.
_HUB_ENTRY_RE = re.compile(r"(?:models|datasets|spaces|kernels)--.+|\.locks|CACHEDIR\.TAG|blobs|version\.txt|\..*")


def default_root(env: Mapping[str, str], platform: str = sys.platform) -> str:
    """llama.cpp's ``fs_get_cache_directory()``.

    >>> default_root({"HOME": "/home/me"}, "linux"), default_root({"HOME": "/h", "XDG_CACHE_HOME": "/x"}, "linux")
    ('/home/me/.cache/llama.cpp', '/x/llama.cpp')
    >>> default_root({"HOME": "/h", "LLAMA_CACHE": "/models"}), default_root({"HOME": "/h"}, "darwin")
    ('/models', '/h/Library/Caches/llama.cpp')
    """
    llama = env_path(env, "LLAMA_CACHE")
    if llama is not None:
        return os.path.abspath(llama)
    if platform == "darwin":
        return os.path.abspath(expanduser("~/Library/Caches/llama.cpp", env))
    base = env_path(env, "XDG_CACHE_HOME") or expanduser("~/.cache", env)
    return os.path.abspath(os.path.join(base, "llama.cpp"))


def _is_ours(name: str) -> bool:
    return bool(MANIFEST_RE.fullmatch(name)) or name.endswith((".gguf", ".gguf.etag", IN_PROGRESS))


def looks_like_cache(root: str) -> bool:
    """A folder holding a manifest, a ``.gguf`` or its ``.etag`` at its top."""
    return any(_is_ours(name) for name in names_in(root))


def cache_name(user: str, model: str, rfilename: str) -> str:
    """The file name a manifest's ``rfilename`` is cached under (``hf_repo + "_" + hf_file``, "/" made "_").

    >>> cache_name("org", "Model-GGUF", "Q4/model-Q4_K_M.gguf")
    'org_Model-GGUF_Q4_model-Q4_K_M.gguf'
    """
    return f"{user}/{model}_{rfilename}".replace("/", "_")


def _parts(name: str, files: set[str]) -> list[str]:
    """A file and, for a split model, the other parts that are here (``<prefix>-%05d-of-%05d.gguf``)."""
    split = SPLIT_RE.fullmatch(name)
    if split is None:
        return [name]
    n = int(split.group("n"))
    found = [f"{split.group('prefix')}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    return [f for f in found if f in files] or [name]


def _with_companions(names: list[str], files: set[str], named: AbstractSet[str] = frozenset()) -> list[str]:
    """The files and their ``.etag`` / ``.json`` beside them, except a companion some manifest names as a file."""
    return [x for name in names for x in (name, *(name + c for c in COMPANIONS if name + c not in named)) if x in files]


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one flat llama.cpp folder. Reads each manifest (a few hundred bytes), nothing else.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no manifest=*.json, *.gguf or *.gguf.etag"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


Tags = dict[str, list[tuple[str, str, list[str]]]]  # model id -> (tag, manifest name, names of the files it names)


def _read_manifests(real: str, files: set[str], warnings: list[ScanWarning]) -> Tags:
    """Every tag of every model, from its manifest (``common_get_hf_file``: ggufFile, mmprojFile)."""
    tags: Tags = defaultdict(list)
    for name in sorted(files):
        match = MANIFEST_RE.fullmatch(name)
        if match is None:
            continue
        user, model, tag = match.groups()
        data = read_small_json(os.path.join(real, name))
        named: list[str] = []
        for key in ("ggufFile", "mmprojFile"):
            entry = data.get(key) if data is not None else None
            rfilename = entry.get("rfilename") if isinstance(entry, dict) else None
            if isinstance(rfilename, str) and rfilename:
                named += _parts(cache_name(user, model, rfilename), files)
        if data is None:  # what it names is unknown: every file of the model stays with it, undeletable
            warnings.append(
                ScanWarning(os.path.join(real, name), "manifest llama.cpp cannot read; the model's files are left alone")
            )
            named = [f for f in files if f.startswith(cache_name(user, model, "")) and f.endswith(".gguf")]
        tags[f"{user}/{model}"].append((tag, name, [f for f in named if f in files]))
    return tags


def _model(
    state: ScanState,
    item_id: str,
    entries: list[tuple[str, str, list[str]]],
    files: set[str],
    models_of: Mapping[str, int],
    counted: set[str],
) -> Item:
    """One model: a revision per tag (its manifest and the files only it names); files its tags share, once, with the last.

    ``models_of`` says how many models name each file: two repos whose names map to one file
    name (``org/A`` + ``B_c.gguf``, ``org/A_B`` + ``c.gguf``) share it, and it goes with neither
    (a warning says so); it is counted once, in the first.
    """
    real = state.root
    users: dict[str, int] = defaultdict(int)
    for _, _, named in entries:
        for f in set(named):
            users[f] += 1
    everything_named = {f for f, n in models_of.items() if n}
    # A manifest naming another named file's .etag (or .json) as its file: that one stays with its file.
    companions = {f for f in everything_named for c in COMPANIONS if f.endswith(c) and f[: -len(c)] in everything_named}
    units = []
    for tag, manifest, named in entries:
        mine = [f for f in named if users[f] == 1 and models_of[f] == 1 and f not in companions]
        own = _with_companions(mine, files, everything_named)
        blocked = [w for w in state.warnings if w.path == os.path.join(real, manifest)]
        paths = tuple(os.path.join(real, f) for f in (manifest, *own))
        units.append(Unit(tag, paths, warnings=blocked, default=tag == "latest"))
    item = build_item(KIND, item_id, "model", real, units, state.seen)
    shared = sorted(f for f, n in users.items() if n > 1 and models_of[f] == 1)
    if shared:
        extra = [os.path.join(real, f) for f in _with_companions(shared, files, everything_named)]
        size = sum(measure(p, state.seen, state.warnings).size for p in extra)
        item = replace(item, paths=(*item.paths, *extra), size_bytes=item.size_bytes + size)
    for f in sorted(f for f in users if models_of[f] > 1 and f not in counted):
        counted.add(f)  # counted once (with its .etag), in the first model naming it
        size = sum(measure(os.path.join(real, g), state.seen, state.warnings).size for g in _with_companions([f], files))
        item = replace(item, size_bytes=item.size_bytes + size)
        warning = "named by the manifests of two models: left alone"
        state.warnings.append(ScanWarning(os.path.join(real, f), warning, blocks_deletion=False))
    return item


def _loose(state: ScanState, files: set[str], claimed: set[str]) -> set[str]:
    """A ``.gguf`` no manifest names (a Docker model, a -mu download, a build before manifests): an item each."""
    loose: set[str] = set()
    for name in sorted(files):
        if not name.endswith(".gguf") or name in claimed or name in loose:
            continue
        parts = _parts(name, files)
        loose.update(parts)
        split = SPLIT_RE.fullmatch(name)
        item_id = split.group("prefix") if split else name[: -len(".gguf")]
        unit = Unit(name, tuple(os.path.join(state.root, f) for f in _with_companions(parts, files)))
        state.items.append(build_item(KIND, item_id, "gguf", os.path.join(state.root, name), [unit], state.seen))
    return loose


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    state = ScanState(KIND, real, warnings)
    files = {e.name for e in entries if e.is_file(follow_symlinks=False)}
    tags = _read_manifests(real, files, warnings)
    claimed = {f for entries_ in tags.values() for _, _, named in entries_ for f in named}
    models_of: dict[str, int] = defaultdict(int)
    for entries_ in tags.values():
        for f in {f for _, _, named in entries_ for f in named}:
            models_of[f] += 1
    counted: set[str] = set()
    for item_id, entries_ in sorted(tags.items()):
        state.items.append(_model(state, item_id, entries_, files, models_of, counted))
    loose = _loose(state, files, claimed)
    owned = claimed | loose
    for name in sorted(files):
        if name.endswith(IN_PROGRESS):
            state.partial(os.path.join(real, name), _owner(name[: -len(IN_PROGRESS)], tags), "resumable")
        elif name.endswith(".tmp"):
            state.partial(os.path.join(real, name), None, "temporary")
        elif not (MANIFEST_RE.fullmatch(name) or name in owned or name.endswith(COMPANIONS)):
            warnings.append(ScanWarning(os.path.join(real, name), "not written by llama.cpp's flat cache, left alone", False))
    for entry in entries:
        if entry.name not in files and not _HUB_ENTRY_RE.fullmatch(entry.name):
            warnings.append(ScanWarning(entry.path, "not written by llama.cpp's flat cache, left alone", False))
    return inventory(KIND, TITLE, real, state.items, warnings, (), state.partials)


def tag_layout(cache: CacheInventory, item: Item, rev: Revision) -> Layout:
    """What an archive keeps of a tag: its manifest and every file it names, with their ``.etag``, shared or not.

    The tag's unit holds only the files no other tag names (a shared file goes with the last
    tag); its archive must hold them all: archived one tag at a time, the last one's copy
    would otherwise leave the shared model file out, and it would be deleted with no copy
    anywhere. Restored, a file another tag brought back already stays as it is.
    """
    if item.type != "model" or not rev.unit_paths:
        return unit_layout(cache, item, rev)
    real = os.path.dirname(rev.unit_paths[0])
    files = set(names_in(real))
    others = {f for f in files if not MANIFEST_RE.fullmatch(f)}  # (only this tag's manifest is read again)
    tags = _read_manifests(real, {os.path.basename(rev.unit_paths[0])} | others, [])
    named = [f for tag, _, names in tags.get(item.id, ()) if tag == rev.revision for f in names]  # (its model's tag only)
    everything = set(named)
    extra = [os.path.join(real, f) for f in _with_companions(named, files, everything)]
    unit = (*rev.unit_paths, *(p for p in extra if p not in rev.unit_paths))
    return unit_layout(cache, item, replace(rev, paths=unit))


def _owner(target: str, tags: Tags) -> str | None:
    """The item a partial download is for: the model a manifest names it for, or the loose file's id."""
    for item_id, entries in tags.items():
        if any(target in named for _, _, named in entries):
            return item_id
    if target.endswith(".gguf"):
        split = SPLIT_RE.fullmatch(target)
        return split.group("prefix") if split else target[: -len(".gguf")]
    return None


LLAMA_CPP_FLAT = FunctionKind(
    KIND,
    TITLE,
    ("model", "gguf", "unknown"),
    lambda env: [default_root(env)],
    looks_like_cache,
    scan,
    shapes=(
        r"manifest=[^=/]+=[^=/]+=[^=/]+\.json",  # a tag's manifest
        r"[^/]+\.gguf",  # a model file, a part of a split one
        r"[^/]+\.gguf\.(?:etag|json)",  # its ETag, older builds' metadata
        rf"[^/]+{IN_PROGRESS}",  # a download that did not finish
        r"[^/]+\.tmp",  # an atomic write a kill interrupted
    ),
    archive=tag_layout,
)
