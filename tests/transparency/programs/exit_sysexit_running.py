"""sys.exit(3) from the main thread while pool tasks run: exit status 3, the running and queued work
finishes (python joins the executor's threads at exit), atexit runs after."""
# transparency: rc=3
import atexit
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

finished = []
lock = threading.Lock()


def task(i):
    time.sleep(0.1)
    with lock:
        finished.append(i)


atexit.register(lambda: print("atexit: executor tasks finished:", sorted(x for x in finished if x < 100), flush=True))
ex = ThreadPoolExecutor(2)
for i in range(6):
    ex.submit(task, i)
tp = ThreadPool(2)
tp.map_async(task, range(100, 104))
time.sleep(0.05)
print("main: exiting with 3 while tasks run", flush=True)
sys.exit(3)
