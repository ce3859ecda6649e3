"""The registry of cache kinds: the built-in ones, then those of the ``hfcache.caches`` entry points.

Other packages add kinds through the entry-point group ``hfcache.caches``; an entry point names
a class or factory (called with no arguments) or an instance::

    [project.entry-points."hfcache.caches"]
    lmstudio = "hfcache_lmstudio:LmStudioCache"
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from hfcache.caches.datasets import DATASETS
from hfcache.caches.huggingface.kind import HUB
from hfcache.caches.kagglehub import KAGGLEHUB
from hfcache.caches.keras import KERAS
from hfcache.caches.llamacpp_flat import LLAMA_CPP_FLAT
from hfcache.caches.modelscope import MODELSCOPE
from hfcache.caches.ollama.kind import OLLAMA
from hfcache.caches.protocol import REQUIRED, CacheKind, complete
from hfcache.caches.tfhub import TFHUB
from hfcache.caches.torch import TORCH
from hfcache.caches.transformers_legacy import TRANSFORMERS_LEGACY
from hfcache.caches.vllm import VLLM
from hfcache.caches.xet import XET
from hfcache.errors import UsageError

ENTRY_POINT_GROUP = "hfcache.caches"


# A --cache-dir is scanned as the first kind that recognises it: ModelScope, TF Hub and vLLM come
# before Keras, datasets and kagglehub, which also take a models/ or datasets/ folder, or a
# "*.lock" entry, for theirs (their own recognisers are strict).
BUILTIN: tuple[CacheKind, ...] = (
    HUB,
    TORCH,
    MODELSCOPE,
    TFHUB,
    VLLM,
    KERAS,
    XET,
    DATASETS,
    KAGGLEHUB,
    OLLAMA,
    TRANSFORMERS_LEGACY,
    LLAMA_CPP_FLAT,
)


KINDS: dict[str, CacheKind] = {k.kind: k for k in BUILTIN}


@dataclass(frozen=True)
class Registry:
    """The kinds available, built-in first, and what went wrong loading plug-ins (one line each)."""

    kinds: dict[str, CacheKind] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def _load_plugin(ep: EntryPoint) -> CacheKind:
    obj = ep.load()
    # A class or a factory function is called with no arguments; an instance is used as is.
    is_instance = not isinstance(obj, type) and all(hasattr(obj, name) for name in REQUIRED)
    return complete(obj if is_instance or not callable(obj) else obj())


def load_registry(plugins: Iterable[EntryPoint] | None = None) -> Registry:
    """Built-in kinds plus those of the ``hfcache.caches`` entry points.

    A plug-in that fails to load, is not a cache kind, or reuses a taken name is left out,
    and the reason is kept in ``problems``: one broken plug-in never stops a scan.
    """
    kinds = dict(KINDS)
    problems: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP) if plugins is None else plugins:
        try:
            kind = _load_plugin(ep)
        except Exception as e:  # noqa: BLE001 - third-party code: any failure is reported, never fatal
            problems.append(f"cache plug-in {ep.name!r} ({ep.value}) not loaded: {type(e).__name__}: {e}")
            continue
        if kind.kind in kinds:
            problems.append(f"cache plug-in {ep.name!r} ({ep.value}) not loaded: kind {kind.kind!r} already exists")
            continue
        kinds[kind.kind] = kind
        if not kind.shapes:
            problems.append(
                f"cache plug-in {ep.name!r} ({ep.value}) declares no deletion shapes: its caches are scanned, never pruned"
            )
    return Registry(kinds, tuple(problems))


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The registry of this process (entry points are read once)."""
    return load_registry()


def select_kinds(names: Iterable[str] | None, reg: Registry) -> list[CacheKind]:
    """The kinds named (each once, in order), or every kind when None; an unknown name is a :class:`UsageError`."""
    if names is None:
        return list(reg.kinds.values())
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        if name not in reg.kinds:
            raise UsageError(f"unknown cache kind {name!r}; known: {', '.join(reg.kinds)}")
    return [reg.kinds[n] for n in chosen]
