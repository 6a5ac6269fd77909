"""A worker process's share of the budget: which CPUs, how many native threads, and how it gets them.

The parent splits its budget into one share per worker slot (C++ partition), then for each
worker process it starts:
1. claims a slot for it (SlotTable.claim): a free slot, or the slot of a worker that has
   exited, so that a replacement (maxtasksperchild, a crash) gets the same CPUs again;
2. for spawn, starts it with the share's thread limits in its environment (the new interpreter
   reads them before any library loads);
3. sets its affinity from the parent right after the start (narrowing the window before 4);
4. in the worker, before anything else runs (Process.run, ahead of the pool's own worker loop
   and the user's initializer): sets its affinity, the environment for its own children, and
   the thread counts of native libraries already loaded (inherited through fork, or preloaded by
   the forkserver).

Slots are claimed in the parent, not by the workers themselves: the parent knows which workers
exited (it reaps them), so it needs no shared memory and no lock that a worker killed with
SIGKILL could leave held, and it knows the share before the start, as spawn needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing.connection
import multiprocessing.context
import os
import threading
import weakref
from collections.abc import Callable, Mapping

from . import thread_limits


@dataclasses.dataclass(frozen=True)
class WorkerShare:
    slot: int
    cpus: tuple[int, ...]  # the worker's affinity
    threads: int  # its thread limit (the *_NUM_THREADS values)
    env: Mapping[str, str]  # what its environment gets (user-set variables kept or lowered already)
    native_threads: int  # the thread count for native libraries already loaded (threads, or a user's lower value)


_current_share: WorkerShare | None = None


def current_share() -> WorkerShare | None:
    """The share this process applied as a corral pool worker; None elsewhere."""
    return _current_share


# --- the parent: planning shares -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BudgetView:
    """What partitioning needs from the budget."""
    cpus: int  # the budget B
    cpu_ids: list[int]
    cores: list[list[int]]  # SMT sibling groups
    numa_nodes: list[list[int]]


def budget_view() -> BudgetView:
    """This process's budget from corral.budget() (where it knows no topology: each CPU its own core, one node)."""
    from . import _core

    b = _core.budget()
    cpu_ids = sorted(b.cpu_ids)
    return BudgetView(int(b.cpus), cpu_ids, [sorted(c) for c in b.cores] or [[c] for c in cpu_ids],
                      [sorted(n) for n in b.numa_nodes] or [cpu_ids])


def _restricted(view: BudgetView) -> BudgetView:
    """A budget below the CPUs it may use (a cgroup quota, CORRAL_CPUS): keep the first B CPUs
    in partition order (whole cores, one node first), so that affinity says what the quota says."""
    from . import _core

    if view.cpus >= len(view.cpu_ids):
        return view
    keep = set(_core.partition_order(view.cores, view.numa_nodes)[: view.cpus])
    cores = [c for c in ([x for x in core if x in keep] for core in view.cores) if c]
    nodes = [n for n in ([x for x in node if x in keep] for node in view.numa_nodes) if n]
    return BudgetView(view.cpus, sorted(keep), cores, nodes)


def validate_factor(factor: float) -> float:
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise TypeError(f"factor must be a number >= 1, not {factor!r}") from None
    if not value >= 1.0 or value == float("inf"):
        raise ValueError(f"factor must be a finite number >= 1, not {factor!r}")
    return value


