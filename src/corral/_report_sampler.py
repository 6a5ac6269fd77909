"""The report's outside view: samples a process and its descendants from /proc, never touching them.

Each sample reads, for every thread of every process in the tree, /proc/<pid>/task/<tid>/stat (the state
letter: R is running or waiting for a CPU, "runnable") and .../schedstat (run_ns, wait_ns: the kernel's
time on a CPU and time waiting on a run queue); per process, /proc/<pid>/stat (utime+stime, every
thread's, the exited ones' included). Descendants come from .../task/<tid>/children, read every
CHILDREN_EVERY samples (a child that lives shorter than that is missed; its CPU time still counts in its
parent's total). The files stay open and are re-read with pread: procfs regenerates them on each read,
and an open+close per file would cost more than the read itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_TICK = os.sysconf("SC_CLK_TCK")
_R = ord("R")


def _read(fd: int) -> bytes:
    return os.pread(fd, 4096, 0)


def _after_comm(stat: bytes) -> list[bytes]:
    """The fields of a stat line after `pid (comm)`: comm may hold spaces and parentheses."""
    return stat[stat.rindex(b")") + 2:].split()


@dataclass
class _Thread:
    stat: int
    schedstat: int
    children: int | None
    run_ns: int = 0
    wait_ns: int = 0
    kids: list[bytes] = field(default_factory=list)  # its child processes, as last read


@dataclass
class _Process:
    pid: int
    stat: int
    comm: str
    threads: dict[int, _Thread] = field(default_factory=dict)
    cpu_s: float = 0.0


@dataclass
class Sample:
    t: float                # seconds since the sampler started
    runnable: list[int]     # tids in state R, every process of the tree
    threads: int            # threads alive in the tree
    cpu_s: dict[int, float]  # pid -> utime+stime so far, seconds
    run_s: float            # sum over threads of time on a CPU since the start (schedstat), seconds
    wait_s: float           # sum over threads of time waiting for a CPU since the start, seconds
    root_tids: frozenset[int] = frozenset()  # the root process's threads


class TreeSampler:
    """Samples the process `root` and its descendants; `sample(t)` returns a Sample or None once
    the tree is gone. Totals of run and wait time keep the part of threads that have exited."""

    def __init__(self, root: int):
        self.root = root
        self.processes: dict[int, _Process] = {}
        self.commands: dict[int, str] = {}  # every pid seen -> its comm
        self.parents: dict[int, int] = {}   # every pid seen -> the pid it was found under
        self.cpu_s: dict[int, float] = {}   # every pid seen -> its last utime+stime
        self.tids_of_root: set[int] = set()  # every thread seen in the root process
        self.ignore: int | None = None  # the probe's thread: neither counted nor summed
        self._run_ns = 0
        self._wait_ns = 0
        self._count = 0

    def close(self) -> None:
        for pid in list(self.processes):
            self._drop_process(pid)

    # New child processes are looked for every this many samples (a read per thread: a third of the cost).
    CHILDREN_EVERY = 4

    def sample(self, t: float) -> Sample | None:
        self._count += 1
        look_for_children = self._count % self.CHILDREN_EVERY == 1
        runnable: list[int] = []
        threads = 0
        seen: set[int] = set()
        todo = [(self.root, 0)]
        while todo:
            pid, parent = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            proc = self.processes.get(pid) or self._open_process(pid, parent)
            if proc is None:
                continue
            try:
                fields = _after_comm(_read(proc.stat))
                proc.cpu_s = (int(fields[11]) + int(fields[12])) / _TICK
                self.cpu_s[pid] = proc.cpu_s
                tids = os.listdir(f"/proc/{pid}/task")
            except (OSError, ValueError, IndexError):
                self._drop_process(pid)
                continue
            alive = set()
            for name in tids:
                tid = int(name)
                alive.add(tid)
                if tid == self.ignore:
                    if tid in proc.threads:  # opened before the probe said who it is
                        self._drop_thread(proc, tid)
                    continue
                thread = proc.threads.get(tid) or self._open_thread(pid, tid, proc)
                if thread is None:
                    continue
                try:
                    stat = _read(thread.stat)
                    state = stat[stat.rindex(b")") + 2]  # one byte: no split of the whole line
                    sched = _read(thread.schedstat).split()  # run_ns wait_ns timeslices
                    run_ns, wait_ns = int(sched[0]), int(sched[1])
                    if look_for_children and thread.children:
                        thread.kids = _read(thread.children).split()
                except (OSError, ValueError, IndexError):
                    self._drop_thread(proc, tid)
                    continue
                threads += 1
                if state == _R:
                    runnable.append(tid)
                self._run_ns += max(0, run_ns - thread.run_ns)
                self._wait_ns += max(0, wait_ns - thread.wait_ns)
                thread.run_ns, thread.wait_ns = run_ns, wait_ns
                if thread.kids:
                    todo.extend((int(k), pid) for k in thread.kids)
            for tid in [tid for tid in proc.threads if tid not in alive]:
                self._drop_thread(proc, tid)
        for pid in [pid for pid in self.processes if pid not in seen]:
            self._drop_process(pid)
        if not self.processes:
            return None
        root = self.processes.get(self.root)
        return Sample(t, runnable, threads, {pid: p.cpu_s for pid, p in self.processes.items()},
                      self._run_ns / 1e9, self._wait_ns / 1e9, frozenset(root.threads) if root else frozenset())

    def _open_process(self, pid: int, parent: int) -> _Process | None:
        try:
            fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            comm = "?"
        proc = _Process(pid, fd, comm)
        self.processes[pid] = proc
        self.commands[pid] = comm
        self.parents.setdefault(pid, parent)
        return proc

    def _open_thread(self, pid: int, tid: int, proc: _Process) -> _Thread | None:
        base = f"/proc/{pid}/task/{tid}/"
        fds = []
        try:
            for name in ("stat", "schedstat"):
                fds.append(os.open(base + name, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            return None
        try:  # needs CONFIG_PROC_CHILDREN; without it, the tree is the root alone
            children = os.open(base + "children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            children = None
        thread = _Thread(fds[0], fds[1], children)
        if pid == self.root:
            self.tids_of_root.add(tid)
        proc.threads[tid] = thread
        return thread

    def _drop_thread(self, proc: _Process, tid: int) -> None:
        thread = proc.threads.pop(tid)
        for fd in (thread.stat, thread.schedstat, thread.children):
            if fd is not None:
                os.close(fd)

    def _drop_process(self, pid: int) -> None:
        proc = self.processes.pop(pid)
        for tid in list(proc.threads):
            self._drop_thread(proc, tid)
        os.close(proc.stat)


# The file-name prefixes of the libraries docs/native.md controls (threadpoolctl's, as native_library.hpp).
_PARALLEL_PREFIXES = ("libopenblas", "libscipy_openblas", "libmkl_rt", "libblis", "libflexiblas", "libgomp",
                      "libiomp", "libomp")


def libraries_mapped(pid: int) -> list[str]:
    """The BLAS/OpenMP shared objects /proc/<pid>/maps shows (base names, sorted); [] when unreadable.
    For the processes the probe is not inside (children of the program)."""
    found = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                name = os.path.basename(line.rstrip("\n").split(" ")[-1])
                if name.startswith(_PARALLEL_PREFIXES) and ".so" in name:
                    found.add(name)
    except OSError:
        return []
    return sorted(found)
