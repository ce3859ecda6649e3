"""Where a hub cache is, what it looks like, and the names of its parts (CACHE-LAYOUTS.md sections 1 and 2)."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from typing import NamedTuple
from urllib.parse import unquote

from hfcache.caches._common import FILES_TO_IGNORE, check_dir, env_path, expanduser, expandvars, names_in, xdg_cache_home
from hfcache.caches.protocol import Uri
from hfcache.errors import CacheUnreadable, NotACache

KIND = "huggingface"


TITLE = "Hugging Face hub cache"


REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}


# Entries of the cache root that belong there and are never items: locks, the cache-directory
# tag, and the migration markers of transformers 4.22-4.48 and diffusers 0.14+ (never delete those).
ROOT_ENTRIES_TO_SKIP = frozenset({".locks", "CACHEDIR.TAG", "version.txt", "version_diffusers_cache.txt"})


REPO_SUBDIRS = frozenset({"refs", "snapshots", "blobs", ".no_exist", "trees"})


SHARED_STORE_DIR = "blobs"


SHARED_STORE_MARKER = ".huggingface-shared-blobs"


SHARED_STORE_MARKER_CONTENT = b"1\n"


REPO_DIR_RE = re.compile(r"(models|datasets|spaces|kernels)--(.+)", re.DOTALL)


COMMIT_RE = re.compile(r"[0-9a-f]{40}")


# An interrupted atomic write of a ref: huggingface_hub 2.4 writes `refs/<name>.<8 hex>.tmp`,
# llama.cpp `refs/<name>.tmp` (hf-cache.cpp, safe_write_file), then renames it (see is_ref_temporary).
REF_TMP_RE = re.compile(r"\.tmp$")
_HUB_REF_TMP_RE = re.compile(r"\.[0-9a-f]{8}\.tmp$")


def is_ref_temporary(name: str, siblings: Collection[str]) -> bool:
    """Whether ``refs/.../name`` is a ref's atomic write a kill left, not a ref (``siblings``: the names beside it).

    huggingface_hub's ``<name>.<8 hex>.tmp`` always is. llama.cpp's ``<name>.tmp`` is only
    when the ref ``<name>`` it was renamed to is there (a write superseded): alone, it may be a
    real ref named so (``v1.tmp`` is a valid tag name, and huggingface_hub reads it as one) or
    the only record of the revision llama.cpp was pointing ``<name>`` at: either way it is read
    as a ref, which keeps its revision.

    >>> is_ref_temporary("main.1a2b3c4d.tmp", []), is_ref_temporary("main.tmp", ["main"]), is_ref_temporary("v1.tmp", [])
    (True, True, False)
    """
    if _HUB_REF_TMP_RE.search(name):
        return True
    return name.endswith(".tmp") and name[: -len(".tmp")] in siblings


INCOMPLETE_RE = re.compile(r"(?P<etag>.+?)(?P<token>\.[0-9a-f]{8})?\.incomplete", re.DOTALL)


TEMP_BLOB_RE = re.compile(r"tmp_[0-9a-f-]{32,36}|\..+\.[0-9a-f]{8}\.(?:new|old|shared)", re.DOTALL)


# The name of a blob the hub writes, `blobs/<etag>` with the ETag's quotes removed
# (file_download._normalize_etag): a git sha1 (40 hex) for a file kept in git, a sha256 (64
# hex) for LFS and Xet files; caches filled through mirrors also hold S3-style ETags (an md5,
# or md5-<parts> of a multipart upload). Only a blob so named can be an orphan: any other name
# no snapshot links is left alone (see blob_temporary for the names other writers use).
BLOB_NAME_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}|[0-9a-f]{32}(?:-[0-9]{1,5})?")


# llama.cpp (common/download.cpp): `blobs/<oid>` is downloaded into `<oid>.downloadInProgress`,
# appended and resumed with a Range request, renamed when complete; no lock of the hub's.
DOWNLOAD_IN_PROGRESS = ".downloadInProgress"


# The Rust hf-hub crate 0.4.1-0.5 (src/api/sync.rs, tokio.rs): `<etag>.part` (sync API) or
# `<etag>.sync.part` (tokio API), under the flock of `<etag>.lock` beside them; 0.4.0 wrote
# `<etag>..part` and `<etag>..sync.part` (PathBuf::set_extension(".part") keeps the dot).
RUST_PART_RE = re.compile(r"(?P<etag>[0-9a-f]{40}|[0-9a-f]{64})\.{1,2}(?:sync\.)?part")


class BlobTemporary(NamedTuple):
    """What a name in a repo's ``blobs/`` is when it is not a blob: a partial download or a lock.

    ``etag`` is the blob it is for (None for huggingface_hub's umask probe and staging files),
    ``scheme`` a partial's :attr:`~hfcache.model.PartialFile.scheme` ("" for a lock), ``lock``
    the lock file its writer takes beside it in ``blobs/``, if any (the Rust hf-hub crate's;
    llama.cpp takes none, but the download lock proposed for it, llama.cpp PR #28803, would
    be ``<oid>.lock`` there by default).
    """

    what: str  # "partial" or "lock"
    etag: str | None
    scheme: str = ""
    lock: str | None = None


def blob_temporary(name: str) -> BlobTemporary | None:
    """The partial download or lock a name in ``blobs/`` is, by the names their writers use; None otherwise.

    >>> blob_temporary("0" * 64 + ".downloadInProgress").scheme, blob_temporary("0" * 40 + ".part").lock
    ('resumable', '0000000000000000000000000000000000000000.lock')
    >>> blob_temporary("0" * 64), blob_temporary("notes.part")
    (None, None)
    """
    if name.endswith(".incomplete"):  # huggingface_hub, huggingface.js, swift-huggingface, hf-hub >= 1.0
        match = INCOMPLETE_RE.fullmatch(name)
        if match:
            return BlobTemporary("partial", match.group("etag"), "per-process" if match.group("token") else "resumable")
    if name.endswith(DOWNLOAD_IN_PROGRESS) and len(name) > len(DOWNLOAD_IN_PROGRESS):
        oid = name[: -len(DOWNLOAD_IN_PROGRESS)]
        return BlobTemporary("partial", oid, "resumable", oid + ".lock")
    if name.endswith("part"):
        match = RUST_PART_RE.fullmatch(name)
        if match:
            return BlobTemporary("partial", match.group("etag"), "resumable", match.group("etag") + ".lock")
    if name.endswith(".lock") and len(name) > len(".lock"):
        # hf-hub's lock_file(), swift's FileLock, llama.cpp's download lock (its common_file_lock,
        # `path + ".lock"`): a flock file, never deleted by its writer, nor by hfcache.
        return BlobTemporary("lock", name[: -len(".lock")])
    if (name.startswith("tmp_") or name.startswith(".")) and TEMP_BLOB_RE.fullmatch(name):
        return BlobTemporary("partial", None, "temporary")
    return None


XET_HASH_RE = re.compile(r"[0-9a-f]{64}")


PREFIX_RE = re.compile(r"[0-9a-f]{2}")


# A folder opened to list it and read its entries relative to it (never through a symlink).
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _expand(path: str, env: Mapping[str, str]) -> str:
    """``os.path.expandvars(os.path.expanduser(path))``, as the hub does, but reading ``env``."""
    return expandvars(expanduser(path, env), env)


def default_hf_home(env: Mapping[str, str]) -> str:
    """``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    hf_home = env_path(env, "HF_HOME")
    if hf_home is None:
        hf_home = os.path.join(xdg_cache_home(env), "huggingface")
    return os.path.abspath(_expand(hf_home, env))


def default_root(env: Mapping[str, str]) -> str:
    """Where huggingface_hub puts its cache, with the library's precedence.

    ``HF_HUB_CACHE`` > ``HUGGINGFACE_HUB_CACHE`` > ``$HF_HOME/hub`` >
    ``$XDG_CACHE_HOME/huggingface/hub`` > ``~/.cache/huggingface/hub``. Read from ``env`` at
    call time, never at import.

    >>> default_root({"HOME": "/home/me"})
    '/home/me/.cache/huggingface/hub'
    >>> default_root({"HOME": "/home/me", "HF_HOME": "/data/hf", "HUGGINGFACE_HUB_CACHE": "/legacy"})
    '/legacy'
    """
    explicit = env_path(env, "HF_HUB_CACHE") or env_path(env, "HUGGINGFACE_HUB_CACHE")
    if explicit is not None:
        return os.path.abspath(_expand(explicit, env))
    return os.path.join(default_hf_home(env), "hub")


def llama_cpp_root(env: Mapping[str, str]) -> str | None:
    """``$LLAMA_CACHE``, where llama.cpp writes the hub layout instead of the hub's own root; None when unset.

    llama.cpp (common/hf-cache.cpp, ``get_cache_directory``) takes ``LLAMA_CACHE`` first, then
    the hub's variables in the hub's order; like the hub, an empty variable counts as unset.
    It expands no ``~`` or ``$VAR`` in them (the shell does), so neither does this.

    >>> llama_cpp_root({"LLAMA_CACHE": "/models"}), llama_cpp_root({"LLAMA_CACHE": ""})
    ('/models', None)
    """
    value = env_path(env, "LLAMA_CACHE")
    return os.path.abspath(value) if value is not None else None


def default_roots(env: Mapping[str, str]) -> list[str]:
    """The hub's root (:func:`default_root`), then llama.cpp's ``$LLAMA_CACHE`` when it holds a hub cache.

    ``LLAMA_CACHE`` is one more hub-layout root (llama.cpp >= March 2026). It is listed only
    when it exists and looks like a hub cache: before that, llama.cpp kept a flat cache of
    its own there (``manifest=<org>=<repo>=<tag>.json``, ``*.gguf``), which is no hub cache.
    The same folder under two names is scanned once (:func:`hfcache.caches.scan.scan_caches`
    compares ``(st_dev, st_ino)``).
    """
    roots = [default_root(env)]
    llama = llama_cpp_root(env)
    if llama is None or llama in roots:
        return roots
    hub, real = os.path.realpath(roots[0]), os.path.realpath(llama)
    if real.startswith(hub.rstrip(os.sep) + os.sep):
        return roots  # a folder inside the hub cache (its .locks/, a repo) is never a cache of its own
    if looks_like_cache(names_in(llama), llama):
        roots.append(llama)
    return roots


def looks_like_cache(names: list[str], root: str) -> bool:
    """Recognise a hub cache by what is in it: repo folders, ``.locks/``, ``CACHEDIR.TAG`` or the shared store."""
    for name in names:
        if REPO_DIR_RE.fullmatch(name) or name in {".locks", "CACHEDIR.TAG"}:
            return True
        if name == SHARED_STORE_DIR and os.path.isfile(os.path.join(root, name, SHARED_STORE_MARKER)):
            return True
    return False


def check_root(path: str, *, explicit: bool) -> str | None:
    """Validate a root before scanning it; return its resolved path, or None for "nothing cached yet".

    A default root that does not exist yet is normal (nothing was ever downloaded). An explicit
    root that does not exist, is not a folder, cannot be read, or holds something that is not a
    hub cache (a home directory, ``$HF_HOME`` instead of ``$HF_HOME/hub``) is an error.
    """
    real = check_dir(path, explicit=explicit, title="cache directory")
    if real is None:
        return None
    given = os.path.abspath(path)
    try:
        names = os.listdir(real)
    except OSError as e:
        raise CacheUnreadable(f"cannot read cache directory {given}: {e.strerror or e}", path=given) from e
    names = [n for n in names if n not in FILES_TO_IGNORE]
    if names and not looks_like_cache(names, real):
        hint = ""
        if os.path.isdir(os.path.join(real, "hub")):
            hint = f" (did you mean {os.path.join(given, 'hub')}?)"
        raise NotACache(
            f"not a Hugging Face hub cache: {given} holds no repo folders, .locks/ or CACHEDIR.TAG{hint}",
            path=given,
        )
    return real


# Refs with a slash that a URI's revision takes whole (huggingface_hub's _SPECIAL_REFS_REVISION_REGEX).
_SPECIAL_REFS = re.compile(r"^refs/(?:convert/[\w.-]+|pr/\d+)")
# huggingface_hub's cache id (``hf cache ls`` prints it): ``model/org/name``, a singular type first.
_CACHE_ID = re.compile(rf"^({'|'.join(REPO_TYPES.values())})/([^/@]+/[^/@]+)(?:@(.+))?$")


def parse_hf_uri(text: str) -> Uri | None:
    """``hf://[models|datasets|spaces|kernels/]org/name[@revision][/path]``, as ``hf cache rm`` reads it; None otherwise.

    The grammar of huggingface_hub's own ``parse_hf_uri``: a path after the repo names a file
    (or a folder) in it; ``@`` separates a revision only right after ``org/name`` (an ``@``
    deeper is part of a file name); ``refs/pr/N`` and ``refs/convert/...`` are taken whole, and
    a revision may be %-encoded (``refs%2Fpr%2F1``). Beyond it, a repo with no organisation
    (``gpt2``, cached before the Hub moved such repos) is named too, taking a path only after
    a revision (``hf://gpt2@main/config.json``). ``hf cache ls``'s ids (``model/org/name``, with
    ``@revision`` too) are read as well. A singular type prefix (``hf://model/...``) names
    nothing (the caller refuses it, as the hub does).

    >>> parse_hf_uri("hf://datasets/org/data@v1"), parse_hf_uri("hf://org/m"), parse_hf_uri("org/m")
    (Uri(id='org/data', revision='v1', type='dataset', file=None), Uri(id='org/m', revision=None, type='model', file=None), None)
    >>> parse_hf_uri("hf://org/m/onnx/model.onnx")
    Uri(id='org/m', revision=None, type='model', file='onnx/model.onnx')
    >>> parse_hf_uri("hf://org/m@refs/pr/1/config.json")
    Uri(id='org/m', revision='refs/pr/1', type='model', file='config.json')
    >>> parse_hf_uri("hf://gpt2@refs%2Fpr%2F1")
    Uri(id='gpt2', revision='refs/pr/1', type='model', file=None)
    >>> parse_hf_uri("dataset/org/data@v1")
    Uri(id='org/data', revision='v1', type='dataset', file=None)
    """
    cache_id = _CACHE_ID.match(text)
    if cache_id:
        return Uri(cache_id.group(2), cache_id.group(3), cache_id.group(1))
    if not text.startswith("hf://"):
        return None
    rest = text[len("hf://") :]
    head, _, tail = rest.partition("/")
    kind_type = "model"
    if head in REPO_TYPES:
        if not tail.strip("/"):
            return Uri("")  # hf://models/ names nothing: the caller refuses it
        rest, kind_type = tail, REPO_TYPES[head]
    elif head in REPO_TYPES.values() and tail:
        return Uri("")  # hf://model/org/name: the hub asks for the plural, and so do we
    at = rest.find("@")
    if at == -1 or rest[:at].count("/") > 1:  # no revision; an "@" past org/name is a file name's
        parts = rest.rstrip("/").split("/", 2)
        return Uri("/".join(parts[:2]), None, kind_type, parts[2] if len(parts) > 2 else None)
    ident, after = rest[:at], rest[at + 1 :]
    special = _SPECIAL_REFS.match(after)
    if special:
        revision, path = special.group(), after[special.end() :].removeprefix("/")
    else:
        revision, _, path = after.partition("/")
    # "@" alone: revision "" (refused by the caller)
    return Uri(ident.rstrip("/"), unquote(revision), kind_type, path.rstrip("/") or None)
