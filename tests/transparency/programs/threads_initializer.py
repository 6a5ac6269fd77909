"""ThreadPoolExecutor(max_workers=2, initializer=...) and ThreadPool(2, initializer=...): the initializer
runs at most 2 times and the tasks run on at most 2 distinct threads, even when tasks wait (sleep, a
future of another pool)."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

calls = []
lock = threading.Lock()
helper = ThreadPoolExecutor(4)


def init():
    with lock:
        calls.append(threading.get_ident())


def task(i):
    time.sleep(0.003)
    if i % 5 == 0:
        helper.submit(time.sleep, 0.005).result()
    sum(range(5000))
    return threading.get_ident()


for rnd in range(2):
    calls.clear()
    with ThreadPoolExecutor(max_workers=2, initializer=init) as ex:
        idents = set(ex.map(task, range(120)))
    print(f"ThreadPoolExecutor round {rnd}: initializer calls <= 2: {len(calls) <= 2}, "
          f"distinct task threads <= 2: {len(idents) <= 2}, tasks ran on initialized threads: "
          f"{idents <= set(calls)}")
calls.clear()
with ThreadPool(2, initializer=init) as pool:
    idents = set(pool.map(task, range(120), chunksize=1))
print(f"ThreadPool: initializer calls == 2: {len(calls) == 2}, distinct task threads <= 2: {len(idents) <= 2}, "
      f"tasks ran on initialized threads: {idents <= set(calls)}")
helper.shutdown()
