"""Pools inside pool tasks, three levels: ThreadPoolExecutor -> ThreadPool -> ThreadPoolExecutor,
with each level's results and the threads' names' prefixes."""
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool


def leaf(x):
    return x * 2


def level2(x):
    with ThreadPoolExecutor(3, thread_name_prefix="inner") as ex:
        vals = list(ex.map(leaf, range(x, x + 3)))
        name = ex.submit(lambda: threading.current_thread().name).result()
    return sum(vals), name.rsplit("_", 1)[0]


def level1(x):
    with ThreadPool(2) as pool:
        return pool.map(level2, [x, x + 10])


if __name__ == "__main__":
    with ThreadPoolExecutor(4) as ex:
        for res in ex.map(level1, range(4)):
            print(res)
    with ThreadPoolExecutor(2) as ex:
        futs = [ex.submit(level1, i) for i in range(6)]
        print("6 nested tasks on a 2-worker outer pool:", [f.result(timeout=30)[0][0] for f in futs])
