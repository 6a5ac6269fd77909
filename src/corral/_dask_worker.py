"""A Dask worker process under a budget of its own (docs/children.md, "Dask").

Workers on one machine split its budget: each takes a slot of a host table, a directory of lock
files that every worker with the same budget (the same CPUs and CORRAL_CPUS) shares, and gets the
share of the partition (_worker_share.plan_shares) that its rank among the live slots names. A slot is
an flock(2) lock on its own file: the kernel drops it when the worker's process ends, however it ends
(SIGKILL included), so the table needs no cleanup and no daemon. Workers re-read the table every
half second and re-apply their share when workers came or went: the first worker of a cluster starts
with every CPU and narrows as the others join; the survivors of a killed worker widen again.

A worker's share is applied to the whole process, at run time (its libraries are loaded by then):
- affinity: every thread of the process (sched_setaffinity of one tid affects that thread only);
- permits: the process's permit table is resized to the share, and the worker's default executor runs
  each task under a permit with dynamic BLAS/OpenMP threads (max(1, share // tasks running)), so a lone
  large task gets every CPU of the share and busy threads one each;
- environment: CORRAL_CPUS and the thread-limit variables (for libraries loaded later and for the
  worker's own children), by the lower-wins rule of docs/native.md; Dask's own fixed
  OMP/MKL/OPENBLAS_NUM_THREADS=1 (its nanny's `distributed.nanny.pre-spawn-environ`) is not a user's
  value and gives way.
While it has a task running, a worker borrows the CPUs of workers of its table that have none
(_worker_lending.py): affinity, permits and the BLAS count widen, and narrow again when they are
given back.

How a worker gets here: corral.dask's plugin and preload (dask_setup) call join(). Under
`python -m corral` the patch targets below make every worker process started by a nanny join by
itself (the worker is a child Python, patched by the startup hook), and keep the nanny from putting
Dask's fixed thread limits in its environment; both only while children join (not --no-children).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import multiprocessing
import os
import threading

from . import _core, _executor, _permits, _pool_settings, _thread_limits, _worker_lending, _worker_share

REFRESH_MS = 500
# What distributed's nanny names its worker processes (distributed/nanny.py, WorkerProcess.start).
NANNY_WORKER_PROCESS = "Dask Worker process (from Nanny)"
DASK_PRE_SPAWN = "distributed.nanny.pre-spawn-environ"
# Put in a worker's environment by a corral nanny that left Dask's fixed limits out: the thread-limit
# variables the worker has are the user's.
USER_LIMITS_VAR = "CORRAL_DASK_USER_LIMITS"


# --- the host table -------------------------------------------------------------------------------


def _table_directory() -> str:
    import tempfile  # only where a worker joins: every child Python imports this module

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    return os.path.join(base, f"corral-dask-{os.getuid()}")


class HostTable:
    """Slots 0, 1, ... of the workers that split one budget; a slot is held while its file is locked."""

    def __init__(self, key: str, directory: str | None = None):
        self.directory = directory or _table_directory()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.prefix = f"{key}."
        self.slot: int | None = None
        self._fd: int | None = None

    def _path(self, slot: int) -> str:
        return os.path.join(self.directory, f"{self.prefix}{slot}")

    def claim(self) -> int:
        """The lowest free slot, held by this process (and inherited by none: O_CLOEXEC; a fork shares it)."""
        if self.slot is not None:
            return self.slot
        slot = 0
        while True:
            fd = os.open(self._path(slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                slot += 1
                continue
            self.slot, self._fd = slot, fd
            return slot

    def live(self) -> list[int]:
        """The slots held now, in order (this process's included)."""
        held = []
        for name in os.listdir(self.directory):
            if not name.startswith(self.prefix) or not name[len(self.prefix):].isdigit():
                continue
            slot = int(name[len(self.prefix):])
            if slot == self.slot:
                held.append(slot)
                continue
            try:
                fd = os.open(self._path(slot), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a new open file description: our own lock blocks too
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                held.append(slot)
            finally:
                os.close(fd)
        return sorted(held)

    def forget_in_child(self) -> None:
        """In a forked child: closes its copy of the slot's file; the parent's lock stays."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self.slot, self._fd = None, None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock; the file stays (unlinking would race with a claimer)
        self.slot, self._fd = None, None


def table_key(view: _worker_share.BudgetView) -> str:
    """Workers share a table when they split the same budget: the same CPUs and the same count."""
    import hashlib  # only where a worker joins: every child Python imports this module (~7 ms)

    text = f"{view.cpus}:{','.join(map(str, view.cpu_ids))}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# --- Dask's fixed thread limits -------------------------------------------------------------------


def dask_fixed_limits() -> dict[str, str]:
    """The thread-limit variables Dask's nanny sets before it spawns a worker, as strings (its config
    `distributed.nanny.pre-spawn-environ`: OMP/MKL/OPENBLAS_NUM_THREADS=1 unless configured)."""
    import dask.config

    configured = dask.config.get(DASK_PRE_SPAWN, default={}) or {}
    return {k: str(v) for k, v in configured.items() if k in _thread_limits.THREAD_LIMIT_VARS and v is not None}


def user_environ() -> dict[str, str]:
    """os.environ without the thread limits Dask's nanny put there: what the user set is what remains.

    A worker started by a corral nanny (under python -m corral) got none of them
    (_without_fixed_limits; USER_LIMITS_VAR says so), so all it has are the user's. Elsewhere a value
    equal to Dask's configured one is taken for Dask's: a user who wants that bound sets it in the
    config instead."""
    environ = dict(os.environ)
    if environ.get(USER_LIMITS_VAR) == "1":
        return environ
    for var, value in dask_fixed_limits().items():
        if environ.get(var) == value and var not in _thread_limits.managed_vars(environ):
            del environ[var]
    return environ


# --- a worker joins -------------------------------------------------------------------------------


class _Membership:
    # A plain class, not a dataclass: the patch imports this module when a program first imports a pool
    # module, and dataclasses imports inspect (some 10 ms; docs/architecture.md, "Start-up").
    def __init__(self, table: HostTable, view: _worker_share.BudgetView, environ: dict[str, str]):
        self.table = table
        self.view = view  # the budget the workers split (before this process narrowed it)
        self.environ = environ  # the user's variables
        self.place: tuple[int, int] | None = None  # (rank, workers) last applied
        self.share: _worker_share.WorkerShare | None = None
        self.callback: object = None  # tornado PeriodicCallback
        self.executor: object = None  # the worker's default executor, once it runs under the permits
        self.lending: _worker_lending.Lending | None = None  # this worker's side of lending (_worker_lending.py)


_lock = threading.Lock()
_membership: _Membership | None = None  # one per process: a worker process has one share


def share_of(worker) -> _worker_share.WorkerShare | None:
    """The share this process applied for its Dask worker; None when it did not join."""
    return _membership.share if _membership is not None else None


def join(worker) -> _worker_share.WorkerShare | None:
    """Puts this worker process under its share of the machine's budget, and keeps it there as workers
    come and go. Idempotent: a second call (the plugin and the preload both) refreshes only.

    A worker that shares its process with a scheduler or other workers (LocalCluster(processes=False))
    takes no share, which would narrow the whole process: its tasks run under that process's permits.
    Returns the share, or None for such a worker."""
    global _membership
    if not _alone_in_process(worker):
        _permit_executor(worker)
        return None
    with _lock:
        if _membership is None:
            view = _worker_share.budget_view()
            _membership = _new_membership(HostTable(table_key(view)), view, user_environ())
        membership = _membership
    refresh()
    membership.executor = _permit_executor(worker)  # after the share: static mode sizes from it
    _watch(worker, membership)
    return membership.share


def _new_membership(table: HostTable, view: _worker_share.BudgetView, environ: dict[str, str]) -> _Membership:
    """This process's slot in `table`, claimed now, with its side of lending."""
    membership = _Membership(table, view, environ)
    table.claim()
    os.register_at_fork(after_in_child=_forget_in_child)
    membership.lending = _worker_lending.Lending(table, _set_process_affinity)
    return membership


def _alone_in_process(worker) -> bool:
    from distributed.scheduler import Scheduler

    def live(server):
        return getattr(getattr(server, "status", None), "name", "") not in ("closed", "closing", "failed")

    others = [w for w in getattr(type(worker), "_instances", ()) if w is not worker and live(w)]
    return not others and not any(live(s) for s in getattr(Scheduler, "_instances", ()))


def _forget_in_child() -> None:
    """A process forked by a task is no worker: it drops its copies of the slot's locks (closing them,
    not unlocking: the worker shares them) and runs on the worker's own share, not on borrowed CPUs.
    Kept, a child that outlives the worker would keep its slot live and lent for good."""
    global _membership
    membership, _membership = _membership, None
    if membership is None:
        return
    membership.lending.forget_in_child()
    membership.table.forget_in_child()
    if membership.share is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, membership.share.cpus)


