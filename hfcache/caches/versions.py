"""One version parser for every cache kind (CACHE-LAYOUTS.md section 8).

Two questions, two functions:

* :func:`parse_version` - is this whole string (a git tag, a ref, a folder name) a version?
  PEP 440 and semver, with or without a leading ``v``: ``v1.2.0``, ``2.0``, ``1.2.0-rc.1``.
  A bare integer counts only where the layout says versions are integers (kagglehub, TF Hub).
* :func:`split_version` - does this *name* (``resnet50_v1.5``, ``..._no_top_v2.h5``) carry a
  version token? Only an explicit ``v<digits>`` token, else a dotted multi-part number; never a
  bare number inside a name (``resnet50``, ``224``, ``8b``).

Versions come back normalised by ``packaging`` (``v1.2.0`` -> ``1.2.0``), so they sort with
:func:`version_key`.

>>> parse_version("v0.10.0"), parse_version("main"), parse_version("7"), parse_version("7", integers=True)
('0.10.0', None, None, '7')
>>> split_version("resnet50_v1.5-0676ba61.pth")
('resnet50', '1.5')
>>> split_version("resnet50-0676ba61.pth")
('resnet50', None)
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

# A whole-string version: digits first (after an optional v), at least two parts unless a
# "v" says it is a version ("v2"); pre/post/dev/local parts are left to packaging to judge.
_DOTTED_RE = re.compile(r"(?i)v?\d+(?:\.\d+)+(?:[-_.+]?[a-z0-9][a-z0-9.+_-]*)?")
_V_RE = re.compile(r"(?i)v\d+(?:[-_.+]?[a-z0-9][a-z0-9.+_-]*)?")
_INT_RE = re.compile(r"\d+")

# Tokens inside a name (section 8, steps 2 and 3).
_HASH_SUFFIX_RE = re.compile(r"-[0-9a-f]{8,}$")
_V_TOKEN_RE = re.compile(r"(?i)(?:^|[_\-.])(v(\d+(?:\.\d+){0,3}))(?=$|[_\-.])")
_DOTTED_TOKEN_RE = re.compile(r"(?:^|[_\-])(\d+\.\d+(?:\.\d+){0,2})(?=$|[_\-])")
# Extensions stripped before looking for a token: one, or a compound archive one.
_EXT_RE = re.compile(r"(?i)\.(?:tar\.(?:gz|bz2|xz|zst)|[a-z][a-z0-9]{0,5})$")


def _normalise(text: str) -> str | None:
    try:
        return str(Version(text))
    except InvalidVersion:
        return None


def parse_version(text: str, *, integers: bool = False) -> str | None:
    """The normalised version when the whole of ``text`` is one, else None.

    >>> [parse_version(t) for t in ("1.2.0", "v1.2", "V2", "2.0.0-rc.1", "1.0+cu118", "v0.10.0")]
    ['1.2.0', '1.2', '2', '2.0.0rc1', '1.0+cu118', '0.10.0']
    >>> [parse_version(t) for t in ("main", "master", "224", "8b", "resnet50", "v", "1.2.x", "")]
    [None, None, None, None, None, None, None, None]
    """
    if integers and _INT_RE.fullmatch(text):
        return str(int(text))
    if not (_DOTTED_RE.fullmatch(text) or _V_RE.fullmatch(text)):
        return None
    return _normalise(text)


def split_extension(name: str) -> tuple[str, str]:
    """``("foo", ".tar.gz")``: the extension a version token is looked for before.

    >>> split_extension("foo.tar.gz"), split_extension("model_v1.5"), split_extension("README")
    (('foo', '.tar.gz'), ('model_v1.5', ''), ('README', ''))
    """
    match = _EXT_RE.search(name)
    return (name[: match.start()], match.group(0)) if match else (name, "")


def strip_name(name: str) -> str:
    """A file name without its hash suffix and extension (section 8, step 1).

    >>> strip_name("resnet18-5c106cde.pth"), strip_name("foo.tar.gz"), strip_name("mobilenet_1_0_224_tf.h5")
    ('resnet18', 'foo', 'mobilenet_1_0_224_tf')
    """
    name = _EXT_RE.sub("", name)
    return _HASH_SUFFIX_RE.sub("", name)


def split_version(name: str) -> tuple[str, str | None]:
    """``(name without its version token, version)``; ``(stripped name, None)`` when there is none.

    The last explicit ``v`` token wins; otherwise a dotted number of two to four parts.
    Names whose remainders are equal are versions of one model; nothing else is.

    >>> split_version("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5")
    ('weights_mobilenet_v3_large_224_1.0_float_no_top', '2')
    >>> split_version("pytorch_vision_v0.10.0")
    ('pytorch_vision', '0.10.0')
    >>> split_version("model_1.0_224")
    ('model_224', '1.0')
    >>> [split_version(n)[1] for n in ("resnet50.h5", "efficientnetb0_notop.h5", "llama-8b", "vgg16-397923af.pth")]
    [None, None, None, None]
    """
    readings = _candidates(name)
    return readings[0] if readings else (strip_name(name), None)


def _candidates(name: str) -> list[tuple[str, str]]:
    """Every way to read a version token out of ``name``: ``(remainder, version)``, last token first."""
    base = strip_name(name)
    matches = list(_V_TOKEN_RE.finditer(base)) or list(_DOTTED_TOKEN_RE.finditer(base))
    out = []
    for match in reversed(matches):
        version = _normalise(match.group(2) if match.re is _V_TOKEN_RE else match.group(1))
        if version is None:  # pragma: no cover - the patterns only admit valid versions
            continue
        start, end = match.span(1)
        if start > 0:
            start -= 1
        elif end < len(base):
            end += 1
        out.append((base[:start] + base[end:], version))
    return out


def group_versions(names: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """Which names are versions of one model: ``name -> (group, version)``, group None when alone.

    Names group when they are equal once one version token is removed (or one has no token
    at all), so an architecture generation (``mobilenet_v3``) does not split a family whose
    real version comes later (``..._no_top_v2``). A name that groups with nothing keeps the
    version :func:`split_version` reads in it.

    >>> g = group_versions(["m_v3_large_no_top.h5", "m_v3_large_no_top_v2.h5", "mobilenet_v2_1.0_224.h5"])
    >>> g["m_v3_large_no_top.h5"], g["m_v3_large_no_top_v2.h5"]
    (('m_v3_large_no_top', None), ('m_v3_large_no_top', '2'))
    >>> g["mobilenet_v2_1.0_224.h5"]
    (None, '2')
    """
    readings = {n: _candidates(n) for n in names}
    counts: dict[str, int] = {}
    for n in names:
        for key in {strip_name(n), *(r for r, _ in readings[n])}:
            counts[key] = counts.get(key, 0) + 1
    out: dict[str, tuple[str | None, str | None]] = {}
    for n in names:
        shared = next(((r, v) for r, v in readings[n] if counts[r] > 1), None)
        if shared is not None:
            out[n] = shared
        elif counts[strip_name(n)] > 1:
            out[n] = (strip_name(n), None)
        else:
            out[n] = (None, split_version(n)[1])
    return out


def version_key(version: str) -> Version:
    """Sort key for versions this module returned.

    >>> sorted(["1.10", "1.9", "2.0rc1"], key=version_key)
    ['1.9', '1.10', '2.0rc1']
    """
    return Version(version)
