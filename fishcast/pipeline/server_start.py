"""The first module the process pool's forkserver imports (:data:`fishcast.pipeline.execute.WORKER_MODULES`):
the garbage collector is off while the server imports numpy, scipy, CAMB and fishcast's
worker modules (they make ~10^5 objects and no garbage; the collections during the imports
cost ~0.1 s of the server's start-up, which the first workers wait for);
:mod:`fishcast.pipeline.server_ready`, imported last, freezes what they made and switches
the collector on again, before any worker is forked.

SIGTERM: the server ignores it, and every worker it forks has the default action back at
once (``os.register_at_fork``, in the child, before anything else runs there). A batch
scheduler's SIGTERM reaches the whole process group; the server is the parent of the workers
and the one that tells the main process when each of them has ended (the pool's shutdown
waits for that). Killed first, it left the main process unable to wait for a worker still
finishing a cache entry (:func:`fishcast.io.atomic.atomic_open` holds SIGTERM back until the
entry is renamed into place): the run exited and reported its cache while the entry was
still being written. The server ends as before when the main process and all the workers
are gone (multiprocessing's ``alive`` pipe reaches end-of-file).

Imported only by the forkserver (its import has that side effect): never import it elsewhere.
"""

from __future__ import annotations

import gc
import os
import signal


def _worker_default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.register_at_fork(after_in_child=_worker_default_sigterm)
gc.disable()
