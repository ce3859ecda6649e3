"""Domain errors. Each class carries its exit code; ``cli.main`` turns them into one line on stderr.

Exit codes (also in ``man/hfcache.1``, EXIT STATUS):

====  ==========================================================
0     success, including "nothing cached yet", dry runs and "nothing to delete"
1     partial: a run finished but some units failed to delete (see each unit's error), or it
      stopped before the next unit because the audit log could not be written
2     usage error: a bad option value (size, age, sort key, ...), a bad policy file or plan file,
      an empty policy, or no --yes where there is no terminal to ask on
3     an explicit cache root does not exist
4     unsafe plan refused before anything was deleted (a target outside its root, behind a symlink,
      of an unexpected shape; a root that is /, a home folder or no longer a cache)
5     a cache root is not a directory
6     a cache root is not recognised as a cache of its kind
7     a cache root cannot be read (permission denied)
8     verify found corrupt or missing files (each is listed; nothing was changed)
9     verify --repair could not keep a damaged file in quarantine: nothing was repaired
70    internal error (a bug: please report it; HFCACHE_DEBUG=1 shows the traceback)
75    busy: another hfcache prune holds the cache's lock (nothing deleted; try again later)
130   interrupted (SIGINT, SIGTERM or SIGHUP; a prune finishes the unit under way, reports, then stops)
====  ==========================================================
"""

from __future__ import annotations

from pathlib import Path

EXIT_PARTIAL = 1
EXIT_CORRUPT = 8
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class HfcacheError(Exception):
    """Base class: a message for the user and the exit code that goes with it."""

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return self.message


class UsageError(HfcacheError):
    """A command-line value that cannot be understood, e.g. ``--larger-than 5XB``."""

    exit_code = 2


class ConfirmationRequired(UsageError):
    """A real prune with nobody to ask and no ``--yes``: refused, nothing deleted (never hangs in cron)."""


class ConfigError(UsageError):
    """A policy file that cannot be used: ``file:line: key: what is wrong``."""


class PlanFileError(UsageError):
    """A saved plan that cannot be read back: not JSON, another version, a unit missing a field."""


class DesiredUnknown(UsageError):
    """The list of what ``hfcache sync`` keeps cannot be read: nothing is deleted until it can."""


class AuditError(Exception):
    """The audit log could not be written (a full disk).

    Never reaches the command line as such: execution stops before the next unit and says
    why in the result's ``stopped``; the command prints the results so far and exits 1.
    """


class UnsafePlan(HfcacheError):
    """A plan that would delete outside a cache, through a symlink, or something a cache needs: refused whole."""

    exit_code = 4


class CacheBusy(HfcacheError):
    """Another prune holds a cache root's lock for longer than ``--lock-wait``: nothing was deleted.

    75 is ``EX_TEMPFAIL`` (sysexits.h): a scheduler may simply try again later.
    """

    exit_code = 75


class CacheNotFound(HfcacheError):
    """A cache root given explicitly (``--cache-dir``) does not exist."""

    exit_code = 3


class CacheNotADirectory(HfcacheError):
    """A cache root exists but is a file (or something else that is not a folder)."""

    exit_code = 5


class NotACache(HfcacheError):
    """A folder that is not recognised as a cache of the requested kind (e.g. a home directory)."""

    exit_code = 6


class CacheUnreadable(HfcacheError):
    """A cache root that cannot be listed, usually for lack of permission."""

    exit_code = 7


class QuarantineFailed(HfcacheError):
    """``verify --repair`` could not keep a damaged file before it leaves the cache: nothing is repaired."""

    exit_code = 9


ERROR_CLASSES: tuple[type[HfcacheError], ...] = (
    UsageError,
    ConfirmationRequired,
    ConfigError,
    PlanFileError,
    DesiredUnknown,
    UnsafePlan,
    CacheBusy,
    CacheNotFound,
    CacheNotADirectory,
    NotACache,
    CacheUnreadable,
    QuarantineFailed,
)
