"""The ``hfcache`` entry point: signals, the garbage collector, one line per error, a quick exit."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from hfcache import interrupt
from hfcache.cli.app import app
from hfcache.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, HfcacheError
from hfcache.output import render

if TYPE_CHECKING:
    pass

# Ctrl-C, SIGTERM (systemd stop, docker stop, Kubernetes) and SIGHUP (terminal gone) all stop a
# run with exit 130: at once, or after the unit under way while a plan executes (interrupt.deferred).
_Interrupted = interrupt.Interrupted


SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def main() -> None:
    """Entry point of the ``hfcache`` command and ``python -m hfcache``."""
    interrupt.reset()
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup, `cmd &` in a script: still ignored
            signal.signal(signum, interrupt.handle)
    # A scan makes a few hundred thousand small, acyclic objects that live until the process
    # ends: collect rarely (and never the modules already loaded). On a 100,000-file cache this
    # takes `hfcache scan --json` from 2.1 s to 1.7 s (benchmarks/README.md).
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        app()
    except (_Interrupted, KeyboardInterrupt):
        render.error(interrupt.reason() if interrupt.requested() else "interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except HfcacheError as e:  # raised outside a command body (should not happen, but never a traceback)
        render.error(str(e))
        sys.exit(e.exit_code)
    except Exception as e:  # only main() catches broadly: a bug must still not print a traceback by default
        if render.debug_enabled():
            raise
        render.error(f"internal error: {type(e).__name__}: {e} (set HFCACHE_DEBUG=1 for the traceback)")
        sys.exit(EXIT_INTERNAL)


def run() -> None:
    """The ``hfcache`` command: :func:`main`, then out without tearing the interpreter down.

    Freeing a big inventory object by object at exit takes tens of milliseconds (about 3%
    of `hfcache scan --json` on a 100,000-file cache) and nothing needs it: every output is
    flushed and every file hfcache writes (plans, the audit log) is closed by then.
    """
    try:
        main()
        code = 0
    except SystemExit as e:
        if e.code is not None and not isinstance(e.code, int):
            raise  # a message to print: the interpreter's own exit does that
        code = e.code or 0
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader left (`| head`): what was left to say goes nowhere
        pass
    os._exit(code)
