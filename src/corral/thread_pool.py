"""corral.ThreadPool: multiprocessing.pool.ThreadPool on corral's scheduler.

The whole stdlib API (apply, map, starmap, imap, imap_unordered, their *_async forms with callbacks,
close/terminate/join, the context manager), and an instance of the stdlib class. `processes` keeps its
meaning: how many tasks may be in flight at once; only about budget-many of them run at once, on the
process-wide scheduler's workers. Results are the stdlib's own result classes, completed one at a time
(as the stdlib's result thread does); waiting on them from a corral task gives up the task's slot.

Differences, all where the stdlib would hang: a failing initializer fails the tasks it was run for
(the stdlib restarts the worker forever); terminate() fails the tasks it discards with an error
(the stdlib leaves their results pending for ever).
"""

from __future__ import annotations

import itertools
import multiprocessing.pool as _stdlib
import os
import queue
import threading
import weakref

from . import _dispatch, _scheduler
from ._dispatch import Dispatcher, WorkItem

_live_pools: "weakref.WeakSet[ThreadPool]" = weakref.WeakSet()
# The stdlib's chunking, taken before a patch may replace multiprocessing.pool.Pool.
_get_tasks = _stdlib.Pool._get_tasks


class _PoolEvent:
    """threading.Event's interface on corral's scheduler event (see corral.Future)."""

    __slots__ = ("_event",)

    def __init__(self):
        self._event = _scheduler.Event()

    def is_set(self):
        return self._event.is_set()

    def set(self):
        self._event.set()

    def wait(self, timeout=None):
        if self._event.is_set():
            return True
        with _dispatch.lent_place():
            return self._event.wait(timeout)


class _CorralEventResult:
    """Mixed in front of a stdlib result class: its threading.Event becomes a _PoolEvent, set
    already where the stdlib's was (an empty map is done at once)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        event = _PoolEvent()
        if self._event.is_set():
            event.set()
        self._event = event


class _ApplyResult(_CorralEventResult, _stdlib.ApplyResult):
    pass


class _MapResult(_CorralEventResult, _stdlib.MapResult):
    pass


class _PoolItem(WorkItem):
    """One task of the stdlib's form (job, i, func, args, kwds)."""

    __slots__ = ("pool", "task")

    def __init__(self, pool, task):
        self.pool = pool
        self.task = task

    def run(self):
        job, i, func, args, kwds = self.task
        try:
            outcome = (True, func(*args, **kwds))
        except BaseException as exc:  # the stdlib lets KeyboardInterrupt kill the worker: a hang
            outcome = (False, exc)
        self.pool._deliver(job, i, outcome)

    def fail(self, exc):
        job, i = self.task[:2]
        self.pool._deliver(job, i, (False, exc))


class ThreadPool(_stdlib.ThreadPool):
    def __init__(self, processes=None, initializer=None, initargs=()):
        # Attributes the stdlib's __del__ and results read, set first.
        self._pool = []
        self._state = _stdlib.INIT
        self._cache = {}
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._results_lock = threading.Lock()  # results complete one at a time, as in the stdlib
        self._dispatcher = Dispatcher(processes, initializer=initializer, initargs=initargs)
        self._feeder = None  # a thread that walks imap()'s iterables, started on first use
        self._feeder_queue = queue.SimpleQueue()
        self._feeder_lock = threading.Lock()
        self._state = _stdlib.RUN
        _live_pools.add(self)

    def __repr__(self):
        return (f"<{type(self).__module__}.{type(self).__qualname__} state={self._state} "
                f"pool_size={self._processes} in_flight={self._dispatcher.in_flight()}>")

    # -- submitting ---------------------------------------------------------------------------------

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        self._check_running()
        result = _ApplyResult(self, callback, error_callback)
        self._put((result._job, 0, func, args, kwds))
        return result

    def _map_async(self, func, iterable, mapper, chunksize=None, callback=None, error_callback=None):
        self._check_running()
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(iterable), self._processes * 4)
            if extra:
                chunksize += 1
        if len(iterable) == 0:
            chunksize = 0
        result = _MapResult(self, chunksize, len(iterable), callback, error_callback=error_callback)
        batches = _get_tasks(func, iterable, chunksize)
        for task in self._guarded_task_generation(result._job, mapper, batches):
            self._put(task)
        return result

    def imap(self, func, iterable, chunksize=1):
        return self._imap(_stdlib.IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        return self._imap(_stdlib.IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(self, iterator_type, func, iterable, chunksize):
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        result = iterator_type(self)
        if chunksize == 1:
            tasks = self._guarded_task_generation(result._job, func, iterable)
        else:
            batches = _get_tasks(func, iterable, chunksize)
            tasks = self._guarded_task_generation(result._job, _stdlib.mapstar, batches)
        # As the stdlib's task thread does: the iterable is walked in the background, so imap returns
        # at once even for a long or endless generator.
        self._feed(tasks, result._set_length)
        if chunksize == 1:
            return result
        return (item for chunk in result for item in chunk)

    def _put(self, task):
        self._dispatcher.put(_PoolItem(self, task))

    def _feed(self, tasks, set_length):
        with self._feeder_lock:
            if self._feeder is None:
                self._feeder = threading.Thread(target=self._feed_forever, name="corral-pool-feeder",
                                                daemon=True)
                self._feeder.start()
            self._feeder_queue.put((tasks, set_length))

    def _feed_forever(self):
        while True:
            entry = self._feeder_queue.get()
            if entry is None:
                return
            tasks, set_length = entry
            count = 0
            for task in tasks:
                if self._state == _stdlib.TERMINATE:
                    break
                self._put(task)
                count += 1
            else:
                set_length(count)

    def _deliver(self, job, i, outcome):
        with self._results_lock:
            result = self._cache.get(job)
            if result is not None:
                result._set(i, outcome)

    # -- stopping -----------------------------------------------------------------------------------

    def close(self):
        if self._state == _stdlib.RUN:
            self._state = _stdlib.CLOSE
            self._stop_feeder()

    def terminate(self):
        self._state = _stdlib.TERMINATE
        self._stop_feeder()
        discarded = self._dispatcher.drain()
        if discarded:
            error = RuntimeError("the pool was terminated before this task started")
            for item in discarded:
                item.fail(error)

    def join(self):
        if self._state == _stdlib.RUN:
            raise ValueError("Pool is still running")
        if self._state not in (_stdlib.CLOSE, _stdlib.TERMINATE):
            raise ValueError("In unknown state")
        feeder = self._feeder
        if feeder is not None and feeder is not threading.current_thread():
            from .blocking import blocking

            with blocking():
                feeder.join()
        self._dispatcher.wait_idle()

    def _stop_feeder(self):
        with self._feeder_lock:
            if self._feeder is not None:
                self._feeder_queue.put(None)

    def __del__(self):
        if getattr(self, "_state", None) == _stdlib.RUN:
            import warnings

            warnings.warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
            self._stop_feeder()


def _stop_pools_at_exit():
    # The stdlib terminates its pools as the interpreter exits; likewise, and tasks already running
    # finish first so that no task runs Python code while the interpreter is torn down.
    for pool in list(_live_pools):
        if pool._state == _stdlib.RUN:
            pool.terminate()
        pool._dispatcher.wait_idle()


threading._register_atexit(_stop_pools_at_exit)
