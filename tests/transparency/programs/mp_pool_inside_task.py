"""`with multiprocessing.Pool(2)` (and a ProcessPoolExecutor) inside a thread-pool task: results, and the
task ends promptly (the pool's workers are terminated on leaving the with-block)."""
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor


def square(x):
    return x * x


def with_mp_pool(n):
    t = time.monotonic()
    with multiprocessing.Pool(2) as pool:
        res = pool.map(square, range(n))
    return sum(res), time.monotonic() - t < 15


def with_ppe(n):
    t = time.monotonic()
    with ProcessPoolExecutor(2) as ex:
        res = list(ex.map(square, range(n)))
    return sum(res), time.monotonic() - t < 15


if __name__ == "__main__":
    with ThreadPoolExecutor(2) as ex:
        print("multiprocessing.Pool(2) in a task (sum, prompt):", ex.submit(with_mp_pool, 20).result(timeout=40))
        print("ProcessPoolExecutor(2) in a task (sum, prompt):", ex.submit(with_ppe, 20).result(timeout=40))
        both = [ex.submit(with_mp_pool, 10), ex.submit(with_mp_pool, 12)]
        print("two at once:", [f.result(timeout=40) for f in both])
