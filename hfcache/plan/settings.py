"""Policy settings: from a YAML policy file and from command-line flags, merged into one :class:`Policy`.

The file is found the way :func:`find_config` says (``--config``, ``$HFCACHE_CONFIG``, the
user config dir, ``/etc/hfcache/config.yaml``). Its format (``man 5 hfcache.yaml``)::

    version: 1
    max_age: 30d              # top-level settings apply to every cache
    keep: 2
    junk: true
    age_by: use               # ages from the usage history (falls back to access times)
    protect: ["meta-llama/*"] # model-id globs never deleted by any policy
    models:                   # per model glob, first match wins
      "org/core-*": {protect: true}
    caches:                   # per cache kind
      huggingface:
        max_size: 200GB
        models:
          "*": {max_age: 7d}

Settings resolve from the general to the specific: top level, then ``caches.<kind>``,
then the first matching glob of ``models``, then the first matching glob of
``caches.<kind>.models``, then the command line, which overrides everything. The file is
read by :mod:`hfcache.plan.policyfile`, whose errors name the file, the line and the key.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import platformdirs

from hfcache.errors import ConfigError, UsageError
from hfcache.plan.policies import AGE_BY, KEEP_PER
from hfcache.plan.query import matching_glob
from hfcache.units import describe_age, describe_size, parse_size, quoted

CONFIG_ENV = "HFCACHE_CONFIG"
SYSTEM_CONFIG = "/etc/hfcache/config.yaml"
CONFIG_NAME = "config.yaml"
MAX_POLICY_BYTES = 1024 * 1024  # the examples are under 1 kB
MAX_COUNT = 2**63 - 1  # bytes (st_size's range: no file system holds more) and revisions to keep

# Settings that make sense per model; the others are per cache (a quota is a cache's, not a model's).
ITEM_KEYS = ("max_age", "keep", "keep_per", "protect", "age_by", "min_uses", "window", "archive_to")
CACHE_KEYS = ("max_size", "min_free", "junk", "junk_grace", "allow_remove_all")
POLICY_KEYS = ("max_age", "keep", "max_size", "min_free", "junk", "min_uses")
DEFAULT_WINDOW = 30 * 86400.0  # min_uses counts the days of use in this window unless told
MAX_WINDOW = 365 * 86400.0  # the history keeps a year of uses (and a little more)


@dataclass(frozen=True)
class MinFree:
    """A free-space target: bytes, or a percentage of the file system's size.

    >>> MinFree.parse("10%").target(total=500), MinFree.parse("20GB").target(total=500)
    (50, 20000000000)
    """

    bytes: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> MinFree:
        text = str(text).strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if not 0 < percent < 100:
                raise UsageError(f"invalid free-space target {quoted(text)}: a percentage must be between 0 and 100")
            return cls(percent=percent)
        return cls(bytes=parse_size(text))

    def target(self, *, total: int) -> int:
        return self.bytes if self.bytes is not None else int(total * (self.percent or 0) / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else describe_size(self.bytes or 0)


@dataclass(frozen=True)
class Settings:
    """Every policy knob, each None when not set at this level (see :meth:`over`)."""

    max_age: float | None = None
    keep: int | None = None
    keep_per: str | None = None
    protect: bool | None = None
    age_by: str | None = None
    max_size: int | None = None
    min_free: MinFree | None = None
    junk: bool | None = None
    junk_grace: float | None = None
    allow_remove_all: bool | None = None
    min_uses: int | None = None
    window: float | None = None
    archive_to: str | None = None  # a folder or fsspec URL: units leave the cache by this archive (hfcache.archive)

    def over(self, base: Settings) -> Settings:
        """``base`` with every setting given here replacing its value.

        >>> merged = Settings(keep=2).over(Settings(keep=5, max_age=60.0))
        >>> merged.keep, merged.max_age
        (2, 60.0)
        """
        return replace(base, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})

    @property
    def has_policy(self) -> bool:
        return any(getattr(self, k) is not None for k in POLICY_KEYS if k != "junk") or bool(self.junk)


@dataclass(frozen=True)
class ModelRule:
    glob: str
    settings: Settings

    def matches(self, item_id: str) -> bool:
        return matching_glob(item_id, (self.glob,)) is not None


@dataclass(frozen=True)
class CacheRules:
    settings: Settings = Settings()
    models: tuple[ModelRule, ...] = ()


@dataclass(frozen=True)
class Policy:
    """The whole retention policy: file settings, command-line overrides, protections.

    >>> p = Policy(defaults=Settings(max_age=86400.0), overrides=Settings(keep=2), protect=("org/*",))
    >>> p.for_item("huggingface", "org/a").keep, p.protected_by("huggingface", "ORG/a")
    (2, 'org/*')
    """

    defaults: Settings = Settings()
    models: tuple[ModelRule, ...] = ()
    caches: Mapping[str, CacheRules] = field(default_factory=dict)
    protect: tuple[str, ...] = ()
    overrides: Settings = Settings()
    sources: tuple[str, ...] = ()

    def for_cache(self, kind: str) -> Settings:
        """The settings of a cache kind, before any model rule (what quotas and junk use)."""
        return self.overrides.over(self.caches.get(kind, CacheRules()).settings.over(self.defaults))

    def for_item(self, kind: str, item_id: str) -> Settings:
        settings = self.caches.get(kind, CacheRules()).settings.over(self.defaults)
        for rules in (self.models, self.caches.get(kind, CacheRules()).models):
            rule = next((r for r in rules if r.matches(item_id)), None)
            if rule is not None:
                settings = rule.settings.over(settings)
        return self.overrides.over(settings)

    def protected_by(self, kind: str, item_id: str) -> str | None:
        """The glob (or model rule) that protects this model from every policy, if any."""
        hit = matching_glob(item_id, self.protect)
        if hit is not None:
            return hit
        if self.for_item(kind, item_id).protect:
            rules = (*self.caches.get(kind, CacheRules()).models, *self.models)
            return next((r.glob for r in rules if r.matches(item_id) and r.settings.protect), "a model rule")
        return None

    def levels(self, kind: str | None = None) -> list[Settings]:
        """The settings of every level (of one cache kind's, when ``kind`` is given), unmerged."""
        levels = [self.defaults, self.overrides, *(r.settings for r in self.models)]
        for name, rules in self.caches.items():
            if kind is None or name == kind:
                levels.append(rules.settings)
                levels.extend(r.settings for r in rules.models)
        return levels

    @property
    def is_empty(self) -> bool:
        """No policy anywhere: nothing to do (never "delete everything")."""
        return not any(s.has_policy for s in self.levels())

    def describe(self) -> list[str]:
        """One line per level that sets something, for the plan's header."""
        lines = []

        def show(where: str, s: Settings) -> None:
            given = {f.name: getattr(s, f.name) for f in fields(s) if getattr(s, f.name) is not None}
            if given:
                lines.append(f"{where}: " + ", ".join(f"{k}={_show(k, v)}" for k, v in given.items()))

        show("defaults", self.defaults)
        for r in self.models:
            show(f"models {r.glob!r}", r.settings)
        for kind, rules in self.caches.items():
            show(f"caches.{kind}", rules.settings)
            for r in rules.models:
                show(f"caches.{kind}.models {r.glob!r}", r.settings)
        if self.protect:
            lines.append("protect: " + ", ".join(self.protect))
        show("command line", self.overrides)
        return lines


def _show(key: str, value: Any) -> str:
    """A setting as people write it: ages and sizes in their units (``max_size=200.0 GB``), never raw seconds or bytes."""
    if key == "max_size" and isinstance(value, int):
        return describe_size(value)
    if isinstance(value, float):
        return describe_age(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range
        return False


def _validate_uses(settings: Settings, prefix: str) -> None:
    """``min_uses`` and ``window``: a count of days a window can hold (more would make every model rare)."""
    uses, window = settings.min_uses, settings.window
    if uses is not None and not 1 <= uses <= 366:
        raise UsageError(f"{prefix}min_uses must be between 1 and 366 (days of use in the window)")
    if window is not None and not 86400.0 <= window <= MAX_WINDOW:
        raise UsageError(f"{prefix}window must be between 1d and 365d")
    if uses is not None and window is not None and uses > int(window // 86400) + 1:
        raise UsageError(f"{prefix}min_uses {uses} is more days than a window of {describe_age(window)} holds")


def validate(settings: Settings, *, where: str = "") -> None:
    """Refuse settings that contradict each other or make no sense, before anything is scanned.

    Durations must be finite and not negative (NaN fails every comparison: it would select
    nothing, or everything), counts and sizes within what a file system can hold.
    """
    prefix = f"{where}: " if where else ""
    if settings.keep is not None and settings.keep < 1:
        raise UsageError(f"{prefix}keep must be at least 1 (to remove whole models use max_age with allow_remove_all)")
    if settings.keep is not None and settings.keep > MAX_COUNT:
        raise UsageError(f"{prefix}keep must be at most {MAX_COUNT}")
    if settings.keep_per is not None and settings.keep_per not in KEEP_PER:
        raise UsageError(f"{prefix}keep_per must be one of {', '.join(KEEP_PER)}")
    if settings.age_by is not None and settings.age_by not in AGE_BY:
        raise UsageError(f"{prefix}age_by must be one of {', '.join(AGE_BY)}")
    if settings.max_age is not None and not settings.max_age > 0:
        raise UsageError(f"{prefix}max_age must be longer than 0s")
    if settings.max_age is not None and not _finite(settings.max_age):
        raise UsageError(f"{prefix}max_age must be finite")
    _validate_uses(settings, prefix)
    if settings.junk_grace is not None and not settings.junk_grace >= 0:
        raise UsageError(f"{prefix}junk_grace must be 0s or longer")
    if settings.junk_grace is not None and not _finite(settings.junk_grace):
        raise UsageError(f"{prefix}junk_grace must be finite")
    min_free_bytes = settings.min_free.bytes if settings.min_free is not None else None
    for name, size in (("max_size", settings.max_size), ("min_free", min_free_bytes)):
        if size is not None and size < 0:
            raise UsageError(f"{prefix}{name} must be 0 or more")
        if size is not None and size > MAX_COUNT:
            raise UsageError(f"{prefix}{name} must be at most {MAX_COUNT} bytes")
    percent = settings.min_free.percent if settings.min_free is not None else None
    if percent is not None and not 0 < percent < 100:
        raise UsageError(f"{prefix}min_free must be a percentage between 0 and 100")


def _policy_file(candidate: str, *, explicit: bool) -> bool:
    """Whether a policy file is at ``candidate``; an error if something is there that cannot be used.

    Only "nothing there" (no such file, or no such folder) is quiet. A folder that cannot
    be searched (``/etc/hfcache`` root-only) is an error, not "no policy": skipping it would
    silently drop the protections the file holds.
    """
    try:
        mode = os.stat(candidate).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(candidate):
            raise ConfigError(f"policy file {candidate} is a symbolic link to nothing", path=candidate) from None
        if explicit:
            raise ConfigError(f"policy file not found: {candidate}", path=candidate) from None
        return False
    except OSError as e:
        how = "" if explicit else "; use --config FILE or --no-config to run without it"
        raise ConfigError(f"cannot look for a policy file at {candidate}: {e.strerror or e}{how}", path=candidate) from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"policy file {candidate} is not a regular file", path=candidate)
    return True


def find_config(explicit: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The policy file to read: ``--config``, else ``$HFCACHE_CONFIG``, else the user's, else the system's.

    An explicit file (or ``$HFCACHE_CONFIG``) must exist; the two default places are used
    when they hold a file and skipped when there is nothing there. A default place that
    exists but cannot be searched, or holds something other than a file, raises
    :class:`ConfigError` (exit 2): ``--no-config`` is the way to run without it.
    """
    env = os.environ if env is None else env
    for given in (explicit, env.get(CONFIG_ENV) or None):
        if given:
            _policy_file(given, explicit=True)
            return given
    user = os.path.join(platformdirs.user_config_dir("hfcache"), CONFIG_NAME)
    for candidate in (user, SYSTEM_CONFIG):
        if _policy_file(candidate, explicit=False):
            return candidate
    return None


def load_config(path: str, *, kinds: tuple[str, ...] | None = None) -> Policy:
    """The policy in the file at ``path``.

    Raises :class:`ConfigError` if it cannot be read, is over :data:`MAX_POLICY_BYTES`, or is wrong.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
        if len(data) > MAX_POLICY_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_POLICY_BYTES // 2**20} MiB: not a policy file", path=path)
        text = data.decode("utf-8")
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"cannot read policy file {path}: {getattr(e, 'strerror', None) or e}", path=path) from None
    # (imported here: the reader builds this module's types, so it imports this module)
    from hfcache.plan.policyfile import parse_config

    return parse_config(text, path, kinds=kinds)