def leave(worker) -> None:
    """The plugin's teardown: the slot goes back (the share stays applied until the worker ends)."""
    global _membership
    with _lock:
        membership, _membership = _membership, None
    if membership is None:
        return
    if membership.callback is not None:
        membership.callback.stop()
        getattr(worker, "periodic_callbacks", {}).pop("corral-share", None)
    membership.lending.stop()  # what it borrowed goes back first
    membership.table.release()


def refresh() -> None:
    """Re-reads the host table; applies the share of this worker's rank when it changed."""
    with _lock:
        membership = _membership
        if membership is None or membership.table.slot is None:
            return
        live = membership.table.live()
        if membership.table.slot not in live:  # cannot happen while we hold it; be safe
            live = sorted([*live, membership.table.slot])
        place = (live.index(membership.table.slot), len(live))
        if place == membership.place:
            # A thread started while the CPUs were being changed may have inherited the mask before.
            membership.lending.new_threads()
            return
        shares = _worker_share.plan_shares(place[1], environ=membership.environ, view=membership.view)

        def apply_share(own):
            membership.share = own
            return _apply(own)

        membership.lending.place_changed(live, shares, apply_share)
        membership.place = place
        executor = membership.executor
        if executor is not None and executor._corral_inner > 0:  # static mode: a count for the share
            executor._corral_inner = _pool_settings.inner_threads(executor._max_workers)


