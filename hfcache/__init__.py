"""hfcache: inventory and housekeeping for local ML model caches.

The library is the product; the ``hfcache`` command is a thin layer over it::

    >>> import hfcache
    >>> inventory = hfcache.scan()                       # doctest: +SKIP
    >>> for cache in inventory.caches:                   # doctest: +SKIP
    ...     print(cache.root, cache.size_bytes)
"""

from hfcache.caches.registry import KINDS
from hfcache.caches.scan import scan_caches as scan
from hfcache.model import CacheInventory, Inventory, Item, OrphanFile, PartialFile, Revision, ScanWarning, SharedPayload

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "CacheInventory",
    "Inventory",
    "Item",
    "OrphanFile",
    "PartialFile",
    "Revision",
    "ScanWarning",
    "SharedPayload",
    "__version__",
    "scan",
]
