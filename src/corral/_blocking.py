"""corral.blocking(): announce that the calling task is about to wait (I/O, a lock, a child process).

While inside, a corral task does not hold one of the budget's permits: another pool thread runs on
it, and the task takes a permit back when it leaves (ahead of tasks not yet started). Outside corral's
tasks it does nothing, so library code can use it unconditionally.

    with corral.blocking():
        data = sock.recv(65536)

    @corral.blocking            # or @corral.blocking()
    def download(url): ...
"""

from __future__ import annotations

import contextlib
import functools
import threading

from . import _permits


class _Blocking(contextlib.ContextDecorator):
    # One object may be entered by several threads at once (as a decorator it is shared): the
    # scopes live in a per-thread stack.
    def __init__(self):
        self._local = threading.local()

    def __enter__(self):
        scope = None
        if _permits.in_task():
            scope = _permits.Pause()
            scope.enter()
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(scope)
        return self

    def __exit__(self, *exc_info):
        stack = getattr(self._local, "stack", None)
        if not stack:  # the pause is the entering thread's: another thread cannot end it
            raise RuntimeError("corral.blocking(): exited without a matching entry on this thread "
                               "(exited twice, or on a thread that did not enter it)")
        scope = stack.pop()
        if scope is not None:
            scope.exit()
        return False


def blocking(func=None):
    """Announce a wait: `with corral.blocking(): ...`, `@corral.blocking` or `@corral.blocking()`.

    func: None (the call returns a context manager that is also a decorator) or a callable (the call
    returns it wrapped, functools.wraps-style: each call of it runs inside the announcement).
    Inside a corral task, the task gives its permit back while inside and takes one again when it leaves
    (ahead of tasks not yet started; docs/permits.md); outside corral's tasks it does nothing. Exceptions
    pass through unchanged; the context manager is reentrant and may be shared by threads.
    Raises TypeError when `func` is given but not callable, and RuntimeError when a scope is left more
    often than it was entered on the leaving thread (twice, or on a thread that did not enter it: the
    pause is the entering thread's). No stdlib counterpart.
    """
    if func is None:
        return _Blocking()
    if not callable(func):
        raise TypeError(f"corral.blocking: expected a function to decorate, got {type(func).__name__}")
    return functools.wraps(func)(_Blocking()(func))
