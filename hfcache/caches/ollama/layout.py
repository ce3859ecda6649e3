"""Where Ollama keeps its models, what the names in it mean, and how its manifests read.

Read from Ollama's source (ollama/ollama at fb307609, Aug 2026; CACHE-LAYOUTS.md section 7.3)::

    <root>/manifests/<host>/<namespace>/<model>/<tag>   a Docker v2 manifest (JSON) per tag
    <root>/blobs/sha256-<hex>                           a layer or config, content-addressed, shared
    <root>/blobs/sha256-<hex>-partial                   a download's data file (pre-sized, sparse)
    <root>/blobs/sha256-<hex>-partial-<N>               the JSON state of its part N
    <root>/blobs/sha256-<hex>.tmp                       a download of x/transfer (tensor models), resumed

- the root: ``envconfig.Models()``, ``$OLLAMA_MODELS`` (``envconfig.Var``: spaces and quotes
  trimmed, nothing expanded), else ``$HOME/.ollama/models``; the Linux service of
  ``scripts/install.sh`` runs as user ``ollama`` with home ``/usr/share/ollama``;
- names: ``types/model/name.go``: ``ParseName`` (``host/namespace/model:tag``, the default host
  ``registry.ollama.ai``, namespace ``library``, tag ``latest``), ``isValidPart`` (what each part
  may hold), ``ParseNameFromFilepath`` (the four folders of a manifest), ``DisplayShortest``
  (what ``ollama list`` prints: ``llama3:latest``, ``user/model:tag``, ``hf.co/org/repo:tag``);
- blobs: ``manifest/paths.go`` ``BlobsPath`` (``sha256[:-]<64 hex>``, ``:`` becomes ``-``);
- manifests: ``manifest/manifest.go`` ``Manifest`` (``schemaVersion``, ``mediaType``, ``config``,
  ``layers``; each ``Layer`` a ``mediaType``, ``digest``, ``size``, ``from``, ``name``), decoded by
  Go's ``encoding/json`` (``ParseNamedManifest``); ``Manifest.Size`` sums the layers' and the
  config's ``size``: ``ollama list``'s SIZE.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from hfcache.caches._common import env_path, expanduser

KIND = "ollama"
TITLE = "Ollama models"
MANIFESTS = "manifests"
BLOBS = "blobs"
# hfcache's own folder in an Ollama root, beside manifests/ and blobs/ (which Ollama never
# lists): blobs being removed wait there while the manifests are read once more.
TRASH = ".hfcache-trash"

# types/model/name.go: DefaultName
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# The Linux service's store (scripts/install.sh makes user ``ollama`` with home /usr/share/ollama).
SERVICE_ROOT = "/usr/share/ollama/.ollama/models"
# Where hfcache looks for it instead (a service installed elsewhere; tests point it away).
SERVICE_VARIABLE = "HFCACHE_OLLAMA_SERVICE_ROOT"

# types/model/name.go isValidPart: a letter, digit or "_" first; then also "-", "." (not in a
# namespace) and ":" (host only); lengths 1-350 (host) or 1-80.
_PART = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}
# manifest/paths.go BlobsPath: the digests Ollama maps to a blob, and the file name it maps them to.
DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
BLOB_RE = re.compile(r"sha256-[0-9a-fA-F]{64}")
# server/download.go: the data file of a download and the state of its parts; x/transfer/download.go: .tmp
PARTIAL_RE = re.compile(r"(sha256-[0-9a-fA-F]{64})(-partial(?:-[0-9]+)?|\.tmp)")
# Temporary files Ollama's create and quantize write into blobs/ and remove when done
# (os.CreateTemp: the prefix, then a random number): manifest/layer.go NewLayer ("sha256-"),
# server/create.go ("split-copy"), server/quantization.go ("projector-metadata", "compat-tensors").
TEMP_RE = re.compile(r"(?:sha256-|split-copy|projector-metadata|compat-tensors)[0-9]{1,20}")


def valid_part(kind: str, text: str) -> bool:
    """``isValidPart``: whether ``text`` may be this part (host, namespace, model, tag) of a name.

    >>> valid_part("namespace", "library"), valid_part("namespace", "a.b"), valid_part("host", "localhost:11434")
    (True, False, True)
    """
    return _PART[kind].fullmatch(text) is not None


class Name(NamedTuple):
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def valid(self) -> bool:
        """``Name.IsValid``: every part present and valid."""
        return all(valid_part(k, v) for k, v in zip(("host", "namespace", "model", "tag"), self, strict=True))

    @property
    def id(self) -> str:
        """The model as ``ollama list`` names it, without the tag (``DisplayShortest``).

        >>> Name("registry.ollama.ai", "library", "llama3", "8b").id, Name("REGISTRY.ollama.ai", "user", "m", "x").id
        ('llama3', 'user/m')
        >>> Name("hf.co", "bartowski", "Tiny-GGUF", "Q4_K_M").id
        'hf.co/bartowski/Tiny-GGUF'
        """
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}"
        return self.model


def parse_name(text: str) -> Name:
    """``ParseName``: ``[[host/]namespace/]model[:tag]``, the missing parts from ``DefaultName``.

    A part promised by a separator but empty makes the name invalid (``cutPromised``).

    >>> parse_name("llama3")
    Name(host='registry.ollama.ai', namespace='library', model='llama3', tag='latest')
    >>> parse_name("hf.co/org/repo:Q4")
    Name(host='hf.co', namespace='org', model='repo', tag='Q4')
    """
    missing = "!MISSING!"  # name.go MissingPart: never valid
    tag = ""
    if text.rfind(":") > text.rfind("/"):
        text, _, tag = text.rpartition(":")
        tag, text = tag or missing, text or missing
    parts = text.split("/")
    if len(parts) > 3:  # everything before the last two slashes is the host (a scheme://host too)
        parts = ["/".join(parts[:-2]), *parts[-2:]]
    parts = [p or missing for p in parts]
    model = parts[-1]
    namespace = parts[-2] if len(parts) > 1 else DEFAULT_NAMESPACE
    host = parts[0] if len(parts) > 2 else DEFAULT_HOST
    if "://" in host:
        host = host.split("://", 1)[1]
    return Name(host, namespace, model, tag or DEFAULT_TAG)


def name_from_parts(parts: list[str]) -> Name | None:
    """``ParseNameFromFilepath``: the name of ``manifests/<host>/<namespace>/<model>/<tag>``, or None when invalid."""
    if len(parts) != 4:
        return None
    name = Name(*parts)
    return name if name.valid else None


def blob_name(digest: str) -> str | None:
    """``BlobsPath``: the file in ``blobs/`` holding ``digest`` (``sha256:<hex>``), or None when Ollama refuses it."""
    match = DIGEST_RE.fullmatch(digest)
    return f"sha256-{match.group(1)}" if match else None


# ---------------------------------------------------------------------------------------------
# Roots


def _var(env: Mapping[str, str], name: str) -> str | None:
    """``envconfig.Var``: the value with spaces, then quotes, trimmed; empty counts as unset."""
    value = (env.get(name) or "").strip().strip("\"'")
    return value or None


def default_root(env: Mapping[str, str]) -> str:
    """``envconfig.Models()``: ``$OLLAMA_MODELS`` as it is (no ``~`` expanded), else ``$HOME/.ollama/models``.

    >>> default_root({"HOME": "/home/me"}), default_root({"HOME": "/h", "OLLAMA_MODELS": " '/data/o' "})
    ('/home/me/.ollama/models', '/data/o')
    """
    return os.path.abspath(_var(env, "OLLAMA_MODELS") or expanduser("~/.ollama/models", env))


def default_roots(env: Mapping[str, str]) -> list[str]:
    """The user's store, then the Linux service's (``/usr/share/ollama/.ollama/models``) when it exists."""
    roots = [default_root(env)]
    service = os.path.abspath(env_path(env, SERVICE_VARIABLE) or SERVICE_ROOT)
    if service not in roots and os.path.isdir(service):
        roots.append(service)
    return roots


def looks_like_cache(root: str) -> bool:
    """A folder holding ``manifests/``, or ``blobs/`` holding nothing but what Ollama names there.

    (``PruneDirectory`` removes ``manifests/`` itself once the last model went; ``blobs/`` stays.)
    """
    if os.path.isdir(os.path.join(root, MANIFESTS)):
        return True
    try:
        names = os.listdir(os.path.join(root, BLOBS))
    except OSError:
        return False
    return all(BLOB_RE.fullmatch(n) or PARTIAL_RE.fullmatch(n) or TEMP_RE.fullmatch(n) for n in names)


# ---------------------------------------------------------------------------------------------
# Manifests


class ManifestError(ValueError):
    """A manifest Ollama's ``ParseNamedManifest`` would fail on."""


