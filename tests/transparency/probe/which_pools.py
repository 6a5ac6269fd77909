"""Not compared with plain: says whose pools the stdlib names build, so that the suite can check that its
runner and patch modes really run under corral (and plain mode really does not)."""
import sys
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor
from multiprocessing.pool import ThreadPool
import multiprocessing

ex = ThreadPoolExecutor(1)
print("ThreadPoolExecutor:", type(ex).__module__)
ex.shutdown()
tp = ThreadPool(1)
print("ThreadPool:", type(tp).__module__)
tp.terminate()
print("ProcessPoolExecutor:", type(ProcessPoolExecutor(1)).__module__)
print("corral imported:", "corral" in sys.modules)
