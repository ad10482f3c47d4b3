"""The first module the process pool's forkserver imports (:data:`fishcast.pipeline.execute.WORKER_MODULES`):
the garbage collector is off while the server imports numpy, scipy, CAMB and fishcast's
worker modules (they make ~10^5 objects and no garbage; the collections during the imports
cost ~0.1 s of the server's start-up, which the first workers wait for);
:mod:`fishcast.pipeline.server_ready`, imported last, freezes what they made and switches
the collector on again, before any worker is forked.

Imported only by the forkserver (its import has that side effect): never import it elsewhere.
"""

from __future__ import annotations

import gc

gc.disable()
