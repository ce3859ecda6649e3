"""Plans as plain data: the JSON of ``--plan-out`` and ``--json``, and reading a saved plan back, strictly.

JSON contract version 1::

    {"version": 1, "dry_run": bool, "reclaim_bytes": int, "delete": [UNIT, ...], "keep": [UNIT, ...]}
    UNIT: {"kind", "id", "revision", "path", "reclaim_bytes", "reasons": [str, ...]}

After a real run each delete UNIT also has "status" (deleted | skipped | failed), "freed_bytes"
and "error", and the plan has "freed_bytes" and "failed". Also written (and read back by
``hfcache apply``): "root", "what", "type", "version", "refs", "size_bytes", "item_removed",
"file" (a file unit's name in the repo, else null),
and the times both as ISO strings and as epoch seconds. Reasons are written as sentences
(:func:`hfcache.output.words.describe`) and read back as written.

Read back, every field is checked for its type and range, so a hand-edited (or hostile) plan
is one line and exit 2, never a crash, a coercion ("false" is true) or a NaN that makes every
time comparison false.
"""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

from hfcache.errors import PlanFileError
from hfcache.output.words import describe_all, recorded
from hfcache.units import iso

if TYPE_CHECKING:
    from hfcache.plan.decisions import Execution, Plan, PlanUnit, UnitResult


def unit_to_dict(unit: PlanUnit, result: UnitResult | None = None) -> dict[str, Any]:
    """One unit; with ``result``, what executing it did (``status``, ``freed_bytes``, ``error``)."""
    out: dict[str, Any] = {
        "kind": unit.kind,
        "id": unit.id,
        "revision": unit.revision,
        "path": unit.path,
        "reclaim_bytes": unit.reclaim_bytes,
        "reasons": describe_all(unit.reasons),
        "root": unit.root,
        "what": unit.what,
        "type": unit.type,
        "version": unit.version,
        "refs": list(unit.refs),
        "size_bytes": unit.size_bytes,
        "item_removed": unit.item_removed,
        "file": unit.file,
        "last_accessed": iso(unit.last_accessed),
        "last_modified": iso(unit.last_modified),
        "last_accessed_epoch": unit.last_accessed,
        "last_modified_epoch": unit.last_modified,
    }
    if result is not None:
        out.update(status=result.status, freed_bytes=result.freed_bytes, error=result.error)
    return out


def plan_to_dict(plan: Plan, execution: Execution | None = None) -> dict[str, Any]:
    """A plan, or with ``execution`` the record of its run, in the version-1 plan contract."""
    from hfcache.plan.decisions import PLAN_VERSION

    results = execution.results if execution is not None else (None,) * len(plan.delete)
    out: dict[str, Any] = {
        "version": PLAN_VERSION,
        "dry_run": execution is None,
        "reclaim_bytes": plan.reclaim_bytes,
        "created_at": iso(plan.created_at),
        "created_at_epoch": plan.created_at,
        "policy": list(plan.policy),
        "caches": [{"kind": c.kind, "root": c.root, "junk_grace": c.junk_grace} for c in plan.caches],
        "warnings": list(plan.warnings if execution is None else execution.warnings),
        "delete": [unit_to_dict(u, r) for u, r in zip(plan.delete, results, strict=True)],
        "keep": [unit_to_dict(u) for u in plan.keep],
    }
    if execution is not None:
        out["freed_bytes"] = execution.freed_bytes
        out["failed"] = len(execution.failed)
    return out


MAX_PLAN_BYTES = 256 * 1024 * 1024  # 10,000 units take about 10 MB


MAX_PLAN_DEPTH = 32  # a plan nests 4 levels (plan, delete, unit, reasons)


MAX_BYTES = 2**63 - 1  # st_size's range: no file system holds more


class _Refused(ValueError):
    """Raised by the JSON hooks below; becomes a :class:`PlanFileError` naming the file."""


def _no_constant(name: str) -> float:
    raise _Refused(f"{name} is not a number a plan can hold")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # the last would win silently: say which key
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"key {key!r} given twice in one object")
            seen.add(key)
    return obj


def _too_deep(data: Any) -> bool:
    """Whether lists and objects nest more than :data:`MAX_PLAN_DEPTH` levels (level by level: no recursion)."""
    level, depth = [data] if type(data) in (dict, list) else [], 1
    while level:
        if depth > MAX_PLAN_DEPTH:
            return True
        below: list[Any] = []
        for value in level:
            below.extend(v for v in (value.values() if type(value) is dict else value) if type(v) in (dict, list))
        level, depth = below, depth + 1
    return False


