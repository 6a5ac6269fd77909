"""multiprocessing Processes with fork, spawn and forkserver started from inside a thread-pool task;
results come back through a Queue; exit codes (0, sys.exit(4), an uncaught exception -> 1)."""
import multiprocessing as mp
import sys
from concurrent.futures import ThreadPoolExecutor


def put(q, x):
    q.put(x * 10)


def exits(code):
    sys.exit(code)


def raises():
    raise ValueError("in child")


def run_with(method):
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=put, args=(q, 4))
    p.start()
    got = q.get(timeout=10)
    p.join(10)
    codes = []
    for target, args in ((exits, (4,)), (exits, (0,)), (raises, ())):
        c = ctx.Process(target=target, args=args)
        c.start()
        c.join(10)
        codes.append(c.exitcode)
    return method, got, p.exitcode, codes


if __name__ == "__main__":
    with ThreadPoolExecutor(3) as ex:
        for res in ex.map(run_with, ("fork", "spawn", "forkserver"), timeout=20):
            print(res, flush=True)
