"""A worker process's share of the budget: which CPUs, how many native threads, and how it gets them.

The parent splits its budget into one share per worker (C++ partition; a share's `index` is its place
in the pool's ShareTable), then for each worker process it starts:
1. claims a share for it (ShareTable.claim): a free one, or the share of a worker that has
   exited, so that a replacement (maxtasksperchild, a crash) gets the same CPUs again;
2. for spawn, starts it with the share's thread limits in its environment (the new interpreter
   reads them before any library loads);
3. for spawn, sets its affinity from the parent right after the start (its interpreter's start-up
   then runs on the share; a forked child reaches 4 at once);
4. in the worker, before anything else runs (Process.run, ahead of the pool's own worker loop
   and the user's initializer): sets its affinity, the environment for its own children, and
   the thread counts of native libraries already loaded (inherited through fork, or preloaded by
   the forkserver).

Shares are claimed in the parent, not by the workers themselves: the parent knows which workers
exited (it reaps them), so it needs no shared memory and no lock that a worker killed with
SIGKILL could leave held, and it knows the share before the start, as spawn needs.
"""

from __future__ import annotations

import contextlib
import multiprocessing.context
import os
import threading
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping

from . import _compat, _core, _pool_settings, _thread_limits


# One worker's share of the budget (docs/processes.md). Namedtuples in this module, not dataclasses: the patch
# imports it when a program first imports a pool module, and dataclasses imports inspect (some 10 ms;
# docs/architecture.md, "Start-up").
#   index: its place in the pool's ShareTable (a replacement worker takes the same index)
#   cpus: the worker's affinity (a tuple of CPU ids)
#   threads: its thread limit (the *_NUM_THREADS values)
#   env: what its environment gets (user-set variables kept or lowered already), a mapping
#   native_threads: the thread count for native libraries already loaded (threads, or a user's lower value)
WorkerShare = namedtuple("WorkerShare", "index cpus threads env native_threads")


_current_share: WorkerShare | None = None


def current_share() -> WorkerShare | None:
    """The share this process applied as a corral pool worker; None elsewhere."""
    return _current_share


# --- the parent: planning shares -----------------------------------------------------------


# What partitioning needs from the budget: cpus, the budget B; cpu_ids; cores, SMT sibling groups (lists of
# CPU ids); numa_nodes (lists of CPU ids).
BudgetView = namedtuple("BudgetView", "cpus cpu_ids cores numa_nodes")


def budget_view() -> BudgetView:
    """This process's budget from corral.budget() (where it knows no topology: each CPU its own core, one node)."""
    b = _core.budget()
    cpu_ids = sorted(b.cpu_ids)
    return BudgetView(int(b.cpus), cpu_ids, [sorted(c) for c in b.cores] or [[c] for c in cpu_ids],
                      [sorted(n) for n in b.numa_nodes] or [cpu_ids])


def _restricted(view: BudgetView) -> BudgetView:
    """A budget below the CPUs it may use (a cgroup quota, CORRAL_CPUS): keep the first B CPUs
    in partition order (whole cores, one node first), so that affinity says what the quota says."""
    if view.cpus >= len(view.cpu_ids):
        return view
    keep = set(_core.partition_order(view.cores, view.numa_nodes)[: view.cpus])
    cores = [c for c in ([x for x in core if x in keep] for core in view.cores) if c]
    nodes = [n for n in ([x for x in node if x in keep] for node in view.numa_nodes) if n]
    return BudgetView(view.cpus, sorted(keep), cores, nodes)


