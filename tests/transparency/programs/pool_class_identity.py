"""What a program can ask of the pool classes: a ThreadPool is a multiprocessing.pool.Pool (the stdlib
derives one from the other), a program's own subclass of Pool builds instances of exactly that class, a
class on both such a subclass and ThreadPool is a thread pool, and the classes' names are the stdlib's.
(`type(multiprocessing.Pool(1)) is multiprocessing.pool.Pool` is the one thing that differs under corral:
its Pool is a subclass of the stdlib's, named as it.)"""
import concurrent.futures as cf
import multiprocessing
import multiprocessing.dummy
import multiprocessing.pool
import threading
from multiprocessing.pool import Pool, ThreadPool


class LabelledPool(multiprocessing.pool.Pool):
    def __init__(self, processes=None, *args, **kwargs):
        self.made_by = "LabelledPool.__init__"
        super().__init__(processes, *args, **kwargs)

    def label(self):
        return "labelled"


class LabelledThreadPool(ThreadPool):
    pass


# On both a subclass of Pool and ThreadPool: a thread pool with the subclass's methods, whichever comes first.
class LabelledFirst(LabelledPool, ThreadPool):
    pass


class ThreadPoolFirst(ThreadPool, LabelledPool):
    pass


class Labelled:  # a mixin with a keyword of its own, between the two
    def __init__(self, processes=None, *args, label="?", **kwargs):
        self.label_given = label
        super().__init__(processes, *args, **kwargs)


class WithMixin(LabelledPool, Labelled, ThreadPool):
    pass


class ThreadPoolByName(ThreadPool):  # sets itself up as the stdlib's ThreadPool.__init__ does
    def __init__(self, processes):
        Pool.__init__(self, processes)


def thread_kind(_):
    return threading.current_thread().name.rstrip("0123456789-_ ()worker")


if __name__ == "__main__":
    tp = ThreadPool(1)
    dummy = multiprocessing.dummy.Pool(1)
    mine = LabelledPool(1)
    plain = multiprocessing.Pool(1)
    try:
        print("ThreadPool is a Pool:", isinstance(tp, multiprocessing.pool.Pool), isinstance(tp, Pool),
              issubclass(ThreadPool, Pool), isinstance(dummy, multiprocessing.pool.Pool))
        print("own subclass:", type(mine) is LabelledPool, mine.label(), mine.apply(abs, (-2,)),
              isinstance(mine, Pool), issubclass(LabelledPool, multiprocessing.pool.Pool))
        print("own ThreadPool subclass:", type(LabelledThreadPool(1)) is LabelledThreadPool,
              isinstance(LabelledThreadPool(1), Pool))
        print("Pool():", isinstance(plain, multiprocessing.pool.Pool), not isinstance(plain, ThreadPool),
              plain.apply(abs, (-3,)))
        for cls in (LabelledFirst, ThreadPoolFirst):
            with cls(2) as both:
                print(cls.__name__ + ":", type(both) is cls, isinstance(both, ThreadPool), both.label(),
                      getattr(both, "made_by", None), len(both._pool), both.map(abs, [-1, -2, -3]),
                      both.apply(abs, (-4,)), sorted(set(both.map(thread_kind, range(20)))),
                      sorted(both.imap_unordered(abs, [-5, -6])))
                both.close()
                both.join()
            try:
                both.apply(abs, (-1,))
            except ValueError as error:
                print(cls.__name__, "closed:", error)
        with WithMixin(2, label="given") as both, ThreadPoolByName(2) as by_name:
            print("with a mixin:", both.label_given, both.made_by, both.map(abs, [-1, -2]),
                  "by name:", by_name.map(abs, [-3]), by_name.apply(thread_kind, (0,)))
        for obj in (tp, dummy, mine, plain, cf.ThreadPoolExecutor(1)):
            print(type(obj).__module__, type(obj).__qualname__)
    finally:
        for pool in (tp, dummy, mine, plain):
            pool.terminate()
