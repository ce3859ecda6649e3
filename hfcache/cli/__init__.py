"""The ``hfcache`` command: parse options, call the library, render, exit with a documented code.

One module per command (:mod:`.scan`, :mod:`.prune` with ``apply``, :mod:`.rm`, :mod:`.verify`, :mod:`.metrics`), each
registering itself on the one Typer app of :mod:`.app` (its shared options live there too);
:mod:`.main` is the entry point. Importing this package registers every command.
"""

# Each command module registers its command on app when imported; help lists them in this order.
from hfcache.cli import scan  # noqa: I001, F401
from hfcache.cli import prune  # noqa: F401
from hfcache.cli import rm  # noqa: F401
from hfcache.cli import verify  # noqa: F401
from hfcache.cli import metrics  # noqa: F401
from hfcache.cli import history  # noqa: F401
from hfcache.cli import archive  # noqa: F401
from hfcache.cli import sync  # noqa: F401
from hfcache.cli.app import app
from hfcache.cli.main import main, run

__all__ = ["app", "main", "run"]
