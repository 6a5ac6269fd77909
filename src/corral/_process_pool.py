"""corral.Pool: multiprocessing.Pool whose workers each get a share of the budget.

Every worker gets its own CPUs (a static partition of the budget: disjoint while workers <= CPUs,
SMT siblings and NUMA nodes together, widened by `factor`), thread limits in its environment
before its libraries load, and the thread counts of already loaded native libraries set to
its share. A replacement worker (maxtasksperchild, a crash) gets the same CPUs again.

Unlike the stdlib's Pool, a worker that dies does not leave its task waiting forever: the pool
becomes broken, every pending result raises BrokenProcessPool naming the worker's pid and
exit, and new work is refused. A worker has died when it is killed by a signal, exits with a
non-zero code (e.g. an initializer that raised), or exits with code 0 while it holds a task
(sys.exit(), os._exit(0) in a task) or, with maxtasksperchild=None, at any time the pool runs.
A worker that retires after its maxtasksperchild tasks, between tasks, has not died.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.context
import multiprocessing.pool
import signal
import threading
import weakref

from . import _compat, _joblib, _worker_share

__all__ = ["Pool", "patch_targets", "futures_patch_targets", "context_pool"]  # and BrokenProcessPool (__getattr__)


# concurrent.futures (and the logging it imports: some 9 ms in all) is imported only where a program needs it:
# a program that makes only multiprocessing's pools never imports it under plain python (docs/architecture.md,
# "Start-up"). BrokenProcessPool is looked up when a pool breaks, or when someone asks this module for it.
PROCESS_EXECUTOR_MODULE = "corral._process_executor"  # imports concurrent.futures: with it (futures_patch_targets)
DEFERRED_IMPORTS = (PROCESS_EXECUTOR_MODULE,)  # tests/test_imports.py counts it in the module graph


def _broken_process_pool() -> type:
    from concurrent.futures.process import BrokenProcessPool

    return BrokenProcessPool


def __getattr__(name: str):
    if name == "BrokenProcessPool":
        return _broken_process_pool()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe_exit(pid: int | None, exitcode: int | None, *, in_task: bool = False) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process {pid} was killed by {name} (exit code {exitcode})"
    during = " in the middle of a task (sys.exit() or os._exit() in the task?)" if in_task else ""
    return f"worker process {pid} exited with code {exitcode}{during}"


# --- which worker holds a task ---------------------------------------------------------------
# A worker that exits with code 0 may be retiring (maxtasksperchild) or may have lost its task
# (sys.exit() in it): the stdlib's worker tells the parent nothing before a task ends. So each
# corral worker marks, in a byte of shared memory the parent reads after the exit, whether it holds
# a task: set when its loop takes a task off the queue, cleared once the result is sent.


def _tracked_worker(busy, inqueue, outqueue, *args):
    """The stdlib's pool worker loop (multiprocessing.pool.worker), with `busy` marking tasks held."""
    _compat.pool_worker(_MarksTaskTaken(inqueue, busy), _MarksResultSent(outqueue, busy), *args)


class _MarksTaskTaken:
    """The worker's task queue: get() sets `busy` once a task (not the end sentinel) is taken."""

    def __init__(self, queue, busy):
        self._queue, self._busy = queue, busy

    def get(self):
        task = self._queue.get()
        if task is not None:
            self._busy.value = 1
        return task

    def __getattr__(self, name):  # _writer, _reader...: the real queue's
        return getattr(self._queue, name)


class _MarksResultSent(_MarksTaskTaken):
    """The worker's result queue: put() clears `busy` once the result is sent."""

    def put(self, obj):
        self._queue.put(obj)
        self._busy.value = 0


