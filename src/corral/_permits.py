"""The permit table as corral's Python pools see it (bindings/bind_permits.cpp, cpp permit_table.hpp).

run(spec, fn, /, *args, **kwargs): fn(*args, **kwargs) while the calling thread holds one of
    the process's permits (docs/architecture.md, invariant 2); waits for one with the GIL released.
    inner_threads: how many BLAS/OpenMP threads the call may start, one of
      LEAVE_ALONE (0): the libraries' limits are left as they are (--no-native, corral.patch(native=False));
      DYNAMIC (-1):    the dynamic rule, decided as the call starts;
      n > 0:           n, fixed (static mode's count).
    (The rule for both modes: docs/native.md, "Inner thread counts".)
    spec: inner_threads, or spec(inner_threads, pool_threads, lazy_threads, *queues) for a pool's tasks:
    the dynamic rule then counts the pool's queued tasks (qsize(), up to pool_threads) as demand, so that
    the first task of a burst does not take the whole budget for an OpenMP team its siblings then crowd.
    lazy_threads: the pool starts a thread per submit (an executor), so its first task may start before
    the second is queued: that task waits for the submitter's next put, at most 1 ms (GIL released),
    before the count is decided (only while a per-thread control, OpenMP's, is loaded, and not in a
    pool of one thread).
    (LEAVE_ALONE and DYNAMIC are _pool_settings', which decides the count.)
Pause: enter() / exit(): the calling thread gives its permit back while it waits (invariant 4).
in_task(): whether the calling thread is inside run() (so a wait there should pause).
start(): the process-wide parts a pool needs, once: the wait hooks, the permit monitor, and the fork hook that
    ends an idle monitor before a fork.
"""

from __future__ import annotations

import os
import threading

from . import _core, _wait_hooks
from ._pool_settings import DYNAMIC, LEAVE_ALONE  # noqa: F401 (run()'s first argument, named here too)

run = _core.run_permitted
Pause = _core.PermitPause
in_task = _core.in_permit_task
stats = _core.permit_stats
permits = _core.permits
set_permits = _core.set_permits

def spec(inner_threads: int, pool_threads: int, lazy_threads: bool, *queues):
    """run()'s first argument for the tasks of a pool of `pool_threads` threads fed by `queues`."""
    if inner_threads != DYNAMIC:
        return inner_threads
    # the binding's `first`: a list the pool's first task appends to, or None; then the queue whose puts
    # that task may wait for, and every queue's qsize, bound (the binding calls them for every task)
    first = [] if lazy_threads else None
    if not queues:
        return (inner_threads, pool_threads, first)
    return (inner_threads, pool_threads, first, queues[0], *(queue.qsize for queue in queues))


_started_in = None  # the pid that started the monitor (a forked child starts its own)
_lock = threading.Lock()


def start() -> None:
    global _started_in
    if _started_in == os.getpid():
        return
    with _lock:
        _wait_hooks.install()
        _core.set_permit_monitor(True)
        if _started_in is None:  # once: a forked child inherits the hook
            # A fork after the pools are done finds the threads plain python's would have (3.12+ warns of
            # a fork() with more than one; docs/permits.md, "Fork").
            os.register_at_fork(before=_core.end_idle_permit_monitor)
        _started_in = os.getpid()
