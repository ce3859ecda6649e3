"""The YAML policy file read into a :class:`~hfcache.plan.settings.Policy`, with the line and key of every error.

The format is in :mod:`hfcache.plan.settings` and ``man 5 hfcache.yaml``. The file is read as
PyYAML's node tree, never constructed into Python objects, so that each value keeps its line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from hfcache.errors import ConfigError, UsageError
from hfcache.plan.settings import CACHE_KEYS, ITEM_KEYS, MAX_COUNT, CacheRules, MinFree, ModelRule, Policy, Settings, validate
from hfcache.units import parse_duration, parse_size, quoted

MAX_POLICY_DEPTH = 32  # a policy nests 5 levels (caches, kind, models, glob, setting)
_WHOLE_NUMBER = re.compile(r"[0-9]+")


def _fail(path: str, node: yaml.Node, key: str, message: str) -> ConfigError:
    return ConfigError(f"{path}:{node.start_mark.line + 1}: {key}: {message}", path=path)


def _scalar(path: str, node: yaml.Node, key: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _fail(path, node, key, "expected a single value")
    return str(node.value)


def _bool(path: str, node: yaml.Node, key: str) -> bool:
    value = _scalar(path, node, key).lower()
    if value in ("true", "yes", "on"):
        return True
    if value in ("false", "no", "off"):
        return False
    raise _fail(path, node, key, f"expected true or false, got {value!r}")


def _setting(path: str, name: str, key: str, node: yaml.Node) -> Any:
    """The value of setting ``name`` (written ``key`` in the file, for messages)."""
    text = _scalar(path, node, key)
    try:
        if name in ("max_age", "junk_grace", "window"):
            return float(parse_duration(text))  # (what is absurdly long is refused there)
        if name in ("keep", "min_uses"):
            if not _WHOLE_NUMBER.fullmatch(text):  # not str.isdigit(): it takes '²', which int() refuses
                raise UsageError(f"expected a whole number, got {quoted(text)}")
            # int() refuses more than 4300 digits: anything over 19 is over MAX_COUNT anyway
            return int(text) if len(text.lstrip("0")) <= 19 else MAX_COUNT + 1
        if name == "max_size":
            return parse_size(text)
        if name == "min_free":
            return MinFree.parse(text)
        if name in ("protect", "junk", "allow_remove_all"):
            return _bool(path, node, key)
        return text  # keep_per, age_by: checked by validate(); archive_to: by the archive, before the scan
    except ConfigError:
        raise
    except UsageError as e:
        raise _fail(path, node, key, str(e)) from None


def _mapping(path: str, node: yaml.Node, key: str) -> list[tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise _fail(path, node, key, "expected a mapping of keys to values")
    pairs: list[tuple[yaml.Node, yaml.Node]] = node.value  # (the stubs leave a node's value untyped)
    return pairs


def _settings(path: str, node: yaml.Node, where: str, allowed: tuple[str, ...]) -> tuple[Settings, dict[str, yaml.Node]]:
    """Read the settings of one level; returns them and the nested sections (``models``, ...) left."""
    values: dict[str, Any] = {}
    rest: dict[str, yaml.Node] = {}
    seen: dict[str, yaml.Node] = {}
    for knode, vnode in _mapping(path, node, where):
        key = _scalar(path, knode, where)
        name = key.replace("-", "_")
        full = f"{where}.{key}" if where else key
        if name in seen:  # the loader refused the same spelling twice; this is max_age and max-age
            first = seen[name]
            raise _fail(path, knode, full, f"given twice (first at line {first.start_mark.line + 1}, as {first.value})")
        seen[name] = knode
        if name in allowed:
            values[name] = _setting(path, name, full, vnode)
        elif name in ("models", "caches", "protect", "version"):
            rest[name] = vnode
        else:
            known = ", ".join(allowed)
            if name in CACHE_KEYS:
                raise _fail(path, knode, full, f"{key} is set per cache, not per model; allowed here: {known}")
            raise _fail(path, knode, full, f"unknown setting; allowed here: {known}")
        if name in values:
            try:
                validate(Settings(**{name: values[name]}))
            except UsageError as e:
                raise _fail(path, vnode, full, str(e)) from None
    return Settings(**values), rest


def _models(path: str, node: yaml.Node, where: str) -> tuple[ModelRule, ...]:
    rules = []
    for knode, vnode in _mapping(path, node, where):
        glob = _scalar(path, knode, where)
        settings, rest = _settings(path, vnode, f"{where}.{glob}", ITEM_KEYS)
        if rest:
            raise _fail(path, vnode, f"{where}.{glob}", f"unknown setting {next(iter(rest))!r} in a model rule")
        rules.append(ModelRule(glob, settings))
    return tuple(rules)


class _PolicyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in any mapping and nesting past :data:`MAX_POLICY_DEPTH`.

    For policy files and for ``hfcache sync`` manifests (:func:`load_strict`), which say what is kept.

    Both are checked while the node tree is built (:func:`parse_config` reads nodes, for
    their line numbers, and never constructs Python objects): a duplicate used to replace
    the first silently (a second ``caches.huggingface`` dropped a ``protect: true``), and
    deep nesting ran the recursive composer out of stack.
    """

    def __init__(self, text: str, path: str, what: str = "policy file") -> None:
        super().__init__(text)
        self.path = path
        self.what = what
        self.keys: list[str] = []  # the key of each node being composed, from the root down

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if len(self.keys) >= MAX_POLICY_DEPTH:
            line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
            raise ConfigError(
                f"{self.path}:{line}: nested more than {MAX_POLICY_DEPTH} levels deep: not a {self.what}", path=self.path
            )
        # A mapping's value is named by its key, a list item by its position (the root and keys by nothing)
        self.keys.append(index.value if isinstance(index, yaml.ScalarNode) else f"[{index}]" if isinstance(index, int) else "")
        try:
            return super().compose_node(parent, index)
        finally:
            self.keys.pop()

    # PyYAML passes the anchor's name (str, or None), which types-PyYAML declares as a dict
    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:  # type: ignore[override]
        node = super().compose_mapping_node(anchor)  # type: ignore[arg-type]
        first: dict[str, yaml.Node] = {}
        for knode, _ in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                continue
            if knode.value in first:
                where = ".".join(k for k in (*self.keys, knode.value) if k)
                line = first[knode.value].start_mark.line + 1
                raise _fail(self.path, knode, where, f"given twice (first at line {line})")
            first[knode.value] = knode
        return node