def _apply(share: _worker_share.WorkerShare) -> frozenset[str]:
    tids = _set_process_affinity(share.cpus)
    _thread_limits.apply(share.env)
    _core.set_permits(share.threads)
    _core.set_inner_thread_cap(share.native_threads if share.native_threads < share.threads else 0)
    with contextlib.suppress(Exception):  # a library refusing must not kill the worker
        # Through the owner of the process-wide controls: tasks may be running (native_policy.hpp).
        _core.native_share_changed(share.threads, share.native_threads)
    return tids


def _set_process_affinity(cpus, skip: frozenset[str] = frozenset()) -> frozenset[str]:
    """Every thread of the process but those in `skip` (threads started later inherit the mask of the
    one that starts them); returns the threads seen."""
    tids = frozenset(os.listdir("/proc/self/task"))
    for tid in tids - skip:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)
    return tids


class _PermittedSubmit:
    """Put in front of the class of a running executor: each task runs under a permit, with dynamic
    BLAS/OpenMP threads, as in corral.ThreadPoolExecutor.submit."""

    _corral_inner = _permits.DYNAMIC

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_run_counted, self._corral_inner, fn, *args, **kwargs)


def _run_counted(inner, fn, /, *args, **kwargs):
    """_permits.run, the task counted as running for lending (_worker_lending.py) in a worker with a share."""
    membership = _membership
    if membership is None:
        return _permits.run(inner, fn, *args, **kwargs)
    lending = membership.lending
    lending.task_started()
    try:
        return _permits.run(inner, fn, *args, **kwargs)
    finally:
        lending.task_ended()


