"""A pool of N keeps exactly N tasks in flight, never more: N tasks meeting at a Barrier(N) all get there
(ThreadPoolExecutor(8), ThreadPool(8)), and the most tasks seen running at once is N, also when tasks
wait on futures of another pool."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

running = 0
most = 0
guard = threading.Lock()
helper = ThreadPoolExecutor(4)


def tracked(i):
    global running, most
    with guard:
        running += 1
        most = max(most, running)
    if i % 2:
        helper.submit(time.sleep, 0.01).result()
    else:
        time.sleep(0.01)
    with guard:
        running -= 1
    return i


def meet(barrier):
    return barrier.wait(timeout=20) is not None


with ThreadPoolExecutor(8) as ex:
    b = threading.Barrier(8)
    print("ThreadPoolExecutor(8): 8 tasks met at a Barrier(8):", all(ex.map(meet, [b] * 8)))
    most = 0
    list(ex.map(tracked, range(80)))
    print("ThreadPoolExecutor(8): most tasks running at once:", most)
with ThreadPool(8) as pool:
    b = threading.Barrier(8)
    print("ThreadPool(8): 8 tasks met at a Barrier(8):", all(pool.map(meet, [b] * 8, chunksize=1)))
    most = 0
    pool.map(tracked, range(80), chunksize=1)
    print("ThreadPool(8): most tasks running at once:", most)
with ThreadPoolExecutor(3) as ex:
    most = 0
    list(ex.map(tracked, range(60)))
    print("ThreadPoolExecutor(3): most tasks running at once:", most)
helper.shutdown()
