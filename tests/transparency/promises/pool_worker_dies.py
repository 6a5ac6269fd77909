"""corral's promise beyond the stdlib (runner and patch modes only; the stdlib hangs here): a
multiprocessing.Pool worker that dies in a task (sys.exit(3), os._exit(1), SIGKILL) fails the pool's
pending results with an error instead of a hang."""
import multiprocessing as mp
import os
import signal
import sys
import time


def task(arg):
    x, how = arg
    if x == 2:
        if how == "sys.exit(3)":
            sys.exit(3)
        if how == "os._exit(1)":
            os._exit(1)
        if how == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return x


if __name__ == "__main__":
    for how in ("sys.exit(3)", "os._exit(1)", "SIGKILL"):
        pool = mp.Pool(2)
        try:
            pool.map_async(task, [(i, how) for i in range(6)]).get(timeout=8)
            print(f"{how} in a task: completed")
        except mp.TimeoutError:
            print(f"{how} in a task: HANG (no result in 8 s)")
        except Exception:
            print(f"{how} in a task: error")
        pool.terminate()
        pool.join()