class Manifest(NamedTuple):
    """What hfcache needs of a manifest: each layer's (and the config's) ``(digest, size)``, as ``Manifest.Size`` adds them.

    ``named`` also holds every digest string any of the document's case variants of a field
    gave (Go decodes ``"Layers"`` into ``layers`` too, the last one winning): what must never
    be deleted while this manifest is there.
    """

    layers: tuple[tuple[str, int], ...]
    named: frozenset[str]

    @property
    def size(self) -> int:
        """``Manifest.Size``: ``ollama list``'s SIZE."""
        return sum(size for _, size in self.layers)

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(d for d, _ in self.layers if d)


class _Object(list[tuple[str, Any]]):
    """A JSON object: its pairs in document order (an array stays a plain list)."""


_INT64 = (-(2**63), 2**63 - 1)


def _values(obj: _Object, name: str) -> list[Any]:
    """Every value of ``name`` in an object, in document order.

    Go's decoder matches keys with Unicode simple case folding (``layerſ`` is ``layers``, the
    Kelvin sign ``K`` is ``k``): ``casefold`` does, where ``lower`` would miss them, and a blob a
    manifest names that way would be taken for one nobody names.
    """
    return [v for k, v in obj if k.casefold() == name]


def _typed(obj: _Object, name: str, want: type, what: str) -> Any:
    """The last non-null value of ``name``, each checked to be what Go decodes into the field."""
    value = None
    for v in _values(obj, name):
        if v is None:
            continue
        if not isinstance(v, want) or isinstance(v, bool):
            raise ManifestError(f"{what}.{name}: {json.dumps(v)[:40]} is not {'a string' if want is str else 'an integer'}")
        if isinstance(v, int) and not _INT64[0] <= v <= _INT64[1]:
            raise ManifestError(f"{what}.{name}: out of int64's range")
        value = v
    return value


