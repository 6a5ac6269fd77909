"""What a program can ask of the pool classes: a ThreadPool is a multiprocessing.pool.Pool (the stdlib
derives one from the other), a program's own subclass of Pool builds instances of exactly that class,
and the classes' names are the stdlib's. (`type(multiprocessing.Pool(1)) is multiprocessing.pool.Pool`
is the one thing that differs under corral: its Pool is a subclass of the stdlib's, named as it.)"""
import concurrent.futures as cf
import multiprocessing
import multiprocessing.dummy
import multiprocessing.pool
from multiprocessing.pool import Pool, ThreadPool


class LabelledPool(multiprocessing.pool.Pool):
    def label(self):
        return "labelled"


class LabelledThreadPool(ThreadPool):
    pass


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
        for obj in (tp, dummy, mine, plain, cf.ThreadPoolExecutor(1)):
            print(type(obj).__module__, type(obj).__qualname__)
    finally:
        for pool in (tp, dummy, mine, plain):
            pool.terminate()