def plan_shares(workers: int, *, factor: float | None = None, force: bool | None = None,
                environ: Mapping[str, str] | None = None, view: BudgetView | None = None) -> list[WorkerShare]:
    """One share per worker: the partition of this process's budget (C++ partition_cpus).

    workers: a whole number >= 1 (ValueError otherwise). view: the budget to split (default:
    budget_view()). environ: the environment whose thread-limit variables the user set (default
    os.environ). Returns `workers` shares, index 0..workers-1; a share's `threads` is its CPU count
    (scaled when the budget is above the hardware), its `env` and `native_threads` follow the
    lower-wins rule of docs/native.md ("Inner thread counts").

    factor / force: None takes the process-wide setting (1.0 / False unless corral.patch() or the
    runner's -f / --force said otherwise; TypeError/ValueError for a bad factor, as validate_factor).
    """
    if factor is None or force is None:
        settings = _pool_settings.get()
        factor = settings["factor"] if factor is None else factor
        force = settings["force"] if force is None else force

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"the number of workers must be a whole number >= 1, not {workers!r}")
    factor = _pool_settings.validate_factor(factor)
    view = _restricted(view or budget_view())
    sets = _core.partition_cpus(view.cores, view.numa_nodes, workers, factor)
    usable = len(view.cpu_ids)
    shares = []
    for index, cpus in enumerate(sets):
        # A budget above the hardware (CORRAL_CPUS emulating a bigger machine) scales the limits.
        threads = max(1, len(cpus) * view.cpus // usable) if view.cpus > usable else len(cpus)
        env = _thread_limits.environment_for(threads, force=force, environ=environ)
        native = _thread_limits.native_limit(threads, force=force, environ=environ)
        shares.append(WorkerShare(index, tuple(cpus), threads, env, native))
    return shares


def default_workers() -> int:
    """A pool's size when the caller gives none: the budget (the stdlib uses os.cpu_count())."""
    return _pool_settings.budget_cpus()


class ShareTable:
    """Which worker process holds which share (parent side)."""

    def __init__(self, shares: list[WorkerShare]):
        if not shares:
            raise ValueError("a share table needs at least one share")
        self.shares = list(shares)
        self._holders: list[weakref.ref | None] = [None] * len(shares)
        self._lock = threading.Lock()
        self._claims = 0

    def claim(self, process) -> WorkerShare:
        with self._lock:
            self._claims += 1
            for index, holder in enumerate(self._holders):
                current = holder() if holder is not None else None
                if current is None or current is process or _compat.process_has_exited(current):
                    self._holders[index] = weakref.ref(process)
                    return self.shares[index]
            # More live workers than shares (a pool that grew): round robin.
            return self.shares[(self._claims - 1) % len(self.shares)]

    def retire(self, process) -> None:
        """The pool has let `process` go (it is exiting): its share is free for a replacement."""
        with self._lock:
            for index, holder in enumerate(self._holders):
                if holder is not None and holder() is process:
                    self._holders[index] = None


def share_table_for(workers, *, factor: float | None = None, force: bool | None = None) -> "ShareTable | None":
    """The share table of a pool of `workers`, or None for a size the stdlib will refuse (it then
    raises its own error, before any planning)."""
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        return ShareTable(plan_shares(workers, factor=factor, force=force))
    return None


# --- the worker: applying a share -----------------------------------------------------------


def _set_native_limits(threads: int) -> None:
    """Thread counts of the BLAS/OpenMP libraries loaded in this process (none loaded: nothing)."""
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
    _thread_limits.apply(share.env)
    with contextlib.suppress(Exception):  # a library refusing must not kill the worker
        _set_native_limits(share.native_threads)
    _current_share = share


# --- processes and the context that makes them --------------------------------------------


# Kept on a worker's Process object in the parent only (never pickled): table, the pool's ShareTable; on_exit,
# called with the process when it is reported gone, or None.
_ParentSide = namedtuple("_ParentSide", "table on_exit")


class _ShareProcess:
    """Mixed in front of a context's Process class: claims a share at start, applies it in run."""

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
        spawn = _compat.process_start_method(self) == "spawn"
        try:
            if spawn:
                # The new interpreter reads its environment at exec, before any import.
                with _thread_limits.applied(share.env):
                    super().start()
            else:
                # fork: the child sets it in run(); forkserver: the server's environment is
                # shared by every pool, so the child sets it in run() as well.
                super().start()
        except BaseException:
            parent.table.retire(self)
            raise
        if spawn:
            # Its interpreter's start-up (tens of ms of imports) runs on the share too. A fork or
            # forkserver child pins itself first thing in run(): pinning it from here, just after
            # the fork, cost the parent about 1 ms per worker (the kernel migrates the running child).
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
            if _compat.process_returncode(self) is not None:
                self._corral_exit_reported = True
                parent.on_exit(self)


class ForkShareProcess(_ShareProcess, multiprocessing.context.ForkProcess):
    pass


class SpawnShareProcess(_ShareProcess, multiprocessing.context.SpawnProcess):
    pass


class ForkServerShareProcess(_ShareProcess, multiprocessing.context.ForkServerProcess):
    pass


_PROCESS_CLASSES = {"fork": ForkShareProcess, "spawn": SpawnShareProcess, "forkserver": ForkServerShareProcess}
# The stdlib's names (invariant 8): a Process is named after its class ("SpawnProcess-2"; a pool renames it
# "SpawnPoolWorker-1"), which programs see in current_process().name, logging's %(processName)s and repr().
# __qualname__ stays: pickle finds the class by it.
for _cls in _PROCESS_CLASSES.values():
    _cls.__name__ = _cls.__bases__[-1].__name__  # ForkProcess, SpawnProcess, ForkServerProcess
del _cls


_STDLIB_PROCESS_CLASSES = {method: cls.__bases__[-1] for method, cls in _PROCESS_CLASSES.items()}
_share_classes: dict[type, type] = {}  # a context's own Process class -> the share class made for it


def share_process_class(process_class, method: str) -> type:
    """The class of a pool's workers over a context whose Process is `process_class`: corral's for the
    stdlib's classes, else a subclass made once of the context's own (a NestablePool's non-daemonic
    Process, a Process whose run() does more), which plain python's pool would use."""
    if process_class is _STDLIB_PROCESS_CLASSES.get(method) or not isinstance(process_class, type):
        return _PROCESS_CLASSES[method]
    cls = _share_classes.get(process_class)
    if cls is None:
        cls = type(process_class.__name__, (_ShareProcess, process_class),
                   {"__module__": process_class.__module__, "__qualname__": process_class.__qualname__,
                    "__reduce_ex__": _reduce_share_process})
        cls = _share_classes.setdefault(process_class, cls)
    return cls


def _reduce_share_process(self, protocol):
    # Not importable by name (made at run time): pickled (spawn, forkserver) as the context's own class and
    # state, and made again in the child, where run() applies the share.
    return _rebuild_share_process, (type(self).__bases__[-1], self.__getstate__())


def _rebuild_share_process(process_class, state):
    cls = share_process_class(process_class, "")
    process = cls.__new__(cls)
    process.__dict__.update(state)
    return process


class ShareContext:
    """A multiprocessing context whose Process objects take a share of `table`; everything else
    (queues, locks, the start method) is that of base_context(base)."""

    def __init__(self, base, table: ShareTable, on_exit: Callable[[object], None] | None = None):
        base = base_context(base)
        method = base.get_start_method()
        if method not in _PROCESS_CLASSES:
            raise ValueError(f"corral: unsupported start method {method!r}")
        self.base = base
        self.table = table
        self._parent_side = _ParentSide(table, on_exit)
        self._process_class = share_process_class(base.Process, method)

    def Process(self, *args, **kwargs):  # noqa: N802 (the stdlib's name)
        process = self._process_class(*args, **kwargs)
        process._corral_parent = self._parent_side
        return process

    def get_context(self, method=None):
        return self if method is None else self.base.get_context(method)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def __repr__(self):
        return f"<corral ShareContext over {self.base!r}, {len(self.table.shares)} shares>"


def base_context(context=None) -> multiprocessing.context.BaseContext:
    """The concrete context (fork, spawn or forkserver) behind `context` (default: the default)."""
    if isinstance(context, ShareContext):
        return context.base
    if context is None:
        return multiprocessing.get_context()
    return context.get_context() if hasattr(context, "get_context") else context


class SharesMixin:
    """The `shares` property of corral's process pools (which keep their ShareTable in _share_table).
    No __slots__: an empty one, first among the bases, makes the layout differ from the stdlib
    class's, and corral.patch() could no longer turn a stdlib pool into corral's (__class__)."""

    @property
    def shares(self) -> list[WorkerShare]:
        """The share of each worker, in index order: a list of WorkerShare (CPUs, thread limit,
        environment), one per worker the pool was built for."""
        return list(self._share_table.shares)
