"""The work queue of corral's thread pools: a queue.SimpleQueue whose pool threads give back the permit
they kept from their last task when they find it empty, and sleep newest-first (bindings/bind_work_queue.cpp;
docs/permits.md, "Taking tasks"). A thread takes a task as the stdlib's takes it; the task then waits for
its permit, RUNNING.

ThreadPoolExecutor._work_queue and ThreadPool._inqueue are SimpleQueues in the stdlib; these are the
same queue, so everything else that uses them (shutdown's drain, the sentinels, qsize()) sees what it
sees under plain python.
"""

from __future__ import annotations

import queue

from . import _core


class WorkQueue(queue.SimpleQueue):
    """queue.SimpleQueue; get() / get_nowait() on an empty queue give back the permit the calling pool
    thread kept from its last task, and put() wakes the thread that went to sleep last."""

    __slots__ = ("_signal",)

    def __init__(self):
        self._signal = _core.WorkSignal()  # put() counts; empty-queue waits wait on it


_core.install_work_queue_methods(WorkQueue)  # get, get_nowait, put: C methods of this class
