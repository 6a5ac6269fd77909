"""Waits that announce themselves: common blocking calls, made to give up the caller's permit.

A pool may keep 32 tasks in flight while only budget-many hold a permit. A task that sleeps or waits on
a socket without saying so would keep its permit idle and throttle the pool. These wrappers make the
usual waits behave as if inside corral.blocking() when, and only when, they run inside a corral task;
anywhere else they cost one C call and call the original.

Covered: time.sleep, select.select, the selectors' select(), blocking socket.socket
send/recv/accept/connect (and what uses them: socket.makefile, http.client, urllib),
threading.Condition.wait (hence Event, Barrier, Semaphore, queue.Queue, stdlib futures and results)
and threading.Thread.join (hence executor and pool shutdowns that wait). threading.Thread.start is
wrapped the other way: its short wait for the new thread keeps the permit.
Not covered: waits inside C extensions (plain Lock.acquire, ssl reads, os.read, subprocess waits);
wrap those in corral.blocking().

The wrappers are C (_core.AnnouncedWait): no frame of corral's in tracebacks or the recursion count, and a
module's function stays unbound on a class, as a builtin (docs/permits.md, "Waits that give the permit
back").

Installed once, by the first corral pool (or corral.patch()), for the life of the process: pools
built under a patch may outlive it, and their tasks still need the hooks.
"""

from __future__ import annotations

import functools
import select
import selectors
import socket
import threading
import time

from . import _compat, _core

_lock = threading.Lock()
_installed = False


def _announcing(original, should_announce=None, *, binds=True, in_task=None):
    """`original` wrapped: inside a corral task it runs with the task's permit given back (when
    should_announce(*args, **kwargs) is true, or always), or in_task(*args, **kwargs) runs instead.
    binds: a method (False: a module's function, which a class attribute leaves unbound as a builtin).
    The wrapper is C (_core.AnnouncedWait): no frame of corral's in tracebacks or the recursion count."""
    return _core.AnnouncedWait(original, should_announce, in_task, binds)


def _sleep_blocks(seconds=0, *args, **kwargs):
    try:
        return seconds > 0  # sleep(0) is a yield, not a wait
    except TypeError:
        return False  # let the original raise its own error


def _select_blocks(rlist=None, wlist=None, xlist=None, timeout=None, *args, **kwargs):
    return timeout is None or timeout > 0


def _selector_blocks(self, timeout=None, *args, **kwargs):
    return timeout is None or timeout > 0


def _join_blocks(self, timeout=None):
    try:
        return timeout is None or timeout > 0
    except TypeError:
        return False  # let the original raise its own error


def _socket_blocks(self, *args, **kwargs):
    return self.gettimeout() != 0.0  # a non-blocking socket never waits


def _condition_wait(original):
    """threading.Condition.wait that holds no permit while it waits, and takes its permit back *before*
    taking the condition's lock again: waiting for a permit while holding the lock could deadlock
    against the permit holders that wait for the lock. Same steps as the stdlib's own wait
    (its private members: see _compat)."""
    scope_type = _core.PermitPause
    allocate_lock = _compat.allocate_lock

    def wait(self, timeout=None):
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        saved_state = self._release_save()
        gotit = False
        try:  # restore state no matter what (e.g., KeyboardInterrupt)
            scope = scope_type()
            scope.enter()
            try:
                if timeout is None:
                    waiter.acquire()
                    gotit = True
                elif timeout > 0:
                    gotit = waiter.acquire(True, timeout)
                else:
                    gotit = waiter.acquire(False)
            finally:
                scope.exit()
            return gotit
        finally:
            self._acquire_restore(saved_state)
            if not gotit:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    wait.__qualname__ = original.__qualname__  # its argument errors name Condition.wait(), as the stdlib's
    return _announcing(original, in_task=wait)


def _thread_start(original):
    """threading.Thread.start keeping the caller's permit: it waits only for the new thread to run
    its first instructions (tens of microseconds), and ThreadPoolExecutor.submit calls it holding
    a module-wide lock; giving the permit back there let another task block on that lock holding
    its own permit (docs/permits.md, "Short waits")."""
    # functools.partial and the binding are C: no frame of corral's, and the original's own errors
    return _announcing(original, in_task=functools.partial(_core.call_with_short_waits, original))


def install() -> None:
    """Wraps the waits above (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        time.sleep = _announcing(time.sleep, _sleep_blocks, binds=False)
        select.select = _announcing(select.select, _select_blocks, binds=False)
        for name in ("SelectSelector", "PollSelector", "EpollSelector", "DevpollSelector", "KqueueSelector"):
            cls = getattr(selectors, name, None)
            if cls is not None and "select" in cls.__dict__:
                cls.select = _announcing(cls.__dict__["select"], _selector_blocks)
        for name in ("recv", "recv_into", "recvfrom", "recvfrom_into", "send", "sendall", "sendto",
                     "accept", "connect", "connect_ex", "sendfile"):
            original = getattr(socket.socket, name, None)
            if original is not None:
                setattr(socket.socket, name, _announcing(original, _socket_blocks))
        threading.Condition.wait = _condition_wait(threading.Condition.wait)
        threading.Thread.start = _thread_start(threading.Thread.start)
        # A join waits for another thread, which may need this thread's permit to finish its work
        # (an executor's `with` block ending with tasks still queued): Lock.acquire inside, which
        # only the monitor would see.
        threading.Thread.join = _announcing(threading.Thread.join, _join_blocks)
        _installed = True
