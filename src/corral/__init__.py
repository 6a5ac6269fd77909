"""corral: one CPU budget for every layer of parallelism in a Python program."""

from . import _core

from ._core import Budget, BudgetSource, budget  # noqa: F401  (the CPU budget: docs/architecture.md invariant 1)
from ._core import native_pools  # noqa: F401  (BLAS/OpenMP libraries loaded now)
from .process_executor import ProcessPoolExecutor  # noqa: F401  (a CPU share per worker process)
from .process_pool import Pool  # noqa: F401  (a CPU share per worker process)
__version__ = _core.__version__

# Pools with the standard APIs on corral's scheduler, and the patcher that puts them under programs.
from .blocking import blocking  # noqa: E402
from .executor import Future, ThreadPoolExecutor  # noqa: E402
from .patch import patch  # noqa: E402
from .thread_pool import ThreadPool  # noqa: E402

__all__ = ["ThreadPool", "ThreadPoolExecutor", "Future", "blocking", "patch", "__version__", "budget", "Budget", "BudgetSource", "Pool", "ProcessPoolExecutor"]
