"""A pool's tasks in flight: at most `limit` handed to the scheduler at once, the rest queued in order.

This is what `processes` / `max_workers` mean in corral's pools: how many of the pool's tasks may be
started (running, or waiting in I/O) at once, like the stdlib's worker threads. How many actually run
at once is the scheduler's business: about budget-many, across every pool of the process.

Per-thread start-up (the pools' `initializer`) runs once in each scheduler thread before the first
task of this pool that the thread runs, so thread-local state set up there is seen by the task.
"""

from __future__ import annotations

import collections
import itertools
import threading

from . import _pool_settings, _scheduler, _wait_hooks

_running = threading.local()  # .dispatchers: the pools whose tasks this thread is inside, innermost last


def current() -> "Dispatcher | None":
    """The dispatcher whose task the calling thread is running (innermost), or None."""
    stack = getattr(_running, "dispatchers", None)
    return stack[-1] if stack else None


class lent_place:
    """While a task waits on a corral future or pool result, its place in flight goes to the next
    queued task of its pool: a pool of one whose task waits on a task of the same pool still runs it.
    Outside a pool task it does nothing."""

    __slots__ = ("_dispatcher",)

    def __enter__(self):
        self._dispatcher = current()
        if self._dispatcher is not None:
            self._dispatcher._lend()

    def __exit__(self, *exc_info):
        if self._dispatcher is not None:
            self._dispatcher._reclaim()


class WorkItem:
    """What a pool hands to the dispatcher: run() on a worker, or fail(exc) if it can never run."""

    __slots__ = ()

    def run(self) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        raise NotImplementedError


class Dispatcher:
    def __init__(self, limit: int, *, initializer=None, initargs=(), on_initializer_failure=None,
                 thread_name_prefix: str | None = None):
        _wait_hooks.install()  # for the life of the process: the pool's tasks need the hooks
        self._limit = limit
        self._queue: collections.deque[WorkItem] = collections.deque()
        self._in_flight = 0  # places taken, at most `limit` (plus places reclaimed after a wait)
        self._unfinished = 0  # items handed to the scheduler and not yet finished
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._initializer = initializer
        self._initargs = initargs
        self._on_initializer_failure = on_initializer_failure
        self._thread_name_prefix = thread_name_prefix
        self._thread_numbers = itertools.count()
        self._thread_state = threading.local()  # .ready, .name in this thread
        self._inner_threads = _pool_settings.inner_threads(limit)

    def put(self, item: WorkItem) -> None:
        with self._lock:
            if self._in_flight >= self._limit:
                self._queue.append(item)
                return
            self._in_flight += 1
            self._unfinished += 1
        self._submit(item)

    def _submit(self, item: WorkItem) -> None:
        try:
            _scheduler.submit(lambda: self._run(item), self._inner_threads)
        except BaseException as exc:  # the scheduler refused (e.g. the process is exiting)
            self._finished_one()
            item.fail(exc)
            raise

    def _run(self, item: WorkItem) -> None:
        stack = getattr(_running, "dispatchers", None)
        if stack is None:
            stack = _running.dispatchers = []
        stack.append(self)
        try:
            if self._prepare_thread():
                if self._thread_name_prefix is None:
                    item.run()
                else:
                    thread = threading.current_thread()
                    saved_name = thread.name
                    thread.name = self._thread_state.name
                    try:
                        item.run()
                    finally:
                        thread.name = saved_name
            else:
                item.fail(self._thread_state.failure)
        finally:
            stack.pop()
            self._next_after(item)

    def _prepare_thread(self) -> bool:
        """Runs the initializer in this thread once; False if it failed (here or before)."""
        state = self._thread_state
        if getattr(state, "ready", False):
            return True
        if hasattr(state, "failure"):
            return False
        if self._thread_name_prefix is not None:
            state.name = f"{self._thread_name_prefix}_{next(self._thread_numbers)}"
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:
                state.failure = exc
                if self._on_initializer_failure is not None:
                    self._on_initializer_failure(exc)
                return False
        state.ready = True
        return True

    def _next_after(self, item: WorkItem) -> None:
        with self._lock:
            self._unfinished -= 1
            if not self._queue or self._in_flight > self._limit:  # over the limit: a reclaimed place
                self._in_flight -= 1
                self._notify_if_idle()
                return
            following = self._queue.popleft()  # takes over this task's place
            self._unfinished += 1
        self._submit(following)

    def _lend(self) -> None:
        with self._lock:
            if not self._queue:
                self._in_flight -= 1
                return
            following = self._queue.popleft()  # in_flight unchanged: the waiter's place, lent
            self._unfinished += 1
        self._submit(following)

    def _reclaim(self) -> None:
        with self._lock:
            self._in_flight += 1  # may exceed the limit until the next task of the pool ends

    def _finished_one(self) -> None:  # an item the scheduler refused
        with self._lock:
            self._in_flight -= 1
            self._unfinished -= 1
            self._notify_if_idle()

    def _notify_if_idle(self) -> None:  # with the lock held
        if self._unfinished == 0 and not self._queue:
            self._idle.notify_all()

    def drain(self) -> list[WorkItem]:
        """Takes every queued (not yet started) item out, in order."""
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
            self._notify_if_idle()
            return items

    def in_flight(self) -> int:
        with self._lock:
            return self._unfinished

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until nothing is queued or in flight; a waiting corral worker gives up its slot."""
        from .blocking import blocking

        stack = getattr(_running, "dispatchers", None)
        if stack and self in stack:  # the stdlib: "cannot join current thread"
            raise RuntimeError("cannot wait for a pool to finish from one of its own tasks")
        with blocking(), self._lock:
            return self._idle.wait_for(lambda: self._unfinished == 0 and not self._queue, timeout)
