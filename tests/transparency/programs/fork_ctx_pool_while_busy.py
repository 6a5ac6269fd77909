"""A multiprocessing 'fork' context Pool (and ProcessPoolExecutor) created and used while a
ThreadPoolExecutor is busy; the workers use a thread pool themselves; everything ends promptly."""
import multiprocessing as mp
import time
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor


def in_worker(x):
    with ThreadPoolExecutor(2) as ex:
        return sum(ex.map(lambda y: y * x, range(4)))


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    with ThreadPoolExecutor(2) as ex:
        busy = [ex.submit(time.sleep, 0.5) for _ in range(6)]
        time.sleep(0.1)
        t = time.monotonic()
        with ctx.Pool(2) as pool:
            print("fork Pool while busy:", pool.map_async(in_worker, range(6)).get(timeout=10))
        with ProcessPoolExecutor(2, mp_context=ctx) as pex:
            print("fork ProcessPoolExecutor while busy:", list(pex.map(in_worker, range(6), timeout=10)))
        p = ctx.Process(target=in_worker, args=(3,))
        p.start()
        p.join(10)
        print("fork Process while busy, exitcode:", p.exitcode)
        print("prompt:", time.monotonic() - t < 20)
        print("busy work done:", [f.result(timeout=20) for f in busy])
