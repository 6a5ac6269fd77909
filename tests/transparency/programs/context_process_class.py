"""A pool over a context whose Process class is the program's own: the NestablePool recipe (workers that
are not daemonic, so that they may have pools of their own) and a Process whose run() does more first.
Plain python's pools start workers of that class; corral's once started the stdlib's, which broke the
first ("daemonic processes are not allowed to have children") and skipped the second's run()."""
import concurrent.futures
import multiprocessing
import multiprocessing.pool
import os


def nestable_context(method):
    base = type(multiprocessing.get_context(method))

    class NoDaemonProcess(base.Process):
        @property
        def daemon(self):
            return False

        @daemon.setter
        def daemon(self, value):
            pass

    return type(f"NoDaemon{base.__name__}", (base,), {"Process": NoDaemonProcess})()


class TaggedProcess(multiprocessing.get_context("spawn").Process):
    def run(self):
        os.environ["TAG"] = "tagged"
        super().run()


class TaggedContext(type(multiprocessing.get_context("spawn"))):
    Process = TaggedProcess


def square(x):
    return x * x


def inner(n):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return sum(pool.map(square, range(n)))


def tag(_):
    return os.environ.get("TAG"), "daemonic" if multiprocessing.current_process().daemon else "not daemonic"


if __name__ == "__main__":
    with multiprocessing.pool.Pool(2, context=nestable_context("fork")) as pool:
        print("NestablePool (fork):", pool.map(inner, [3, 4, 5]))
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=TaggedContext()) as ex:
        print("ProcessPoolExecutor, own Process (spawn):", list(ex.map(tag, range(3))))
    with multiprocessing.pool.Pool(2, context=TaggedContext()) as pool:
        print("Pool, own Process (spawn):", pool.map(tag, range(3)))
