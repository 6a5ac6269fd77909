"""corral.dask: Dask workers under the CPU budget (docs/children.md, "Dask").

Each worker process on a machine takes its own share of the machine's budget: disjoint CPU sets
(affinity) while there are no more workers than CPUs, its task threads under that share's permits, and
BLAS/OpenMP thread counts that follow its running tasks (all of the share to a lone task, one each when
every thread is busy) instead of Dask's fixed OMP/MKL/OPENBLAS_NUM_THREADS=1. Shares are re-read every
half second, so workers that join or die reshape the others'.

Three ways in:
    client.register_plugin(corral.dask.CorralWorkerPlugin())   # a running cluster, from the client
    dask worker SCHEDULER --preload corral.dask                # dask_setup(worker) below
    python -m corral program.py                                # LocalCluster's workers: no code at all

This is corral's one public module besides the package itself (it imports `distributed`).
"""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin

from . import _dask_worker

__all__ = ["CorralWorkerPlugin", "dask_setup"]


class CorralWorkerPlugin(WorkerPlugin):
    """A distributed WorkerPlugin: `client.register_plugin(CorralWorkerPlugin())` puts every worker,
    present and future, under its share of its machine's budget. Registered under the name "corral"
    (registering it again replaces it). Workers in the client's own process (LocalCluster with
    processes=False) share that process's budget instead; register it only for worker processes."""

    name = "corral"
    idempotent = True

    def setup(self, worker):
        _dask_worker.join(worker)

    def teardown(self, worker):
        _dask_worker.leave(worker)


def dask_setup(worker) -> None:
    """The preload hook: `dask worker ... --preload corral.dask` (or `distributed.worker.preload` in the
    Dask config) calls it with the Worker as it starts. TypeError for a server that is not a Worker
    (`--preload-nanny corral.dask`: the share is the worker process's)."""
    if not hasattr(worker, "executors") or not hasattr(worker, "periodic_callbacks"):
        raise TypeError(f"corral.dask is a worker preload (--preload corral.dask), not for {type(worker).__name__}")
    _dask_worker.join(worker)
