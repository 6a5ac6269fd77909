"""corral.Pool: multiprocessing.Pool whose workers each get a share of the budget.

Every worker gets its own CPUs (a static partition of the budget: disjoint while workers <= CPUs,
SMT siblings and NUMA nodes together, widened by `factor`), thread limits in its environment
before its libraries load, and the thread counts of already loaded native libraries set to
its share. A replacement worker (maxtasksperchild, a crash) gets the same CPUs again.

Unlike the stdlib's Pool, a worker that dies (killed by a signal, or exiting with a non-zero
code, e.g. an initializer that raised) does not leave its task waiting forever: the pool
becomes broken, every pending result raises BrokenProcessPool naming the worker's pid and
signal, and new work is refused.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import signal
import threading
import weakref
from concurrent.futures.process import BrokenProcessPool

from . import worker_share

__all__ = ["Pool", "BrokenProcessPool", "patch_targets", "context_pool"]

# The stdlib class, kept before any patch replaces the module attribute.
_STDLIB_POOL = multiprocessing.pool.Pool


def describe_exit(pid: int | None, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process {pid} was killed by {name} (exit code {exitcode})"
    return f"worker process {pid} exited with code {exitcode}"


class Pool(worker_share.SharesMixin, multiprocessing.pool.Pool):
    """multiprocessing.pool.Pool with one CPU share per worker.

    processes: workers (default: the budget, not os.cpu_count()).
    factor: oversubscription factor >= 1; each worker's CPU set grows to ceil(size * factor)
        (None: 1, or what corral.patch(factor=) / the runner's -f set).
    force: set the thread-limit variables even where the user set them (None: False, or what
        corral.patch(force=) / the runner's --force set).
    The other arguments are the stdlib's.
    """

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None, *, factor: float | None = None, force: bool | None = None):
        if not isinstance(self, Pool):
            # The stdlib's ThreadPool.__init__ calls `Pool.__init__` through its module global,
            # which a patch makes this class: a thread pool gets the stdlib's own set-up.
            _STDLIB_POOL.__init__(self, processes, initializer, initargs, maxtasksperchild, context)
            return
        self._state = multiprocessing.pool.INIT  # read by Pool.__del__ if planning fails below
        self._pool = []
        self._broken = None
        self._broken_lock = threading.Lock()
        if processes is None:
            processes = worker_share.default_workers()
        table = worker_share.slot_table_for(processes, factor=factor, force=force)
        if table is not None:
            on_exit = weakref.WeakMethod(self._worker_exited)
            context = worker_share.ShareContext(context, table,
                                                on_exit=lambda process: _call_weak(on_exit, process))
            self._slot_table = table
        super().__init__(processes, initializer, initargs, maxtasksperchild, context)

    def _check_running(self):
        if self._broken is not None:
            raise BrokenProcessPool(f"this pool is broken: {self._broken}")
        super()._check_running()

    def _worker_exited(self, process) -> None:
        """Called (in the parent) when a worker process has been reaped."""
        exitcode = process.exitcode
        if exitcode == 0 or exitcode is None:
            return  # maxtasksperchild, or the end of the pool
        if self._state == multiprocessing.pool.TERMINATE:
            return
        handler = getattr(self, "_worker_handler", None)
        if handler is not None and getattr(handler, "_state", None) == multiprocessing.pool.TERMINATE:
            return  # terminate() or the pool's finalizer is ending the workers
        with self._broken_lock:
            if self._broken is None:
                self._broken = describe_exit(process.pid, exitcode)
            reason = self._broken
        error = BrokenProcessPool(
            f"{reason}; the task it was running is lost, so every pending result of this pool fails")
        for job, result in list(self._cache.items()):
            _fail(self._cache, job, result, error)


def _call_weak(method_ref, process) -> None:
    method = method_ref()
    if method is not None:
        method(process)


def _fail(cache, job, result, error: BaseException) -> None:
    """Ends a pending ApplyResult / MapResult / IMapIterator with `error`."""
    if isinstance(result, multiprocessing.pool.IMapIterator):
        with result._cond:
            result._items.append((False, error))
            result._index += 1
            result._length = result._index  # the consumer gets the error, then StopIteration
            result._cond.notify()
    else:
        if result.ready():
            return
        result._success = False
        result._value = error
        callback = getattr(result, "_error_callback", None)
        if callback is not None:
            try:
                callback(error)
            except Exception:  # noqa: BLE001  (the stdlib ignores nothing here, but a callback must not stop the others)
                pass
        result._event.set()
    try:
        del cache[job]
    except KeyError:
        pass
    result._pool = None


def context_pool(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None):
    """Replacement for multiprocessing.context.BaseContext.Pool (what `multiprocessing.Pool` is):
    a corral.Pool on this context."""
    return Pool(processes, initializer, initargs, maxtasksperchild, context=self.get_context())


def patch_targets(*, joblib: bool = True):
    """(owner, attribute, replacement) for every name corral.patch() should replace to put
    process pools under corral:
      multiprocessing.pool.Pool, multiprocessing.context.BaseContext.Pool (multiprocessing.Pool),
      concurrent.futures.ProcessPoolExecutor (and .process.ProcessPoolExecutor),
      and, with joblib installed and `joblib` true, the thread limits joblib gives loky workers
      (this imports joblib, and numpy with it: corral.patch() asks for those only once the
      program imports joblib itself).
    """
    import concurrent.futures
    import concurrent.futures.process
    import multiprocessing.context

    from .process_executor import ProcessPoolExecutor

    targets = [
        (multiprocessing.pool, "Pool", Pool),
        (multiprocessing.context.BaseContext, "Pool", context_pool),
        (concurrent.futures.process, "ProcessPoolExecutor", ProcessPoolExecutor),
        (concurrent.futures, "ProcessPoolExecutor", ProcessPoolExecutor),
    ]
    if joblib:
        from . import thread_limits

        targets.extend(thread_limits.joblib_patch_targets())
    return targets
