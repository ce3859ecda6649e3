"""Every account's caches (``hfcache scan --all-users``): each home's default cache places, scanned as that account's.

Accounts come from the password database (``/etc/passwd``, or another file in its format:
a host's, mounted into a container). For each account with a home folder, every kind's
default roots are worked out as its libraries would for that account (``HOME`` set to the
home; variables an account sets in its own shell are unknown here), and only roots inside
its home count as its own: the machine's shared places (``/tmp/.keras``, Ollama's service
store) belong to no one account.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from collections.abc import Iterable
from typing import NamedTuple

from hfcache.caches.registry import registry, select_kinds
from hfcache.caches.scan import scan_caches
from hfcache.errors import HfcacheError, UsageError
from hfcache.model import CacheInventory, Inventory

MIN_UID = 1000  # people's accounts (Debian, Fedora, ...); root is taken too


class Account(NamedTuple):
    name: str
    uid: int
    home: str
    unreadable: bool = False  # its home could not be entered (not root): its caches are unknown, not empty


def accounts(passwd: str | None = None, *, min_uid: int = MIN_UID) -> list[Account]:
    """Accounts with a home folder: root and those of ``min_uid`` and up, each home once, in uid order."""
    if passwd is None:
        import pwd

        entries = [(p.pw_name, p.pw_uid, p.pw_dir) for p in pwd.getpwall()]
    else:
        entries = []
        try:
            if not stat_mod.S_ISREG(os.stat(passwd).st_mode):  # a FIFO would block the read for ever
                raise UsageError(f"--passwd {passwd} is not a file", path=passwd)
            f = open(passwd, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        except OSError as e:
            raise UsageError(f"cannot read --passwd {passwd}: {e.strerror or e}", path=passwd) from None
        with f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 7 and fields[2].isdigit() and not line.startswith("#"):
                    entries.append((fields[0], int(fields[2]), fields[5]))
    out: dict[str, Account] = {}
    for name, uid, home in sorted(entries, key=lambda e: e[1]):
        if (uid == 0 or uid >= min_uid) and home and os.path.isdir(home):
            out.setdefault(os.path.realpath(home), Account(name, uid, home))
    return list(out.values())


def _inside(path: str, home: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(home)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def scan_accounts(
    found: Iterable[Account], *, kinds: Iterable[str] | None = None, jobs: int = 1
) -> list[tuple[Account, Inventory]]:
    """Each account and the caches in its home, scanned where its libraries would put them (nothing outside it is read)."""
    reg = registry()
    chosen = select_kinds(list(kinds) if kinds else None, reg)
    out = []
    for account in found:
        if not os.access(account.home, os.R_OK | os.X_OK):
            out.append((account._replace(unreadable=True), Inventory(scanned_at=time.time())))
            continue
        env = {"HOME": account.home, "USER": account.name, "LOGNAME": account.name}
        caches: list[CacheInventory] = []
        scanned_at = time.time()
        for kind in chosen:
            try:
                roots = [r for r in kind.default_roots(env) if _inside(r, account.home) and os.path.isdir(r)]
            except Exception:  # noqa: BLE001 - a plug-in's broken default: that kind is left out for this account
                continue
            for root in roots:
                if any(os.path.samefile(root, c.root) for c in caches):
                    continue  # one folder two kinds' defaults name: scanned once
                try:
                    caches.extend(c for c in scan_caches([root], kinds=[kind.kind], jobs=jobs, ledger=False).caches if c.exists)
                except HfcacheError:
                    continue  # not that kind's cache after all (a folder of that name), or unreadable: nothing of this account
        out.append((account, Inventory(caches=tuple(caches), scanned_at=scanned_at)))
    return out


class Shared(NamedTuple):
    """A revision several accounts cache, each its own copy: their sizes, and what one shared cache would save."""

    kind: str
    type: str
    id: str
    revision: str
    sizes: tuple[tuple[str, int], ...]  # (account, bytes)

    @property
    def total(self) -> int:
        return sum(size for _, size in self.sizes)

    @property
    def saved(self) -> int:
        """Bytes one shared cache would not hold: all copies but the largest."""
        return self.total - max(size for _, size in self.sizes)


def shared(scanned: list[tuple[Account, Inventory]]) -> list[Shared]:
    """The revisions found in more than one account's caches (the same commit, the same bytes), costliest first.

    Two accounts holding different revisions of a model share nothing: they are not counted.
    """
    holders: dict[tuple[str, str, str, str], dict[str, int]] = {}
    for account, inventory in scanned:
        for cache in inventory.caches:
            for item in cache.items:
                for rev in item.revisions:
                    key = (cache.kind, item.type, item.id, rev.revision)
                    holders.setdefault(key, {})
                    holders[key][account.name] = holders[key].get(account.name, 0) + rev.size_bytes
    out = [Shared(*key, tuple(sorted(sizes.items()))) for key, sizes in holders.items() if len(sizes) > 1]
    return sorted(out, key=lambda s: (-s.saved, s.id))


def totals(inventory: Inventory) -> tuple[int, int]:
    """(caches, bytes) of one account."""
    return len(inventory.caches), sum(c.size_bytes for c in inventory.caches)
