"""A class defined in the program crosses spawn and forkserver process boundaries, as argument and as
result, with ProcessPoolExecutor and multiprocessing Pool; the child sees the program as __mp_main__."""
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor


class Point:
    def __init__(self, x):
        self.x = x

    def __repr__(self):
        return f"Point({self.x})"


def double(p):
    return Point(p.x * 2)


def child_view(_):
    main = sys.modules["__main__"]
    return (main.__name__, main is sys.modules.get("__mp_main__"), hasattr(main, "Point"), __name__)


if __name__ == "__main__":
    print("parent: main is mp_main:", sys.modules["__main__"] is sys.modules.get("__mp_main__"), flush=True)
    for method in ("spawn", "forkserver"):
        ctx = mp.get_context(method)
        with ProcessPoolExecutor(1, mp_context=ctx) as ex:
            print(method, "ProcessPoolExecutor:", ex.submit(double, Point(3)).result(timeout=15),
                  ex.submit(child_view, 0).result(timeout=15), flush=True)
        with ctx.Pool(1) as pool:
            print(method, "Pool.apply:", pool.apply_async(double, (Point(4),)).get(timeout=15),
                  pool.apply_async(child_view, (0,)).get(timeout=15), flush=True)
            print(method, "Pool.map:", pool.map_async(double, [Point(1), Point(2)]).get(timeout=15), flush=True)
        p = ctx.Process(target=double, args=(Point(5),))
        p.start()
        p.join(15)
        print(method, "Process exitcode:", p.exitcode, flush=True)