@functools.cache
def _permitted_class(cls: type) -> type:
    return type(cls)(cls.__name__, (_PermittedSubmit, cls), {"__module__": cls.__module__,
                                                             "__qualname__": cls.__qualname__})


def _permit_executor(worker):
    """The worker's default executor runs its tasks under the permits; returns it (None: left alone).

    distributed's executor is its own copy of the stdlib's ThreadPoolExecutor (not a subclass, so the
    patch does not reach it): the running executor becomes an instance of `class E(_PermittedSubmit, E)`
    in place, keeping its threads, queue and distributed's secede/rejoin."""
    executor = getattr(worker, "executors", {}).get("default")
    if executor is None or isinstance(executor, _executor.ThreadPoolExecutor):
        return None  # corral's already (the stdlib's, patched): its own inner-thread count
    if isinstance(executor, _PermittedSubmit):
        executor._corral_inner = _pool_settings.inner_threads(executor._max_workers)
        return executor
    if not callable(getattr(executor, "submit", None)) or not isinstance(getattr(executor, "_max_workers", None), int):
        return None  # not a thread pool (a user's own executor): left alone
    inner = _pool_settings.inner_threads(executor._max_workers)
    _permits.start()
    try:
        executor.__class__ = _permitted_class(type(executor))
    except TypeError:  # a layout that refuses: left alone
        return None
    executor._corral_inner = inner
    return executor


def _watch(worker, membership: _Membership) -> None:
    """Re-reads the table every REFRESH_MS on the worker's event loop (stopped with the worker)."""
    if membership.callback is not None:
        return
    from tornado.ioloop import PeriodicCallback

    membership.callback = PeriodicCallback(refresh, REFRESH_MS)
    callbacks = getattr(worker, "periodic_callbacks", None)
    if callbacks is not None:
        callbacks["corral-share"] = membership.callback
    with contextlib.suppress(RuntimeError):  # no loop yet: the worker starts it with its own callbacks
        if getattr(getattr(worker, "status", None), "name", "") == "running":
            membership.callback.start()


# --- automatic, under python -m corral and corral.patch() --------------------------------------------

WORKER_MODULE = "distributed.worker"
NANNY_MODULE = "distributed.nanny"


def is_nanny_worker_process() -> bool:
    return multiprocessing.current_process().name == NANNY_WORKER_PROCESS


def _joining_init(original):
    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if is_nanny_worker_process():
            join(self)
        else:  # a worker in the program's own process (LocalCluster(processes=False)): one of its pools
            _permit_executor(self)

    return __init__


def _nanny_init(original):
    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _without_fixed_limits(self)

    return __init__


def _without_fixed_limits(nanny) -> None:
    """Drops Dask's fixed thread limits from what the nanny puts in its worker's environment, unless
    the value is the user's (set in this process's environment, not by corral), when the worker will
    join (child Pythons join: CORRAL_CHILDREN)."""
    if _thread_limits.CHILDREN_VAR not in os.environ:
        return
    users = _thread_limits.user_set_vars(os.environ)
    envs = [env for env in (getattr(nanny, "pre_spawn_env", None), getattr(nanny, "env", None))
            if isinstance(env, dict)]
    for var, value in dask_fixed_limits().items():
        if var in users:
            continue
        for env in envs:
            if env.get(var) == value:
                del env[var]
    if envs:
        envs[-1][USER_LIMITS_VAR] = "1"  # env: what the worker process sets in its own environment


def worker_patch_targets() -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) for distributed.worker, once it is imported."""
    from distributed.worker import Worker

    return [(Worker, "__init__", _joining_init(Worker.__dict__["__init__"]))]


def nanny_patch_targets() -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) for distributed.nanny, once it is imported."""
    from distributed.nanny import Nanny

    return [(Nanny, "__init__", _nanny_init(Nanny.__dict__["__init__"]))]
