"""An idle Dask worker's CPUs lent to a busy one on the same machine (docs/children.md, "Lending").

Workers that split a machine's budget run on disjoint CPUs (_dask_worker's host table). When one has
no task running while another does, its CPUs sit idle, and the busy worker's large task runs on its
own share alone (W10's unbalanced load: the last large task on one CPU, the other CPU idle). The busy
worker borrows them instead, and gives them back as soon as their worker runs a task again.

The protocol, all by flock(2) on files beside the slot's (the kernel drops a lock when its process
ends, however it ends, so nothing needs cleaning up):
- `<slot>.busy` is held (LOCK_EX) by the slot's worker while it has a task running. Before it lets
  go, the worker writes the CLOCK_MONOTONIC time at which it went idle into the file (8 bytes).
- `<slot>.lent` is held (LOCK_EX) by the worker that borrowed the slot's CPUs: one borrower at a time.

A worker with a task running looks every LOOK_S (every RETURN_LOOK_S while it holds a borrowed slot,
whose worker may want it back: the look is a Python thread, and each wake-up asks a pure-Python task for
the GIL, so it looks often only where that matters). A live slot that is not busy, has been idle for
LEND_AFTER_NS at least (not the gap between two tasks of a busy worker: Dask's own scheduling takes a
few milliseconds) and is not lent, is borrowed: its lent lock taken, its CPUs added to the affinity of
every thread of the process, its threads to the permits and to the process-wide BLAS count
(_core.native_slots_changed). A borrowed slot is given back at the next look after its worker took its
busy lock again (a task started there; until then that task shares its CPUs for at most RETURN_LOOK_S) or
left the table, and every slot is given back when the borrower's last running task ends or its place
in the table changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import time

from . import _core

LOOK_S = 0.01
RETURN_LOOK_S = 0.002
LEND_AFTER_NS = 20_000_000  # 20 ms idle before a worker's CPUs are lent
_IDLE_SINCE = struct.Struct("<q")


def lendable(shares: list) -> list | None:
    """`shares` where no two share a CPU; None where some do (more workers than CPUs): a slot's CPUs
    are then not its own to lend, and a borrower would count a CPU twice."""
    cpus = [c for share in shares for c in share.cpus]
    return shares if len(cpus) == len(set(cpus)) else None


def _lock_file(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _let_go(fd: int) -> None:
    """Unlocks before closing: a child forked meanwhile shares the open file, which would keep the lock."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class Lending:
    """One worker process's side of the protocol: its own busy lock, and the slots it borrowed.

    `table` is the worker's HostTable (its slot claimed); `set_affinity(cpus, skip)` puts every thread
    of the process but those in `skip` on `cpus` and returns the threads it saw. The shares come with
    each place_changed."""

    def __init__(self, table, set_affinity):
        self._table = table
        self._set_affinity = set_affinity
        self._own = None  # this worker's WorkerShare
        self._lendable: list | None = None  # every live slot's share, in `_live` order; None: not lent
        self._tids: frozenset[str] = frozenset()  # the threads given the CPUs of now
        self._cond = threading.Condition(threading.Lock())
        self._running = 0
        self._live: list[int] = []
        self._borrowed: dict[int, tuple[int, object]] = {}  # slot -> (its lent lock's fd, its share)
        self._fds: dict[int, int] = {}  # other slots' busy files, opened once
        self._busy_fd = _lock_file(self._path(table.slot, "busy"))
        self._thread: threading.Thread | None = None
        self._stopped = False

    def _path(self, slot: int, kind: str) -> str:
        return f"{self._table._path(slot)}.{kind}"

    # --- this worker's tasks ----------------------------------------------------------------------

    def task_started(self) -> None:
        with self._cond:
            self._running += 1
            if self._running > 1 or self._stopped:
                return
            fcntl.flock(self._busy_fd, fcntl.LOCK_EX)  # a borrower's look holds it shared for microseconds
            self._start_looking_locked()
            self._cond.notify()

    def _start_looking_locked(self) -> None:
        if self._thread is None and len(self._live) > 1 and not self._stopped:
            self._thread = threading.Thread(target=self._look_while_busy, name="corral-lending", daemon=True)
            self._thread.start()

    def task_ended(self) -> None:
        with self._cond:
            self._running -= 1
            if self._running > 0 or self._stopped:
                return
            with contextlib.suppress(OSError):
                os.pwrite(self._busy_fd, _IDLE_SINCE.pack(time.monotonic_ns()), 0)
            fcntl.flock(self._busy_fd, fcntl.LOCK_UN)
            self._give_back_locked(list(self._borrowed))

    # --- the table --------------------------------------------------------------------------------

    def place_changed(self, live: list[int], shares: list, apply_share) -> None:
        """Workers came or went: every borrowed slot goes back, then `apply_share(own)` puts the process
        on its new share `own` (every thread, its permits) and returns the threads it saw. `live`: the
        slots now; `shares`: their WorkerShares, in that order."""
        with self._cond:
            self._give_back_locked(list(self._borrowed), apply=False)
            self._own = shares[live.index(self._table.slot)]
            self._tids = apply_share(self._own)
            self._live = list(live)
            self._lendable = lendable(shares)
            if self._running > 0:
                self._start_looking_locked()

    def new_threads(self) -> None:
        """Threads started since the CPUs last changed (one started meanwhile may have the old mask)."""
        with self._cond:
            self._tids = self._set_affinity(self._cpus_locked(), self._tids)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._give_back_locked(list(self._borrowed))
            self._cond.notify()
        for fd in [*self._fds.values(), self._busy_fd]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def forget_in_child(self) -> None:
        """In a forked child (no worker, no lending thread): closes its copies of the lock files
        without unlocking them, which would unlock the worker's own."""
        self._stopped = True
        self._cond = threading.Condition(threading.Lock())  # the parent's may have been held at the fork
        for fd in [*self._fds.values(), *(lent for lent, _ in self._borrowed.values()), self._busy_fd]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        self._borrowed.clear()
        self._thread = None

    # --- the look ---------------------------------------------------------------------------------

    def _look_while_busy(self) -> None:
        while True:
            with self._cond:
                while self._running == 0 and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    self._thread = None
                    return
                self._look_locked()
                pause = RETURN_LOOK_S if self._borrowed else LOOK_S
            time.sleep(pause)

    def _idle_for_ns(self, slot: int) -> int | None:
        """How long `slot`'s worker has had no task running; None while it has one."""
        fd = self._fds.get(slot)
        if fd is None:
            fd = self._fds[slot] = _lock_file(self._path(slot, "busy"))
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            data = os.pread(fd, _IDLE_SINCE.size, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if len(data) < _IDLE_SINCE.size:
            return 1 << 62  # never ran a task
        return time.monotonic_ns() - _IDLE_SINCE.unpack(data)[0]

    def _look_locked(self) -> None:
        returned = [s for s in self._borrowed if s not in self._live or self._idle_for_ns(s) is None]
        taken = {}
        for slot, share in zip(self._live, self._lendable or ()):
            if slot == self._table.slot or slot in self._borrowed:
                continue
            idle = self._idle_for_ns(slot)
            if idle is None or idle < LEND_AFTER_NS:
                continue
            lent = _lock_file(self._path(slot, "lent"))
            try:
                fcntl.flock(lent, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another worker borrowed it
                os.close(lent)
                continue
            taken[slot] = (lent, share)
        if not returned and not taken:
            return
        self._give_back_locked(returned, apply=False)
        self._borrowed.update(taken)
        self._apply_locked()

    def _give_back_locked(self, slots: list[int], apply: bool = True) -> None:
        if not slots:
            return
        for slot in slots:
            _let_go(self._borrowed.pop(slot)[0])
        if apply:
            self._apply_locked()

    def _cpus_locked(self):
        cpus = set(self._own.cpus)
        for _, share in self._borrowed.values():
            cpus.update(share.cpus)
        return sorted(cpus)

    def _apply_locked(self) -> None:
        threads = self._own.threads + sum(share.threads for _, share in self._borrowed.values())
        self._tids = self._set_affinity(self._cpus_locked(), frozenset())
        _core.set_permits(threads)
        _core.native_slots_changed(threads)