def _digests(value: Any) -> set[str]:
    """Every digest string a layer (or a list of them) names, whatever else is wrong with it."""
    if isinstance(value, _Object):
        return {v for v in _values(value, "digest") if isinstance(v, str) and v}
    if isinstance(value, list):
        return {d for v in value for d in _digests(v)}
    return set()


def _layer(value: Any, what: str) -> tuple[str, int]:
    if value is None:
        return ("", 0)  # a JSON null decodes to an empty Layer
    if not isinstance(value, _Object):
        raise ManifestError(f"{what}: not an object")
    for key in ("mediatype", "from", "name"):
        _typed(value, key, str, what)
    return (_typed(value, "digest", str, what) or "", _typed(value, "size", int, what) or 0)


def parse_manifest(data: bytes) -> Manifest:
    """A manifest's layers as Go's ``json.Decoder`` would decode them into ``manifest.Manifest``.

    Raises :class:`ManifestError` wherever Ollama's ``ParseNamedManifest`` fails: not JSON (a
    file truncated mid-write, an empty one), not an object, a field of the wrong type (a
    string ``schemaVersion``, a size with a fraction). What follows the first JSON value is
    never read, as the decoder leaves it.

    >>> m = parse_manifest(b'{"config":{"digest":"sha256:aa","size":2},"layers":[{"digest":"sha256:bb","size":5}]}')
    >>> m.layers, m.size
    ((('sha256:bb', 5), ('sha256:aa', 2)), 7)
    """
    text = data.decode("utf-8", "replace")  # (Go replaces invalid UTF-8 the same way)
    try:
        doc, _ = json.JSONDecoder(object_pairs_hook=_Object).raw_decode(text.lstrip(" \t\r\n"))
    except ValueError as e:
        raise ManifestError(f"not JSON ({e})") from None
    if doc is None:
        doc = _Object()  # JSON null decodes to an empty Manifest
    if not isinstance(doc, _Object):
        raise ManifestError("not a JSON object")
    _typed(doc, "schemaversion", int, "manifest")
    _typed(doc, "mediatype", str, "manifest")
    layers_values = _values(doc, "layers")
    for value in layers_values:
        if value is not None and (isinstance(value, _Object) or not isinstance(value, list)):
            raise ManifestError("manifest.layers: not an array")
    last = layers_values[-1] if layers_values else None
    layers = [_layer(v, f"manifest.layers[{i}]") for i, v in enumerate(last or [])]
    # The config: each occurrence decodes into the same struct, field by field.
    config = _Object()
    for value in _values(doc, "config"):
        if value is not None and not isinstance(value, _Object):
            raise ManifestError("manifest.config: not an object")
        config.extend(value or [])
    layers.append(_layer(config, "manifest.config"))
    named = _digests(layers_values) | _digests(_values(doc, "config"))
    return Manifest(tuple(layers), frozenset(named))
