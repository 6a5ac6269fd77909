"""Not compared with plain: says whose pools the stdlib names build, so that the suite can check that its
runner and patch modes really run under corral (and plain mode really does not)."""
import sys
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor
from multiprocessing.pool import ThreadPool

def whose(pool, name):
    # corral's classes are named as the stdlib's (same __module__ and repr): ask corral itself.
    corral = sys.modules.get("corral")
    return "corral" if corral is not None and isinstance(pool, getattr(corral, name)) else type(pool).__module__


ex = ThreadPoolExecutor(1)
print("ThreadPoolExecutor:", whose(ex, "ThreadPoolExecutor"))
ex.shutdown()
tp = ThreadPool(1)
print("ThreadPool:", whose(tp, "ThreadPool"))
tp.terminate()
print("ProcessPoolExecutor:", whose(ProcessPoolExecutor(1), "ProcessPoolExecutor"))
print("corral imported:", "corral" in sys.modules)
