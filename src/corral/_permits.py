"""The permit table as corral's Python pools see it (bindings/bind_permits.cpp, cpp permit_table.hpp).

run(inner_threads, fn, /, *args, **kwargs): fn(*args, **kwargs) while the calling thread holds one of
    the process's permits (docs/architecture.md, invariant 2); waits for one with the GIL released.
    inner_threads: 0 leaves BLAS/OpenMP limits alone, -1 sets max(1, permits // holders) for the call,
    n > 0 sets n.
Pause: enter() / exit(): the calling thread gives its permit back while it waits (invariant 4).
in_task(): whether the calling thread is inside run() (so a wait there should pause).
start(): the process-wide parts a pool needs, once: the wait hooks and the permit monitor.
"""

from __future__ import annotations

import os
import threading

from . import _core, _wait_hooks

run = _core.run_permitted
Pause = _core.PermitPause
in_task = _core.in_permit_task
stats = _core.permit_stats
permits = _core.permits
set_permits = _core.set_permits

_started_in = None  # the pid that started the monitor (a forked child starts its own)
_lock = threading.Lock()


def start() -> None:
    global _started_in
    if _started_in == os.getpid():
        return
    with _lock:
        _wait_hooks.install()
        _core.set_permit_monitor(True)
        _started_in = os.getpid()