class Pool(_worker_share.SharesMixin, multiprocessing.pool.Pool):
    """multiprocessing.pool.Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None,
    context=None, *, factor=None, force=None) with one CPU share per worker.

    processes: workers (default: the budget, corral.budget().cpus, not os.cpu_count()).
    factor: oversubscription factor >= 1; each worker's CPU set grows to ceil(size * factor)
        (None: 1, or what corral.patch(factor=) / the runner's -f set).
    force: give every thread-limit variable the worker's share, even where the user set a lower
        value (default: the lower of the user's value and the share wins, docs/native.md;
        None: False, or what corral.patch(force=) / the runner's --force set).
    The other arguments, and every method (apply, map, starmap, imap, imap_unordered and their *_async
    forms, close/terminate/join, the context manager), are the stdlib's, which it subclasses, with
    the same errors (ValueError for processes < 1, TypeError for a non-callable initializer).
    Raises TypeError / ValueError for a factor that is not a number >= 1.
    One difference, on purpose: a worker that dies breaks the pool (see the module's docs): every
    pending result raises concurrent.futures.process.BrokenProcessPool, and so does every later call,
    where the stdlib's pool would wait for ever.
    `shares`: the list of each worker's WorkerShare (CPUs, threads, environment).
    """

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None, *, factor: float | None = None, force: bool | None = None):
        # The process pool's set-up (_process_pool_init), named __init__ so that its argument errors read
        # "Pool.__init__()"; the __init__ below calls it, or hands a thread pool its arguments as given.
        self._state = _compat.POOL_INIT  # read by Pool.__del__ if planning fails below
        self._pool = []
        self._broken = None
        self._broken_lock = threading.Lock()
        if processes is None:
            processes = _worker_share.default_workers()
        table = _worker_share.share_table_for(processes, factor=factor, force=force)
        if table is not None:
            on_exit = weakref.WeakMethod(self._worker_exited)
            context = _worker_share.ShareContext(context, table,
                                                 on_exit=lambda process: _call_weak(on_exit, process))
            self._share_table = table
        super().__init__(processes, initializer, initargs, maxtasksperchild, context)

    _process_pool_init = __init__

    @functools.wraps(_process_pool_init)  # its signature, name and docs
    def __init__(self, *args, **kwargs):  # noqa: F811 (the dispatch above names)
        if _is_thread_pool(self):
            super().__init__(*args, **kwargs)  # as if this class were not there: the caller's arguments
        else:
            Pool._process_pool_init(self, *args, **kwargs)

    @staticmethod
    def _needs_init(pool) -> bool:
        """Whether the stdlib's __init__, called on `pool`, should run this class's instead: corral.patch()'s
        redirected stdlib __init__ asks, for a class rebased onto this one that calls the stdlib's __init__
        by name. Not once this class's __init__ has begun, nor for a thread pool (whose own set-up calls it)."""
        return "_broken_lock" not in vars(pool) and not _is_thread_pool(pool)

    class _Process:
        """Pool.Process(ctx, *args, **kwds), the stdlib's static method (it calls `self.Process(ctx, ...)`), with
        the worker loop marking the tasks it holds (_tracked_worker); on a thread pool, the next class's."""

        def __get__(self, pool, owner=None):
            on = owner if pool is None else pool  # a class too: `A.Process` is the stdlib's static method
            thread_pool = issubclass(owner, _STDLIB_THREAD_POOL) if pool is None else _is_thread_pool(pool)
            return super(Pool, on).Process if thread_pool else _tracked_process

    Process = _Process()
    del _Process

    def _check_running(self):
        broken = getattr(self, "_broken", None)  # never set on a thread pool
        if broken is not None:
            raise _broken_process_pool()(f"this pool is broken: {broken}")
        super()._check_running()

    def _worker_exited(self, process) -> None:
        """Called (in the parent) when a worker process has been reaped."""
        exitcode = process.exitcode
        if exitcode is None:
            return
        busy = getattr(process, "_corral_busy", None)
        in_task = busy is not None and busy.value != 0
        if exitcode == 0 and not in_task and not self._exit_unexpected():
            return  # retired after maxtasksperchild tasks, or sent home by close()/terminate()
        if self._state == _compat.POOL_TERMINATE:
            return
        handler = getattr(self, "_worker_handler", None)
        if handler is not None and getattr(handler, "_state", None) == _compat.POOL_TERMINATE:
            return  # terminate() or the pool's finalizer is ending the workers
        with self._broken_lock:
            if self._broken is None:
                self._broken = describe_exit(process.pid, exitcode, in_task=in_task)
            reason = self._broken
        error = _broken_process_pool()(
            f"{reason}; the task it was running is lost, so every pending result of this pool fails")
        for job, result in list(self._cache.items()):
            _compat.fail_pending_result(self._cache, job, result, error)
    def _exit_unexpected(self) -> bool:
        """Whether a worker that exited with code 0 between tasks left unasked: without
        maxtasksperchild a worker leaves only when close()/terminate() sends it home (e.g. not
        when its initializer calls sys.exit())."""
        return self._maxtasksperchild is None and self._state == _compat.POOL_RUN


