"""os.fork() after the program's pools are done: the parent has one thread again, as under plain python
(where Python 3.12+ warns of a fork() in a process of several threads, a program that forks after its
pools ended sees no warning). corral's permit monitor once outlived the pools by half a second."""
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool


def os_threads():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[17])


if __name__ == "__main__":
    warnings.simplefilter("error", DeprecationWarning)  # a fork() warning fails the fork below
    with ThreadPoolExecutor(2) as ex:
        print(sum(ex.map(abs, range(-50, 50))))
    with ThreadPool(2) as pool:
        print(sum(pool.map(abs, range(-50, 50))))
    time.sleep(0.1)  # the pools' threads have ended (their join returns a moment before the OS thread is gone)
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        threads = os_threads()
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        print("threads in the parent after fork():", threads, "child status:", status)
    with ThreadPoolExecutor(2) as ex:  # the pools work after it
        print(sum(ex.map(abs, range(-50, 50))))
