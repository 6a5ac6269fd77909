"""The work queue of corral's thread pools: a queue.SimpleQueue whose pool threads claim their permit
before they take a task (bindings/bind_work_queue.cpp; docs/permits.md, "Claims").

ThreadPoolExecutor._work_queue and ThreadPool._inqueue are SimpleQueues in the stdlib; these are the
same queue, so everything else that uses them (shutdown's drain, the sentinels, qsize()) sees what it
sees under plain python.
"""

from __future__ import annotations

import queue

from . import _core


class WorkQueue(queue.SimpleQueue):
    """queue.SimpleQueue; a pool thread's get() / get_nowait() waits for its permit, not holding a task,
    while tasks are queued and no permit is free, and put(None) ends such waits."""

    __slots__ = ("_signal",)

    def __init__(self):
        self._signal = _core.WorkSignal()  # put() counts; empty-queue waits wait on it


_core.install_work_queue_methods(WorkQueue)  # get, get_nowait, put: C methods of this class
