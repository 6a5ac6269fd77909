"""corral.ThreadPool: multiprocessing.pool.ThreadPool under the CPU budget.

It is the stdlib's pool, threads and all: `processes` threads (`_pool`), the initializer once per
thread, the stdlib's task and result threads, close/terminate/join and exit behaviour. What corral
adds is inside each task (one apply, or one chunk of a map): it runs while its thread holds one of the
process's permits, with BLAS/OpenMP thread limits set for it, and gives the permit back while it
waits (see _executor).
"""

from __future__ import annotations

import functools
import multiprocessing.pool as _stdlib

from . import _permits, _pool_settings, _work_queue


class ThreadPool(_stdlib.ThreadPool):
    """multiprocessing.pool.ThreadPool(processes=None, initializer=None, initargs=()) whose tasks run
    under the process's CPU budget.

    Same arguments, defaults, errors and behaviour as the stdlib class, which it subclasses: apply,
    map, starmap, imap, imap_unordered and their *_async forms, close/terminate/join, the context
    manager; ValueError for processes < 1, TypeError for a non-callable initializer. processes defaults
    to the stdlib's os.cpu_count(), not the budget: it bounds tasks in flight, and the budget bounds how
    many of them run. Each task (an apply call, or a chunk of a map) holds a permit while it runs and
    gets inner BLAS/OpenMP threads per the pool settings.
    """

    def __init__(self, processes=None, initializer=None, initargs=()):
        super().__init__(processes, initializer, initargs)
        self._corral_spec()

    def _corral_spec(self):
        """The pool's permit spec, made once: here, or at the first task of a subclass that set itself up
        with `Pool.__init__(self, ...)` by name, skipping this class's __init__ (the stdlib's own
        ThreadPool.__init__ is just that call, so plain python runs such a class)."""
        spec = vars(self).get("_corral_inner")
        if spec is None:
            # map's items pass through _taskqueue (a whole map as one entry) into _inqueue
            spec = vars(self).setdefault("_corral_inner", _permits.spec(
                _pool_settings.inner_threads(self._processes), self._processes, False, self._inqueue,
                self._taskqueue))  # setdefault: two first tasks submitted at once make one spec
            _permits.start()
        return spec

    def _setup_queues(self):
        super()._setup_queues()
        self._inqueue = _work_queue.WorkQueue()  # before the workers start (Pool.__init__)
        self._quick_put = self._inqueue.put

    def _permitted(self, func):
        return functools.partial(_permits.run, self._corral_spec(), func)

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        return super().apply_async(self._permitted(func), args, kwds, callback, error_callback)

    apply_async.__doc__ = _stdlib.Pool.apply_async.__doc__

    # map, starmap, imap and imap_unordered (and their *_async forms) hand every task to this one
    # (a stdlib internal: see _compat).
    def _guarded_task_generation(self, result_job, func, iterable):
        return super()._guarded_task_generation(result_job, self._permitted(func), iterable)