def _show(value: Any) -> str:
    """A value as JSON spells it, cut short: a message stays one readable line."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # plan_from_dict called with what JSON never gives
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _bad(where: str, key: str, expected: str, value: Any) -> PlanFileError:
    return PlanFileError(f"{where}: {key}: expected {expected}, got {_show(value)}")


_REQUIRED = object()


def _get(data: dict[str, Any], key: str, where: str, default: Any) -> Any:
    if key in data:
        return data[key]
    if default is _REQUIRED:
        raise PlanFileError(f"{where}: missing field {key!r}")
    return default


def _path(data: dict[str, Any], key: str, where: str) -> str:
    value = _get(data, key, where, _REQUIRED)
    if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
        raise _bad(where, key, "an absolute path", value)
    return value


def _text(data: dict[str, Any], key: str, where: str, default: Any = _REQUIRED) -> str:
    value = _get(data, key, where, default)
    if not isinstance(value, str):
        raise _bad(where, key, "a string", value)
    return value


def _text_or_none(data: dict[str, Any], key: str, where: str, default: Any = _REQUIRED) -> str | None:
    value = _get(data, key, where, default)
    if value is not None and not isinstance(value, str):
        raise _bad(where, key, "a string or null", value)
    return value


def _texts(data: dict[str, Any], key: str, where: str, default: Any = _REQUIRED) -> tuple[str, ...]:
    value = _get(data, key, where, default)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _bad(where, key, "a list of strings", value)
    return tuple(value)


def _flag(data: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = _get(data, key, where, default)
    if not isinstance(value, bool):
        raise _bad(where, key, "true or false", value)
    return value


def _bytes(data: dict[str, Any], key: str, where: str, default: Any = _REQUIRED) -> int:
    value = _get(data, key, where, default)
    if type(value) is not int or not 0 <= value <= MAX_BYTES:
        raise _bad(where, key, "a number of bytes (a whole number, 0 or more)", value)
    return value


def _seconds(data: dict[str, Any], key: str, where: str, default: Any, expected: str) -> float:
    """A time (epoch seconds) or a duration: finite (the JSON hooks saw to that) and not negative."""
    value = _get(data, key, where, default)
    if type(value) not in (int, float) or not 0 <= value <= 1e300:
        raise _bad(where, key, expected, value)
    return float(value)


def _list(data: dict[str, Any], key: str, where: str, default: Any = _REQUIRED) -> list[Any]:
    value = _get(data, key, where, default)
    if not isinstance(value, (list, tuple)):
        raise _bad(where, key, "a list", value)
    return list(value)


def _unit_from_dict(data: Any, where: str) -> PlanUnit:
    from hfcache.plan.decisions import WHATS, PlanUnit, What

    if not isinstance(data, dict):
        raise PlanFileError(f"{where}: expected an object")
    epoch = "a time (epoch seconds, 0 or more)"
    fields: dict[str, Any] = dict(
        kind=_text(data, "kind", where),
        root=_path(data, "root", where),
        id=_text_or_none(data, "id", where),
        revision=_text_or_none(data, "revision", where),
        path=_path(data, "path", where),
        reclaim_bytes=_bytes(data, "reclaim_bytes", where),
        reasons=tuple(recorded(text) for text in _texts(data, "reasons", where)),
        what=_text(data, "what", where, "revision"),
        type=_text_or_none(data, "type", where, None),
        version=_text_or_none(data, "version", where, None),
        refs=_texts(data, "refs", where, ()),
        size_bytes=_bytes(data, "size_bytes", where, 0),
        last_accessed=_seconds(data, "last_accessed_epoch", where, _REQUIRED, epoch),
        last_modified=_seconds(data, "last_modified_epoch", where, _REQUIRED, epoch),
        item_removed=_flag(data, "item_removed", where, False),
        file=_text_or_none(data, "file", where, None),
    )
    if fields["what"] not in WHATS:
        raise PlanFileError(f"{where}: unknown unit kind {fields['what']!r}")
    fields["what"] = What(fields["what"])
    name = fields["file"]
    if (fields["what"] == What.FILE) != (name is not None):
        raise PlanFileError(f"{where}: file: a file unit names its file, and only a file unit does")
    if name is not None and (not name or name.startswith("/") or "\0" in name or ".." in name.split("/")):
        raise _bad(where, "file", "a relative path in the repo", name)
    return PlanUnit(**fields)


def _refuse_duplicates(plan: Plan, source: str) -> None:
    """Each path once in the whole plan: twice doubled ``freed_bytes`` and the audit lines.

    Compared after :func:`os.path.normpath`, so ``a//b/`` is ``a/b``; another kind or root
    does not make the same folder another unit.
    """
    first: dict[str, str] = {}
    for name, units in (("delete", plan.delete), ("keep", plan.keep)):
        for i, unit in enumerate(units):
            key = os.path.normpath(unit.path)
            if key in first:
                raise PlanFileError(
                    f"{source}: {name}[{i}] repeats {first[key]} (the same path {unit.path}): a plan lists each unit once",
                    path=source,
                )
            first[key] = f"{name}[{i}]"


def plan_from_dict(data: Any, *, source: str = "plan") -> Plan:
    """Read back a plan written by :func:`plan_to_dict` (``hfcache prune --plan-out``).

    Every field is checked: a wrong type, a negative size or time, a relative path or a
    unit listed twice raises :class:`PlanFileError`.
    """
    from hfcache.plan.decisions import PLAN_VERSION, Plan, PlanCache
    from hfcache.plan.policies import DEFAULT_JUNK_GRACE

    version = data.get("version") if isinstance(data, dict) else None
    if type(version) is not int or version != PLAN_VERSION or "delete" not in data:
        raise PlanFileError(f"{source}: not an hfcache plan (version {PLAN_VERSION})", path=source)
    if not _flag(data, "dry_run", source, True):
        raise PlanFileError(f"{source}: this is the record of a run, not a plan to apply", path=source)
    caches = []
    for i, c in enumerate(_list(data, "caches", source, ())):
        where = f"{source}: caches[{i}]"
        if not isinstance(c, dict):
            raise PlanFileError(f"{where}: expected an object", path=source)
        grace = _seconds(c, "junk_grace", where, DEFAULT_JUNK_GRACE, "a duration (seconds, 0 or more)")
        caches.append(PlanCache(_text(c, "kind", where), _path(c, "root", where), grace))
    plan = Plan(
        delete=tuple(_unit_from_dict(u, f"{source}: delete[{i}]") for i, u in enumerate(_list(data, "delete", source))),
        keep=tuple(_unit_from_dict(u, f"{source}: keep[{i}]") for i, u in enumerate(_list(data, "keep", source, ()))),
        created_at=_seconds(data, "created_at_epoch", source, 0.0, "a time (epoch seconds, 0 or more)"),
        policy=_texts(data, "policy", source, ()),
        caches=tuple(caches),
        warnings=_texts(data, "warnings", source, ()),
    )
    _refuse_duplicates(plan, source)
    return plan


def load_plan_file(path: str) -> Plan:
    """Read a plan saved by ``hfcache prune --plan-out``: one clear :class:`PlanFileError` (exit 2) for anything else.

    Refused before any unit is looked at: a file over :data:`MAX_PLAN_BYTES` (from its
    size; a pipe is read up to the limit), JSON nested deeper than :data:`MAX_PLAN_DEPTH`,
    ``NaN``, ``Infinity`` and numbers out of a float's range, a key given twice in one
    object. Then :func:`plan_from_dict` checks every field.
    """
    limit = f"larger than {MAX_PLAN_BYTES // 2**20} MiB: not an hfcache plan"
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_PLAN_BYTES:
                raise PlanFileError(f"{path}: {limit}", path=path)
            raw = f.read(MAX_PLAN_BYTES + 1)
    except OSError as e:
        raise PlanFileError(f"cannot read plan {path}: {e.strerror or e}", path=path) from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanFileError(f"{path}: {limit}", path=path)
    deep = f"{path}: nested more than {MAX_PLAN_DEPTH} levels deep: not an hfcache plan"
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique_keys)
    except _Refused as e:
        raise PlanFileError(f"{path}: {e}", path=path) from None
    except RecursionError:
        raise PlanFileError(deep, path=path) from None
    except (ValueError, UnicodeError) as e:
        raise PlanFileError(f"{path}: not JSON ({e})", path=path) from None
    if _too_deep(data):
        raise PlanFileError(deep, path=path)
    return plan_from_dict(data, source=path)
