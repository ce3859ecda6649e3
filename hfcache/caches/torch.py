"""PyTorch Hub (``torch/hub.py``): weight checkpoints and GitHub repo snapshots.

Layout reference: ``CACHE-LAYOUTS.md`` section 4::

    <hub>/trusted_list                         one owner_repo per line (never an item, never deleted)
    <hub>/<owner>_<repo>_<ref>/hubconf.py ...  torch.hub.load("owner/repo:ref"): item owner/repo, revision ref
    <hub>/checkpoints/<stem>-<hex>.<ext>       load_state_dict_from_url: item stem, revision hex
    <hub>/checkpoints/<file>.<32 hex>.partial  download_url_to_file in progress (or killed)
    <hub>/<ref>.zip, <hub>/<zipball top>/      a repo being fetched or unpacked

torch takes no locks; whether a partial download is still running is judged by its age.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping

from hfcache.caches._common import (
    TEMPFILE_RE,
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
    partial_file,
    unknown_item,
    url_file_name,
    xdg_cache_home,
)
from hfcache.caches.protocol import Expected, Fetched, Wanted, no_hashes
from hfcache.caches.versions import parse_version, split_version, strip_name
from hfcache.model import CacheInventory, Item, PartialFile, Revision, ScanWarning

KIND = "torch"
TITLE = "PyTorch hub cache"
CHECKPOINTS = "checkpoints"
TRUSTED_LIST = "trusted_list"

# torch's HASH_REGEX is r"-([a-f0-9]*)\." (first match); we require 8+ hex digits, or "-224." would match.
_HASH_RE = re.compile(r"-([a-f0-9]{8,})\.")
_PARTIAL_RE = re.compile(r"(?P<target>.+)\.[0-9a-f]{32}\.partial")
# GitHub zipball top folders look like owner-repo-<sha>; final folders are owner_repo_ref.
_ZIPBALL_DIR_RE = re.compile(r"[A-Za-z0-9.-]+-[0-9a-f]{7,40}")


def torch_home(env: Mapping[str, str]) -> str:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch: ``expanduser`` only)."""
    explicit = env_path(env, "TORCH_HOME")
    if explicit is not None:
        return os.path.abspath(expanduser(explicit, env))
    return os.path.abspath(os.path.join(xdg_cache_home(env), "torch"))


def default_root(env: Mapping[str, str]) -> str:
    """``torch.hub.get_dir()``: ``<torch home>/hub``.

    >>> default_root({"HOME": "/home/me"})
    '/home/me/.cache/torch/hub'
    >>> default_root({"HOME": "/home/me", "TORCH_HOME": "~/t", "XDG_CACHE_HOME": "/x"})
    '/home/me/t/hub'
    """
    return os.path.join(torch_home(env), "hub")


def _read_trusted(root: str) -> list[str]:
    """The ``owner_repo`` lines of ``trusted_list`` (a tiny text file torch itself reads on every load)."""
    try:
        with open(os.path.join(root, TRUSTED_LIST), encoding="utf-8", errors="replace") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError:
        return []


def split_repo_folder(name: str, trusted: list[str]) -> tuple[str, str, bool] | None:
    """``owner_repo_ref`` -> ``("owner/repo", "ref", certain)``; None when it is not of that form.

    The owner ends at the first ``_`` (GitHub owners cannot contain one). Repo and ref may both
    contain ``_``: the longest ``owner_repo`` of ``trusted_list`` decides; failing that, a single
    remaining ``_`` is certain and anything else is a guess at the last ``_``.

    >>> split_repo_folder("pytorch_vision_v0.10.0", [])
    ('pytorch/vision', 'v0.10.0', True)
    >>> split_repo_folder("me_my_repo_main", ["me_my_repo"])
    ('me/my_repo', 'main', True)
    >>> split_repo_folder("me_my_repo_main", [])
    ('me/my_repo', 'main', False)
    >>> split_repo_folder("checkpoints", []) is None
    True
    """
    owner, sep, rest = name.partition("_")
    if not sep or not owner or "_" not in rest:
        return None
    prefixes = [t for t in trusted if name.startswith(t + "_") and t.startswith(owner + "_") and len(t) > len(owner) + 1]
    if prefixes:
        best = max(prefixes, key=len)
        ref = name[len(best) + 1 :]
        if ref:
            return f"{owner}/{best[len(owner) + 1 :]}", ref, True
    repo, _, ref = rest.rpartition("_")
    if not repo or not ref:
        return None
    return f"{owner}/{repo}", ref, rest.count("_") == 1


