"""corral.ProcessPoolExecutor: concurrent.futures.ProcessPoolExecutor whose workers each get a
share of the budget (see _worker_share and _process_pool).

A worker that dies breaks the executor exactly as in the stdlib (BrokenProcessPool for every
pending future and for later submits).
"""

from __future__ import annotations

import concurrent.futures.process
import multiprocessing

from . import _worker_share

__all__ = ["ProcessPoolExecutor"]


class ProcessPoolExecutor(_worker_share.SharesMixin, concurrent.futures.process.ProcessPoolExecutor):
    """concurrent.futures.ProcessPoolExecutor(max_workers=None, mp_context=None, initializer=None,
    initargs=(), *, max_tasks_per_child=None, factor=None, force=None) with one CPU share per worker.

    max_workers: workers (default: the budget, corral.budget().cpus, not os.cpu_count()).
    factor: oversubscription factor >= 1; each worker's CPU set grows to ceil(size * factor)
        (None: 1, or what corral.patch(factor=) / the runner's -f set).
    force: give every thread-limit variable the worker's share, even where the user set a lower
        value (default: the lower of the user's value and the share wins, docs/native.md;
        None: False, or what corral.patch(force=) / the runner's --force set).
    The other arguments, and every method (submit, map, shutdown, and on 3.14 terminate_workers /
    kill_workers), are the stdlib's, which it subclasses: the same errors (ValueError for
    max_workers <= 0, TypeError for a non-callable initializer, BrokenProcessPool when a worker dies),
    the same default start method (the platform's; spawn with max_tasks_per_child).
    Raises TypeError / ValueError for a factor that is not a number >= 1.
    `shares`: the list of each worker's WorkerShare (CPUs, threads, environment).
    """

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None, factor: float | None = None, force: bool | None = None):
        if max_workers is None:
            max_workers = _worker_share.default_workers()
        if mp_context is None:
            # The stdlib's own default: fork cannot replace workers (max_tasks_per_child).
            mp_context = multiprocessing.get_context("spawn" if max_tasks_per_child is not None else None)
        table = _worker_share.share_table_for(max_workers, factor=factor, force=force)
        if table is not None:
            self._share_table = table
            mp_context = _worker_share.ShareContext(mp_context, table)
        super().__init__(max_workers, mp_context, initializer, initargs, max_tasks_per_child=max_tasks_per_child)
        if table is not None:
            self._processes = _Workers(table)


class _Workers(dict):
    """The executor's pid -> process table (the stdlib's `_processes`, see _compat). The stdlib pops a
    worker that retires (after max_tasks_per_child) before it has exited, and may start its replacement
    at once: popping frees the worker's share, so the replacement takes it rather than one still held."""

    def __init__(self, share_table: _worker_share.ShareTable):
        super().__init__()
        self._share_table = share_table

    def pop(self, pid, *default):
        process = super().pop(pid, *default)
        if process is not None and not isinstance(process, int):
            self._share_table.retire(process)
        return process
