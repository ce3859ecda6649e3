"""vLLM's torch.compile cache: one folder per compiled artefact, keyed on the engine's configuration.

Layout reference: ``CACHE-LAYOUTS.md`` section 7.7, checked against vllm-project/vllm
``vllm/envs.py`` (``VLLM_CACHE_ROOT``), ``vllm/compilation/backends.py``
(``VllmBackend.__call__``, ``CompilerManager.initialize_cache``),
``vllm/compilation/compiler_interface.py`` (``InductorAdaptor.initialize_cache``) and
``vllm/compilation/decorators.py`` (the AOT path, ``save_aot_compiled_function``)::

    <root>/torch_compile_cache/<10 hex>/                 an artefact (hash of env, config, code, compiler)
        rank_<rank>_<dp rank>/[<prefix>/]                  cache_key_factors.json, computation_graph.py,
                                                           vllm_compile_cache.py, inductor_cache/, triton_cache/
    <root>/torch_compile_cache/torch_aot_compile/<sha256>/   an AOT artefact (VLLM_USE_AOT_COMPILE)
        inductor_cache/, rank_<rank>_<dp rank>/model       (saved as model.<pid>.tmp, then renamed)

Everything an engine reads or maps from the cache (the graphs, Inductor's compiled ``.so``
files, Triton's kernels: TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR point inside) lies in
its artefact's folder, the unit; so the in-use checks of execution see a running engine, and
a folder goes whole (moved aside first: an engine never finds half of one). Its age is its
newest access time. The rest of vLLM's cache root (``xla_cache/``, ``assets/``,
``deep_gemm/``, ``modelinfos/``, ...) is not a compile cache: reported, never an item.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

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
    measure,
    names_in,
    open_and_scan,
    pid_alive,
    xdg_cache_home,
)
from hfcache.caches.deletion import TRASH, TrashDeletion, trash_left, young
from hfcache.model import CacheInventory, PartialFile, ScanWarning
from hfcache.units import describe_age

if TYPE_CHECKING:
    from hfcache.fs.ops import Tree

KIND = "vllm"
TITLE = "vLLM compile cache"
COMPILE = "torch_compile_cache"
AOT = "torch_aot_compile"
_HASH = "[0-9a-f]{10,64}"  # 10 hex (md5 or sha256, cut) for the JIT folders; a whole sha256 for AOT ones
_HASH_RE = re.compile(_HASH)
_RANK_RE = re.compile(r"rank_\d+_\d+")
_SAVING_RE = re.compile(r"model\.\d+\.tmp")


def default_root(env: Mapping[str, str]) -> str:
    """``envs.VLLM_CACHE_ROOT``: ``$VLLM_CACHE_ROOT``, else ``$XDG_CACHE_HOME/vllm``, else ``~/.cache/vllm`` (``~`` expanded).

    vLLM takes an empty variable as it is (a relative ``vllm`` folder); here it counts as unset.

    >>> default_root({"HOME": "/home/me"}), default_root({"HOME": "/h", "XDG_CACHE_HOME": "/x"})
    ('/home/me/.cache/vllm', '/x/vllm')
    """
    explicit = env_path(env, "VLLM_CACHE_ROOT")
    return os.path.abspath(expanduser(explicit, env) if explicit else os.path.join(xdg_cache_home(env), "vllm"))


class _Scan(ScanState):
    def compile_cache(self, folder: str) -> None:
        for entry in list_dir(folder, self.warnings):
            if entry.name == AOT and is_dir(entry):
                self.artefacts(entry.path, "aot-compile", f"{AOT}/")
            elif not self.artefact(entry, "torch-compile", ""):
                self.unknown(entry.path, "not a compiled artefact of vLLM's")

    def artefacts(self, folder: str, item_type: str, prefix: str) -> None:
        for entry in list_dir(folder, self.warnings):
            if not self.artefact(entry, item_type, prefix):
                self.unknown(entry.path, "not a compiled artefact of vLLM's")

    def artefact(self, entry: os.DirEntry[str], item_type: str, prefix: str) -> bool:
        """A hash folder holding a rank folder (or, AOT, Inductor's cache): one item, its folder the unit."""
        if not is_dir(entry) or not _HASH_RE.fullmatch(entry.name):
            return False
        inside = list_dir(entry.path, self.warnings)
        ranks = [e for e in inside if is_dir(e) and _RANK_RE.fullmatch(e.name)]
        if not ranks and not (prefix and any(e.name == "inductor_cache" for e in inside)):
            return False
        item_id = prefix + entry.name
        for rank in ranks:
            for saving in list_dir(rank.path, self.warnings):
                if _SAVING_RE.fullmatch(saving.name) and not is_dir(saving):
                    # save_aot_compiled_function, not renamed yet: held while a process of its pid runs
                    # here (the engine's, or one that reuses its pid: then it only waits longer).
                    m = measure(saving.path, self.seen, self.warnings)
                    pid = int(saving.name.split(".")[1])
                    running = True if pid > 0 and pid_alive(pid) else None
                    self.partials.append(PartialFile(saving.path, item_id, m.size, m.mtime, "temporary", None, running))
        unit = Unit(entry.name, (entry.path,))
        self.items.append(build_item(KIND, item_id, item_type, entry.path, [unit], self.seen, owns_path=True))
        return True


def looks_like_cache(root: str) -> bool:
    return COMPILE in names_in(root)


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one vLLM cache root (``VLLM_CACHE_ROOT``): its ``torch_compile_cache/`` only.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    parent = os.path.dirname(os.path.abspath(root))
    hint = f" (did you mean {parent}?)" if os.path.basename(os.path.abspath(root)) == COMPILE else ""
    refusal = f"holds no {COMPILE}/{hint}"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    state = _Scan(KIND, real, warnings)
    for entry in entries:
        if entry.name == COMPILE and is_dir(entry):
            state.compile_cache(entry.path)
        elif entry.name == TRASH:
            warnings.append(trash_left(entry.path))
        else:
            why = "not a compile cache (vLLM keeps other things in its cache root): left alone"
            warnings.append(ScanWarning(entry.path, why, blocks_deletion=False))
    protected = (os.path.join(real, COMPILE), os.path.join(real, COMPILE, AOT), os.path.join(real, TRASH))
    return inventory(KIND, TITLE, real, state.items, warnings, protected, state.partials)


class VllmDeletion(TrashDeletion):
    """:class:`TrashDeletion`, and never an artefact an engine wrote into within the grace period."""

    def item_busy(
        self, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float, now: float
    ) -> str | None:
        for partial in cache.partial_files:
            if partial.item_id != item_id:
                continue
            if partial.lock_held:
                return f"an engine is saving it ({os.path.basename(partial.path)}: its process runs)"
            age = young(tree, partial.path, now, grace)
            if age:
                return f"an engine may be saving it ({os.path.basename(partial.path)} modified {age} ago)"
        for item in cache.items:
            if item.path == path and now - item.last_modified < grace:
                return f"written {describe_age(max(0.0, now - item.last_modified))} ago: an engine may still be compiling into it"
        return None


VLLM = FunctionKind(
    KIND,
    TITLE,
    ("torch-compile", "aot-compile", "unknown"),
    lambda env: [default_root(env)],
    looks_like_cache,
    scan,
    shapes=(
        rf"{COMPILE}/{_HASH}",  # a compiled artefact
        rf"{COMPILE}/{AOT}/{_HASH}",  # an AOT-compiled one
        rf"{COMPILE}/{AOT}/{_HASH}/rank_\d+_\d+/model\.\d+\.tmp",  # an AOT save that never finished
    ),
    deletion=VllmDeletion(),
)