def _tracked_process(ctx, *args, **kwds):  # Pool.Process (named so below)
    """Pool.Process: the stdlib's (a static method), with the worker loop marking the tasks it holds."""
    if kwds.get("target") is not _compat.pool_worker:
        return ctx.Process(*args, **kwds)
    busy = ctx.RawValue("b", 0)  # shared memory: inherited by fork, passed along by spawn
    kwds["target"] = _tracked_worker
    kwds["args"] = (busy, *kwds.get("args", ()))
    process = ctx.Process(*args, **kwds)
    process._corral_busy = busy
    return process


_tracked_process.__name__, _tracked_process.__qualname__ = "Process", "Pool.Process"  # found by pickle as that


# A class on both a subclass of Pool defined under corral.patch() (rebased onto corral's Pool) and ThreadPool,
# `class T(MyPool, ThreadPool)`, is a thread pool under plain python (MRO T, MyPool, ThreadPool, Pool). Under
# the patch C3 puts corral's Pool before ThreadPool, so each of this class's methods hands such an instance on
# to the next class, as if it were not there (docs/processes.md).
_STDLIB_THREAD_POOL = multiprocessing.pool.ThreadPool  # the stdlib's class: corral.patch() replaces the name


def _is_thread_pool(pool) -> bool:
    return isinstance(pool, _STDLIB_THREAD_POOL)


def _call_weak(method_ref, process) -> None:
    method = method_ref()
    if method is not None:
        method(process)


def context_pool(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None):
    """Replacement for multiprocessing.context.BaseContext.Pool (what `multiprocessing.Pool` is):
    a corral.Pool on this context."""
    return Pool(processes, initializer, initargs, maxtasksperchild, context=self.get_context())


def patch_targets(*, futures: bool = True, joblib: bool = True):
    """(owner, attribute, replacement) for every name corral.patch() should replace to put
    process pools under corral:
      multiprocessing.context.BaseContext.Pool (multiprocessing.Pool),
      with `futures` true those of futures_patch_targets() (this imports concurrent.futures: corral.patch()
      asks for them once the program imports it),
      and, with joblib installed and `joblib` true, the thread limits joblib gives loky workers
      (this imports joblib, and numpy with it: corral.patch() asks for those only once the
      program imports joblib itself).
    The name multiprocessing.pool.Pool stays the stdlib's class, whose subclass ThreadPool is
    (corral.patch() makes constructing it, and subclasses defined under the patch, corral's).
    """
    targets = [(multiprocessing.context.BaseContext, "Pool", context_pool)]
    if futures:
        targets.extend(futures_patch_targets())
    if joblib:
        targets.extend(_joblib.patch_targets())
    return targets


def futures_patch_targets():
    """concurrent.futures.ProcessPoolExecutor (and .process.ProcessPoolExecutor), as patch_targets() gives them;
    imports concurrent.futures."""
    import concurrent.futures.process
    import importlib

    ProcessPoolExecutor = importlib.import_module(PROCESS_EXECUTOR_MODULE).ProcessPoolExecutor  # noqa: N806 (a class)
    return [
        (concurrent.futures.process, "ProcessPoolExecutor", ProcessPoolExecutor),
        (concurrent.futures, "ProcessPoolExecutor", ProcessPoolExecutor),
    ]
