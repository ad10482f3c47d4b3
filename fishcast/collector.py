"""The garbage-collector policy of fishcast's own processes: one helper, :func:`freeze_existing`.

A ``fishcast`` process holds ~10^5 long-lived objects that are no garbage: those numpy,
scipy, CAMB, h5py, pydantic and fishcast make at import. CPython's collector walks them in
its full collections, and once more at the interpreter's exit; freezing them (``gc.freeze``:
moved to a permanent generation that no collection visits) removes that work. Measured on
2 cores (the commits that introduced each use; ``git log -S gc.freeze``):

- after the command (:func:`fishcast.cli.main._quick_exit`): the interpreter's exit walked
  what the libraries left behind, ~0.2 s of every ``fishcast run`` (0.6 -> 0.27 s under
  load);
- after the library's imports (:func:`fishcast.cli.main.library_imports`, the collector off
  meanwhile): the ~200 collections during the imports cost ~0.1 s of the start-up's CPU
  (85-98 ms -> 6 ms of collections per cached Euclid WL run; its median CPU 1.27 -> 1.15 s),
  and the later collections skip what the imports made;
- in the process pool's forkserver, before any worker is forked
  (:mod:`fishcast.pipeline.server_ready`, the collector off during its imports by
  :mod:`fishcast.pipeline.server_start`): the workers' collections skip the objects they
  inherit (the gc documentation's advice before a fork: the pages stay shared with the
  server), the server's start-up CPU 0.41 -> 0.38 s (the first task back after 0.88 s instead
  of 0.94 s), and its exit, which a caller reading the run's output through a pipe waits for
  (the server holds stdout and stderr), ~0.3 -> ~0.1 s after the main process's end.

Only fishcast's own processes do this (the ``fishcast`` entry point and the forkserver): a
program that calls the library or the commands keeps its collector as it is.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_existing"]


def freeze_existing() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``); what
    is made later is collected as usual. Whether the collector is on is left as it is. For
    why, and who calls it, see the module docstring."""
    gc.freeze()
