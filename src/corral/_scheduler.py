"""The C++ scheduler as corral's pools see it (bindings/bind_scheduler.cpp), in one place.

submit(fn, inner_threads): run fn() on a worker of the process-wide scheduler. fn must not raise
    (the pools capture exceptions into their futures; one that escapes is reported as unraisable).
    inner_threads: 0 leaves BLAS/OpenMP limits alone, -1 sets max(1, budget // running tasks) as the
    task starts, n > 0 sets n.
Event: set() / is_set() / wait(timeout=None) -> bool. wait releases the GIL; on a corral worker it
    runs other tasks (or hands its slot to a spare thread) meanwhile, so nested waits never deadlock.
BlockingScope: enter() / exit(): the calling worker gives its slot to a spare thread while it blocks.
on_worker(): whether the calling thread is one of the scheduler's workers (spares included).
"""

from __future__ import annotations

from . import _core

try:
    submit = _core.scheduler_submit
    Event = _core.SchedulerEvent
    BlockingScope = _core.BlockingScope
    on_worker = _core.on_scheduler_worker
    slots = _core.scheduler_slots
    set_slots = _core.set_scheduler_slots
    stats = _core.scheduler_stats
except AttributeError as exc:  # a _core built without bind_scheduler.cpp
    raise ImportError(f"corral._core lacks the scheduler bindings ({exc}); rebuild corral") from exc
