"""The last module the process pool's forkserver imports (:data:`fishcast.pipeline.execute.WORKER_MODULES`):
once numpy, scipy, CAMB and fishcast's worker modules are loaded, every object they made is
moved out of the garbage collector's reach (:func:`fishcast.collector.freeze_existing`), and
the collector, off during the imports (:mod:`fishcast.pipeline.server_start`), is switched on
again.

Two effects, no other: the workers forked from the server do not walk those objects in
their own collections (the gc documentation's advice before forking: the pages shared with
the server stay shared), and the server's exit at the end of a run does not walk them either.
That exit took ~0.2 s after every ``fishcast run`` (measured on 2 cores), and a caller
reading the run's output through a pipe (a script, ``| tee``, the benchmarks) waited for it:
the server holds the run's stdout and stderr until it exits.

Imported only by the forkserver (its import has that side effect): never import it elsewhere.
"""

from __future__ import annotations

import gc

from ..collector import freeze_existing

freeze_existing()
gc.enable()
