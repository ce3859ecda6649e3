"""Offline integrity (``hfcache verify``): reading gently, hashing once per content, remembering what was hashed.

:mod:`.run` checks each cached file against the hash its cache keeps for it,
:mod:`.reading` reads without moving atimes or evicting the page cache, :mod:`.state` is the
state database that lets a repeat run skip what did not change.
"""