def checkpoint_hashes(cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
    """A checkpoint ``name-<hex>.ext`` carries the start of its sha256 (``check_hash``); a hub repo carries none."""
    if item.type != "checkpoint":
        return no_hashes(TITLE, rev)
    out = []
    for path in rev.unit_paths:
        match = _HASH_RE.search(os.path.basename(path))
        if match is None:
            out.append(Expected(os.path.basename(path), path, path, why="its name carries no hash (no -<hex>. part)"))
        else:
            out.append(Expected(os.path.basename(path), path, path, "sha256-prefix", match.group(1)))
    return out


def _scan_checkpoints(
    folder: str, seen: set[tuple[int, int]], warnings: list[ScanWarning], partials: list[PartialFile], root: str
) -> list[Item]:
    groups: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # stem -> (revision, name, path)
    items: list[Item] = []
    for entry in list_dir(folder, warnings):
        name = entry.name
        partial = _PARTIAL_RE.fullmatch(name)
        if partial or TEMPFILE_RE.fullmatch(name):  # (torch 1.x: NamedTemporaryFile(dir=checkpoints))
            stem = _stem(partial.group("target"))[0] if partial else None
            partials.append(partial_file(entry.path, stem, "temporary", seen, warnings))
            continue
        if is_dir(entry):
            items.append(unknown_item(KIND, entry.path, root, seen, "folder in checkpoints/ (torch only writes files there)"))
            continue
        stem, revision = _stem(name)
        groups[stem].append((revision, name, entry.path))
    for stem, files in sorted(groups.items()):
        revisions = [r for r, _, _ in files]
        units = [
            # Two files with one hash (resnet-abc.pth, resnet-abc.pt): fall back to the file names.
            Unit(name if revisions.count(rev) > 1 else rev, (path,), version=split_version(name)[1])
            for rev, name, path in files
        ]
        path = files[0][2] if len(files) == 1 else folder
        items.append(build_item(KIND, stem, "checkpoint", path, units, seen))
    return items


def _stem(name: str) -> tuple[str, str]:
    """A checkpoint file name -> (model, revision): ``resnet18-5c106cde.pth`` -> ``(resnet18, 5c106cde)``.

    Without a hash of 8+ hex digits the model is the name without its extension and the
    revision is the whole file name.
    """
    match = _HASH_RE.search(name)
    if match:
        return name[: match.start()], match.group(1)
    return strip_name(name) or name, name


def _scan_repo_folder(
    entry: os.DirEntry[str], trusted: list[str], seen: set[tuple[int, int]], root: str
) -> tuple[str, Unit] | Item:
    split = split_repo_folder(entry.name, trusted)
    if split is None:
        return unknown_item(KIND, entry.path, root, seen, "not a torch hub folder (<owner>_<repo>_<ref>)")
    if not os.path.isfile(os.path.join(entry.path, "hubconf.py")):
        return unknown_item(KIND, entry.path, root, seen, "no hubconf.py: not a torch hub repo")
    repo_id, ref, certain = split
    # torch.hub.load("owner/repo") without a ref takes the default branch, main (or master before).
    unit = Unit(ref, (entry.path,), version=parse_version(ref), default=ref in ("main", "master"))
    if not certain:
        unit.warnings.append(
            ScanWarning(
                entry.path,
                f"repo and ref split guessed as {repo_id}:{ref} (not in trusted_list)",
                blocks_deletion=False,
            )
        )
    return repo_id, unit


def looks_like_cache(root: str) -> bool:
    """A torch hub folder holds ``checkpoints/``, ``trusted_list`` or repo folders with a ``hubconf.py``."""
    names = names_in(root)
    if CHECKPOINTS in names or TRUSTED_LIST in names:
        return True
    return any(split_repo_folder(n, []) is not None and os.path.isfile(os.path.join(root, n, "hubconf.py")) for n in names)


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one torch hub folder. Never writes, never opens a checkpoint.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    hint = f" (did you mean {os.path.join(root, 'hub')}?)" if os.path.isdir(os.path.join(root, "hub")) else ""
    refusal = f"holds no checkpoints/, trusted_list or hub repos{hint}"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    seen: set[tuple[int, int]] = set()
    trusted = _read_trusted(real)
    items: list[Item] = []
    partials: list[PartialFile] = []
    repos: dict[str, list[Unit]] = defaultdict(list)
    zips = any(e.name.endswith(".zip") for e in entries)
    for entry in entries:
        name = entry.name
        if name == TRUSTED_LIST:
            continue
        if name == CHECKPOINTS and is_dir(entry):
            items.extend(_scan_checkpoints(entry.path, seen, warnings, partials, real))
        elif name.endswith((".zip", ".partial")) and not is_dir(entry):
            partials.append(partial_file(entry.path, None, "temporary", seen, warnings))
        elif is_dir(entry) and "_" not in name and (zips or _ZIPBALL_DIR_RE.fullmatch(name)):
            partials.append(partial_file(entry.path, None, "extracting", seen, warnings))
        elif is_dir(entry):
            found = _scan_repo_folder(entry, trusted, seen, real)
            if isinstance(found, Item):
                items.append(found)
            else:
                repos[found[0]].append(found[1])
        else:
            items.append(unknown_item(KIND, entry.path, real, seen, "file torch hub does not write"))
    for repo_id, units in repos.items():
        path = units[0].paths[0] if len(units) == 1 else real
        items.append(build_item(KIND, repo_id, "hub-repo", path, units, seen))
    protected = (os.path.join(real, CHECKPOINTS), os.path.join(real, TRUSTED_LIST))
    return inventory(KIND, TITLE, real, items, warnings, protected, partials)


def fetch_checkpoint(root: str, wanted: Wanted) -> Fetched:
    """``hfcache sync`` of a checkpoint: ``torch.hub.download_url_to_file`` into ``checkpoints/``, as
    ``load_state_dict_from_url`` stores it (its hash prefix checked by torch when the name has one)."""
    name = url_file_name(wanted, "a torch entry needs the checkpoint's url")
    dst = os.path.join(root, CHECKPOINTS, name)
    revision = _stem(name)[1]
    if os.path.isfile(dst):
        return Fetched(revision, dst, 0, 0)
    try:
        import torch.hub
    except ImportError:
        raise RuntimeError("torch is not installed here: its checkpoints are fetched by torch itself") from None
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    prefix = _HASH_RE.search(name)
    torch.hub.download_url_to_file(wanted.url, dst, hash_prefix=prefix.group(1) if prefix else None, progress=False)
    return Fetched(revision, dst, 1, os.path.getsize(dst))


TORCH = FunctionKind(
    KIND,
    TITLE,
    ("checkpoint", "hub-repo", "unknown"),
    lambda env: [default_root(env)],
    looks_like_cache,
    scan,
    # a weight file (or its partial), a repo folder, a zipball being fetched or unpacked
    shapes=(rf"{CHECKPOINTS}/[^/]+", r"[^/]+"),
    hashes=checkpoint_hashes,  # the -<hex>. of a checkpoint's name: the start of its sha256
    download=fetch_checkpoint,  # hfcache sync: torch's own download function
)
