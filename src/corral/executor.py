"""corral.ThreadPoolExecutor: concurrent.futures.ThreadPoolExecutor on corral's scheduler.

The whole stdlib API, and an instance of the stdlib class (isinstance checks, asyncio's
run_in_executor and set_default_executor work). `max_workers` keeps its meaning: how many tasks may
be in flight at once; only about budget-many of them run at once, on the process-wide scheduler's
workers. Futures are corral.Future (a concurrent.futures.Future): waiting on one from a corral task
runs other tasks meanwhile instead of holding a core.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.thread as _stdlib_thread
import itertools
import os
import threading
import weakref

from . import _dispatch, _scheduler
from ._dispatch import Dispatcher, WorkItem

_LOGGER = concurrent.futures._base.LOGGER
_executor_numbers = itertools.count()
_live_executors: "weakref.WeakSet[ThreadPoolExecutor]" = weakref.WeakSet()


class Future(concurrent.futures.Future):
    """A concurrent.futures.Future whose waits use corral's scheduler event.

    result()/exception() release the GIL while waiting; on a corral worker they run other tasks (or
    lend the worker's slot), so a task that waits on a task of its own pool cannot deadlock it.
    """

    def __init__(self):
        super().__init__()
        self._corral_done = _scheduler.Event()

    def _wait_done(self, timeout):
        if not self.done():
            with _dispatch.lent_place():
                self._corral_done.wait(timeout)

    def result(self, timeout=None):
        self._wait_done(timeout)
        return super().result(timeout=0 if timeout is None or timeout > 0 else timeout)

    def exception(self, timeout=None):
        self._wait_done(timeout)
        return super().exception(timeout=0 if timeout is None or timeout > 0 else timeout)

    def cancel(self):
        cancelled = super().cancel()
        if cancelled:
            self._corral_done.set()
        return cancelled

    def set_result(self, result):
        try:
            super().set_result(result)
        finally:
            self._corral_done.set()

    def set_exception(self, exception):
        try:
            super().set_exception(exception)
        finally:
            self._corral_done.set()


class _ExecutorItem(WorkItem):
    __slots__ = ("future", "fn", "args", "kwargs", "executor")

    def __init__(self, executor, future, fn, args, kwargs):
        self.executor = executor
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self):
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.future.set_exception(exc)
            self = None  # break the cycle through the traceback, as the stdlib does
        else:
            self.future.set_result(result)

    def fail(self, exc):
        if self.future.set_running_or_notify_cancel():
            broken = self.executor._broken
            self.future.set_exception(_stdlib_thread.BrokenThreadPool(broken) if broken else exc)


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=()):
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)  # the stdlib's default
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._broken = False
        self._thread_name_prefix = thread_name_prefix or f"ThreadPoolExecutor-{next(_executor_numbers)}"
        self._initializer = initializer
        self._initargs = initargs
        self._threads = set()  # the stdlib's attribute; corral's tasks run on the scheduler's threads
        self._dispatcher = Dispatcher(
            max_workers, initializer=initializer, initargs=initargs,
            on_initializer_failure=self._corral_initializer_failed,
            thread_name_prefix=self._thread_name_prefix,
        )
        _live_executors.add(self)

    def submit(self, fn, /, *args, **kwargs):
        with self._shutdown_lock:
            if self._broken:
                raise _stdlib_thread.BrokenThreadPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _stdlib_thread._shutdown:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            future = Future()
            self._dispatcher.put(_ExecutorItem(self, future, fn, args, kwargs))
            return future

    submit.__doc__ = concurrent.futures.ThreadPoolExecutor.submit.__doc__

    def _corral_initializer_failed(self, exc):
        _LOGGER.critical("Exception in initializer:", exc_info=exc)
        with self._shutdown_lock:
            self._broken = "A thread initializer failed, the thread pool is not usable anymore"
            queued = self._dispatcher.drain()
        for item in queued:
            item.fail(exc)

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._shutdown_lock:
            self._shutdown = True
            queued = self._dispatcher.drain() if cancel_futures else []
        for item in queued:
            item.future.cancel()
        if wait:
            self._dispatcher.wait_idle()

    shutdown.__doc__ = concurrent.futures.ThreadPoolExecutor.shutdown.__doc__

    def _adjust_thread_count(self):  # the stdlib's hook: corral starts no threads of its own
        pass


def _wait_for_executors_at_exit():
    # Like the stdlib's: work already submitted finishes before the interpreter goes away, so that
    # no task runs Python code while it is being torn down.
    for executor in list(_live_executors):
        executor._dispatcher.wait_idle()


threading._register_atexit(_wait_for_executors_at_exit)
