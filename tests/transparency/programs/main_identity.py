"""What the program sees of itself: __name__, __file__, __spec__, sys.argv, sys.path[0],
sys.modules['__main__'] and '__mp_main__', a function's __module__, and the same from a pool task and
from an atexit handler."""
# transparency: args=alpha --beta=2 -v
import atexit
import os
import sys
from concurrent.futures import ThreadPoolExecutor
import multiprocessing  # noqa: F401  (aliases __mp_main__ in plain python too)


def where():
    main = sys.modules["__main__"]
    return (main is sys.modules.get("__mp_main__"), getattr(main, "where", None) is where,
            where.__module__)


print("__name__:", __name__)
print("__file__ absolute:", os.path.isabs(__file__), "basename:", os.path.basename(__file__))
print("__spec__:", __spec__)
print("__package__:", __package__)
print("sys.argv:", sys.argv)
print("argv[0] is __file__ (same file):", os.path.samefile(sys.argv[0], __file__))
print("sys.path[0] is the program's directory:", sys.path[0] == os.path.dirname(os.path.realpath(__file__)))
print("sys.path[0] absolute:", os.path.isabs(sys.path[0]))
print("cwd holds nothing yet:", os.listdir("."))
print("main is mp_main, where() in main, where.__module__:", where())
print("__main__ has __builtins__:", "__builtins__" in globals())
print("globals that are not the program's:", sorted(k for k in globals() if k.startswith("_") and k not in (
    "__name__", "__doc__", "__package__", "__loader__", "__spec__", "__annotations__", "__builtins__",
    "__file__", "__cached__")))
with ThreadPoolExecutor(2) as ex:
    print("from a pool task:", ex.submit(where).result())
atexit.register(lambda: print("from atexit:", where(), flush=True))
