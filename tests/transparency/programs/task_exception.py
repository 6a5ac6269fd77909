"""An exception raised in a task surfaces as under plain python: type, message, the task's frame in the
traceback, __cause__ chain, exceptions from map and from ThreadPool; the last one is uncaught (exit 1,
same last traceback line)."""
# transparency: rc=1 stderr-tail=1
import traceback
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool


class AppError(Exception):
    pass


def fails(i):
    if i == 3:
        try:
            {}["missing"]
        except KeyError as e:
            raise AppError(f"task {i} failed") from e
    return i


def describe(e):
    frames = traceback.extract_tb(e.__traceback__)
    return (type(e).__name__, str(e), frames[-1].name, frames[-1].line, type(e.__cause__).__name__,
            frames[0].filename.endswith("task_exception.py"))


with ThreadPoolExecutor(2) as ex:
    try:
        ex.submit(fails, 3).result()
    except AppError as e:
        print("submit:", describe(e))
    try:
        list(ex.map(fails, range(6)))
    except AppError as e:
        print("map:", describe(e))
    f = ex.submit(fails, 3)
    print("future.exception():", type(f.exception()).__name__, f.exception())
with ThreadPool(2) as pool:
    try:
        pool.map(fails, range(6))
    except AppError as e:
        print("ThreadPool.map:", describe(e))
    try:
        pool.apply(fails, (3,))
    except AppError as e:
        print("ThreadPool.apply:", type(e).__name__, e)
with ThreadPoolExecutor(1) as ex:
    ex.submit(fails, 3).result()  # uncaught: traceback, exit 1