def plan_shares(workers: int, *, factor: float | None = None, force: bool | None = None,
                environ: Mapping[str, str] | None = None, view: BudgetView | None = None) -> list[WorkerShare]:
    """One share per worker slot: the partition of this process's budget.

    factor / force: None takes the process-wide setting (1.0 / False unless corral.patch() or the
    runner's -f / --force said otherwise).
    """
    from . import _core, _pool_settings

    if factor is None or force is None:
        settings = _pool_settings.get()
        factor = settings["factor"] if factor is None else factor
        force = settings["force"] if force is None else force

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"the number of workers must be a whole number >= 1, not {workers!r}")
    factor = validate_factor(factor)
    view = _restricted(view or budget_view())
    sets = _core.partition_cpus(view.cores, view.numa_nodes, workers, factor)
    usable = len(view.cpu_ids)
    shares = []
    for slot, cpus in enumerate(sets):
        # A budget above the hardware (CORRAL_CPUS emulating a bigger machine) scales the limits.
        threads = max(1, len(cpus) * view.cpus // usable) if view.cpus > usable else len(cpus)
        env = thread_limits.environment_for(threads, force=force, environ=environ)
        native = thread_limits.native_limit(threads, force=force, environ=environ)
        shares.append(WorkerShare(slot, tuple(cpus), threads, env, native))
    return shares


def default_workers() -> int:
    """A pool's size when the caller gives none: the budget (the stdlib uses os.cpu_count())."""
    from ._pool_settings import budget_cpus

    return budget_cpus()


def _has_exited(process) -> bool:
    """Whether a started process has exited, without reaping it (other threads may be waiting
    on it): its sentinel becomes readable when it exits."""
    if getattr(process, "_closed", False):
        return True
    popen = getattr(process, "_popen", None)
    if popen is None:
        return False  # being started right now
    if popen.returncode is not None:
        return True
    try:
        return bool(multiprocessing.connection.wait([popen.sentinel], timeout=0))
    except (OSError, ValueError):
        return True


class SlotTable:
    """Which worker process holds which share (parent side)."""

    def __init__(self, shares: list[WorkerShare]):
        if not shares:
            raise ValueError("a slot table needs at least one share")
        self.shares = list(shares)
        self._holders: list[weakref.ref | None] = [None] * len(shares)
        self._lock = threading.Lock()
        self._claims = 0

    def claim(self, process) -> WorkerShare:
        with self._lock:
            self._claims += 1
            for slot, holder in enumerate(self._holders):
                current = holder() if holder is not None else None
                if current is None or current is process or _has_exited(current):
                    self._holders[slot] = weakref.ref(process)
                    return self.shares[slot]
            # More live workers than slots (a pool that grew): share round robin.
            return self.shares[(self._claims - 1) % len(self.shares)]

    def retire(self, process) -> None:
        """The pool has let `process` go (it is exiting): its slot is free for a replacement."""
        with self._lock:
            for slot, holder in enumerate(self._holders):
                if holder is not None and holder() is process:
                    self._holders[slot] = None


def slot_table_for(workers, *, factor: float | None = None, force: bool | None = None) -> "SlotTable | None":
    """The slot table of a pool of `workers`, or None for a size the stdlib will refuse (it then
    raises its own error, before any planning)."""
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        return SlotTable(plan_shares(workers, factor=factor, force=force))
    return None


# --- the worker: applying a share -----------------------------------------------------------


def _set_native_limits(threads: int) -> None:
    """Thread counts of the BLAS/OpenMP libraries loaded in this process (none loaded: nothing)."""
    from . import _core

    _core.set_native_process_limit(threads)
    _core.set_native_thread_limit(threads)  # this (the worker's main) thread runs the tasks


def apply_in_worker(share: WorkerShare) -> None:
    """What a worker does first: affinity, environment, loaded native libraries."""
    global _current_share
    try:
        os.sched_setaffinity(0, share.cpus)
    except OSError:
        # Some of the share's CPUs are not allowed here (a forkserver started under a narrower
        # mask): use those that are, rather than fail the worker.
        allowed = os.sched_getaffinity(0) & set(share.cpus)
        if allowed:
            os.sched_setaffinity(0, allowed)
    thread_limits.apply(share.env)
    with contextlib.suppress(Exception):  # a library refusing must not kill the worker
        _set_native_limits(share.native_threads)
    _current_share = share


# --- processes and the context that makes them --------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ParentSide:
    """Kept on a worker's Process object in the parent only (never pickled)."""
    table: SlotTable
    on_exit: Callable[[object], None] | None


class _ShareProcess:
    """Mixed in front of a context's Process class: claims a slot at start, applies it in run."""

    _corral_share: WorkerShare | None = None
    _corral_parent: _ParentSide | None = None
    _corral_exit_reported = False

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_corral_parent", None)
        return state

    def start(self):
        parent = self._corral_parent
        if parent is None:
            return super().start()
        share = parent.table.claim(self)
        self._corral_share = share
        try:
            if self._start_method == "spawn":
                # The new interpreter reads its environment at exec, before any import.
                with thread_limits.applied(share.env):
                    super().start()
            else:
                # fork: the child sets it in run(); forkserver: the server's environment is
                # shared by every pool, so the child sets it in run() as well.
                super().start()
        except BaseException:
            parent.table.retire(self)
            raise
        with contextlib.suppress(OSError):
            os.sched_setaffinity(self.pid, share.cpus)

    def run(self):
        if self._corral_share is not None:
            apply_in_worker(self._corral_share)
        super().run()

    def join(self, timeout=None):
        super().join(timeout)
        parent = self._corral_parent
        if parent is not None and parent.on_exit is not None and not self._corral_exit_reported:
            if self._popen is not None and self._popen.returncode is not None:
                self._corral_exit_reported = True
                parent.on_exit(self)


class ForkShareProcess(_ShareProcess, multiprocessing.context.ForkProcess):
    pass


class SpawnShareProcess(_ShareProcess, multiprocessing.context.SpawnProcess):
    pass


class ForkServerShareProcess(_ShareProcess, multiprocessing.context.ForkServerProcess):
    pass


_PROCESS_CLASSES = {"fork": ForkShareProcess, "spawn": SpawnShareProcess, "forkserver": ForkServerShareProcess}


class ShareContext:
    """A multiprocessing context whose Process objects take a slot of `table`; everything else
    (queues, locks, the start method) is that of base_context(base)."""

    def __init__(self, base, table: SlotTable, on_exit: Callable[[object], None] | None = None):
        base = base_context(base)
        method = base.get_start_method()
        if method not in _PROCESS_CLASSES:
            raise ValueError(f"corral: unsupported start method {method!r}")
        self.base = base
        self.table = table
        self._parent_side = _ParentSide(table, on_exit)
        self._process_class = _PROCESS_CLASSES[method]

    def Process(self, *args, **kwargs):  # noqa: N802 (the stdlib's name)
        process = self._process_class(*args, **kwargs)
        process._corral_parent = self._parent_side
        return process

    def get_context(self, method=None):
        return self if method is None else self.base.get_context(method)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def __repr__(self):
        return f"<corral ShareContext over {self.base!r}, {len(self.table.shares)} slots>"


def base_context(context=None) -> multiprocessing.context.BaseContext:
    """The concrete context (fork, spawn or forkserver) behind `context` (default: the default)."""
    if isinstance(context, ShareContext):
        return context.base
    if context is None:
        return multiprocessing.get_context()
    return context.get_context() if hasattr(context, "get_context") else context


class SharesMixin:
    """The `shares` property of corral's process pools (which keep their SlotTable in _slot_table).
    No __slots__: an empty one, first among the bases, makes the layout differ from the stdlib
    class's, and corral.patch() could no longer turn a stdlib pool into corral's (__class__)."""

    @property
    def shares(self) -> list[WorkerShare]:
        """The share of each worker slot (CPUs, thread limit, environment)."""
        return list(self._slot_table.shares)
