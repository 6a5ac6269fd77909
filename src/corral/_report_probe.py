"""The report's inside view: `python -m corral._report_probe FILE plain|corral PROGRAM...` runs the program
as plain python would (plain: no patch, no limits) or as `python -m corral` does, while a probe thread
writes what only the inside can see to FILE, one JSON object a line (docs/report.md, "The probe"):

  {"probe": {"pid", "tid", "mode", "interval"}}         first, once
  {"t", "threads": {native_id: name}}                    the program's Python threads, when they change
  {"t", "libs": [[library, num_threads, file], ...]}     BLAS/OpenMP loaded (corral._core.native_pools())
  {"t", "permits": {held, waiting, paused, holders...}}  corral's permit table (corral mode only)

t is time.monotonic() (CLOCK_MONOTONIC, the clock the sampler reads too). A line is written only when
its part changed.

The probe stays out of the program's sight: its thread is a bare _thread thread that never calls
threading.current_thread(), so threading.enumerate() and active_count() do not list it; it sleeps on a
private lock (no wrapped wait); its file descriptor is above the program's range and closed on exec;
no variable names it; it registers no atexit handler (it stops in threading's own shutdown hook,
before finalization, never inside corral._core then). Its thread is absent from a forked child, and
every line is written whole with os.write, so a crash or a signal leaves a readable file.
"""

from __future__ import annotations

import _thread
import fcntl
import json
import os
import sys
import threading
import time

from . import _as_main, _compat, _core, _runner

_HIGH_FD = 767  # probe's descriptor: above what programs usually hold (F_DUPFD takes the next free one)


class _Probe:
    def __init__(self, fd: int, mode: str, interval: float):
        self.fd = fd
        st = os.fstat(fd)
        self.file_id = (st.st_dev, st.st_ino)
        self.corral = mode == "corral"
        self.interval = interval
        self.last: dict[str, object] = {}
        self.stopped = False
        self.pid = os.getpid()
        self.ticking = _thread.allocate_lock()  # held during a tick: stop() waits for it

    def write(self, obj: dict) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        try:
            # The program may have closed our descriptor (closerange) and opened its own file under the
            # same number: write only while it is still ours.
            # (check and write in one call that keeps the GIL: bindings/bind_report.cpp)
            _core.write_if_same_file(self.fd, *self.file_id, data)
        except OSError:
            pass

    def changed(self, key: str, value: object, t: float) -> None:
        if self.last.get(key) != value:
            self.last[key] = value
            self.write({"t": t, key: value})

    def tick(self) -> None:
        t = time.monotonic()
        # list() copies the dict in one step under the GIL; never current_thread() (it would register us).
        threads = {str(th.native_id): th.name for th in list(_compat.threads_by_ident.values())
                   if th.native_id is not None}
        self.changed("threads", threads, t)
        libs = [[p["library"], p["num_threads"], os.path.basename(p["path"])] for p in _core.native_pools()]
        self.changed("libs", libs, t)
        if self.corral:  # plain mode: the permit table is never made (that would be corral at work)
            stats = _core.permit_stats()
            self.changed("permits", {k: stats[k] for k in ("permits", "held", "waiting", "returning", "paused",
                                                          "lent", "holders", "overdrafts")}, t)

    def loop(self, ready: _thread.LockType) -> None:
        # Everything that opens a descriptor of its own happens before the program starts (start()
        # waits for `ready`): a program that closes every descriptor and opens its own files could
        # otherwise be handed the number of our comm file between its open and its write.
        try:
            _write_own_name()
            self.write({"probe": {"pid": os.getpid(), "tid": threading.get_native_id(),
                                  "mode": "corral" if self.corral else "plain", "interval": self.interval}})
        finally:
            ready.release()  # whatever happened: the program must start
        sleeper = _thread.allocate_lock()
        sleeper.acquire()
        while os.getpid() == self.pid:  # never runs on in a forked child (it is not there anyway)
            with self.ticking:
                if self.stopped:
                    return
                try:
                    self.tick()
                except Exception:  # the program's state changed under us (a library unloading): next tick
                    pass
            sleeper.acquire(timeout=self.interval)

    def stop(self) -> None:
        """At interpreter shutdown, before finalization: no tick may be inside corral._core when it
        begins. A thread that takes the GIL back during finalization is ended by pthread_exit, whose
        forced unwinding through the binding's C++ frames calls std::terminate (Python 3.11-3.13)."""
        if os.getpid() != self.pid:  # a forked child ending: no probe here, and the lock may be a copy
            return                   # taken by the parent's probe thread at the fork
        with self.ticking:
            self.stopped = True


def _write_own_name() -> None:
    """Names this thread corral-probe in /proc (comm), so the sampler can leave it out."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write("corral-probe")
    except OSError:
        pass


def start(path: str, mode: str, interval: float) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
    os.close(fd)
    probe = _Probe(high, mode, interval)
    # threading's own shutdown hooks (concurrent.futures' are there too), not atexit's: the program's
    # atexit handlers stay as it made them. Run last (newest first), after the pools' threads are joined.
    _compat.register_threading_atexit(probe.stop)
    ready = _thread.allocate_lock()
    ready.acquire()
    _thread.start_new_thread(probe.loop, (ready,))
    ready.acquire()  # the thread is named and its first line written: the program may start


def main(argv: list[str]) -> int:
    path, mode, interval, program = argv[0], argv[1], float(argv[2]), argv[3:]
    start(path, mode, interval)
    if mode == "corral":
        return _runner.main(program)
    own, rest = _runner.split_argv(program)
    args = _runner.build_parser().parse_args(own)
    try:
        run = _as_main.prepare(script=args.target, module=args.module, code=args.code, args=rest)
    except _as_main.CannotRun as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except _as_main.PythonReports:
        _runner.hand_to_python(args.target, rest)  # python's own words for a script that does not compile
    _as_main.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
