"""corral.ProcessPoolExecutor: concurrent.futures.ProcessPoolExecutor whose workers each get a
share of the budget (see corral.worker_share and corral.process_pool).

A worker that dies breaks the executor exactly as in the stdlib (BrokenProcessPool for every
pending future and for later submits).
"""

from __future__ import annotations

import concurrent.futures.process
import multiprocessing

from . import worker_share

__all__ = ["ProcessPoolExecutor"]


class ProcessPoolExecutor(worker_share.SharesMixin, concurrent.futures.process.ProcessPoolExecutor):
    """concurrent.futures.ProcessPoolExecutor with one CPU share per worker.

    max_workers: workers (default: the budget, not os.cpu_count()).
    factor: oversubscription factor >= 1; each worker's CPU set grows to ceil(size * factor)
        (None: 1, or what corral.patch(factor=) / the runner's -f set).
    force: give every thread-limit variable the worker's share, even where the user set a lower
        value (default: a value the user set is an upper bound, the lower of it and the share
        wins; None: False, or what corral.patch(force=) / the runner's --force set).
    The other arguments are the stdlib's.
    """

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None, factor: float | None = None, force: bool | None = None):
        if max_workers is None:
            max_workers = worker_share.default_workers()
        if mp_context is None:
            # The stdlib's own default: fork cannot replace workers (max_tasks_per_child).
            mp_context = multiprocessing.get_context("spawn" if max_tasks_per_child is not None else None)
        table = worker_share.slot_table_for(max_workers, factor=factor, force=force)
        if table is not None:
            self._slot_table = table
            mp_context = worker_share.ShareContext(mp_context, table)
        super().__init__(max_workers, mp_context, initializer, initargs, max_tasks_per_child=max_tasks_per_child)
        if table is not None:
            self._processes = _Workers(table)


class _Workers(dict):
    """The executor's pid -> process table. The stdlib pops a worker that retires (after
    max_tasks_per_child) before it has exited, and may start its replacement at once: popping
    frees the worker's slot, so the replacement takes it rather than a slot still held."""

    def __init__(self, slot_table: worker_share.SlotTable):
        super().__init__()
        self._slot_table = slot_table

    def pop(self, pid, *default):
        process = super().pop(pid, *default)
        if process is not None and not isinstance(process, int):
            self._slot_table.retire(process)
        return process


# Named as the stdlib's class, so that a program printing a pool's type or repr prints what it prints under
# plain python (docs/architecture.md, invariant 8); isinstance(x, corral.ProcessPoolExecutor) tells them apart.
ProcessPoolExecutor.__module__ = "concurrent.futures.process"