def _load(text: str, path: str, what: str, *, nodes: bool) -> Any:
    loader = _PolicyLoader(text, path, what)
    try:
        return loader.get_single_node() if nodes else loader.get_single_data()
    except RecursionError:  # not expected past the depth check; never a traceback all the same
        raise ConfigError(f"{path}: nested too deeply: not a {what}", path=path) from None
    finally:
        loader.dispose()


def _compose(text: str, path: str) -> yaml.Node | None:
    return _load(text, path, "policy file", nodes=True)  # type: ignore[no-any-return]


def load_strict(text: str, path: str, what: str) -> Any:
    """The Python data of the YAML ``text`` of ``path`` (a ``what``), refusing a key given twice and deep nesting.

    >>> load_strict("models: [a]\\nmodels: [b]\\n", "m.yaml", "manifest")
    Traceback (most recent call last):
    hfcache.errors.ConfigError: m.yaml:2: models: given twice (first at line 1)
    """
    return _load(text, path, what, nodes=False)


def parse_config(text: str, path: str, *, kinds: tuple[str, ...] | None = None) -> Policy:
    """A :class:`Policy` from the YAML text of ``path``. Raises :class:`ConfigError` naming line and key.

    >>> parse_config("keep: 2\\ncaches:\\n  torch:\\n    max_size: 1GB\\n", "p.yaml").for_cache("torch").max_size
    1000000000
    >>> parse_config("keep: two\\n", "p.yaml")
    Traceback (most recent call last):
    hfcache.errors.ConfigError: p.yaml:1: keep: expected a whole number, got 'two'
    """
    try:
        root = _compose(text, path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}:{line} not valid YAML: {problem}", path=path) from None
    if root is None:
        return Policy(sources=(path,))
    # At the top level ``protect`` is the list of protected globs, not a yes/no.
    top_keys = tuple(k for k in ITEM_KEYS + CACHE_KEYS if k != "protect")
    defaults, rest = _settings(path, root, "", top_keys)
    if "version" in rest and _scalar(path, rest["version"], "version") != "1":
        raise _fail(path, rest["version"], "version", "only version 1 is understood")
    protect: list[str] = []
    if "protect" in rest:
        node = rest["protect"]
        if not isinstance(node, yaml.SequenceNode):
            raise _fail(path, node, "protect", "expected a list of model-id globs")
        protect = [_scalar(path, n, "protect") for n in node.value]
    models = _models(path, rest["models"], "models") if "models" in rest else ()
    caches: dict[str, CacheRules] = {}
    for knode, vnode in _mapping(path, rest["caches"], "caches") if "caches" in rest else ():
        kind = _scalar(path, knode, "caches")
        if kinds is not None and kind not in kinds:
            raise _fail(path, knode, f"caches.{kind}", f"unknown cache kind; known: {', '.join(kinds)}")
        settings, sub = _settings(path, vnode, f"caches.{kind}", ITEM_KEYS + CACHE_KEYS)
        if set(sub) - {"models"}:
            raise _fail(path, vnode, f"caches.{kind}", f"{next(iter(set(sub) - {'models'}))} belongs at the top level")
        caches[kind] = CacheRules(settings, _models(path, sub["models"], f"caches.{kind}.models") if sub else ())
    return Policy(defaults=defaults, models=models, caches=caches, protect=tuple(protect), sources=(path,))
