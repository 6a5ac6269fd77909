#!/usr/bin/env python3
"""W5 I/O-bound: a multiprocessing.pool.ThreadPool of 32 whose tasks each send a request to a slow
service on 127.0.0.1 (an echo server thread in this script that answers after --delay-ms, 20 ms) and do
a little work on the answer. The threads mostly wait: a tool that limits running threads to the CPU
budget must not limit waiting ones (corral's invariant 7). Prints one BENCH_RESULT JSON line; the
ideal time is tasks x delay / 32 per pass."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hashlib  # noqa: E402
import heapq  # noqa: E402
import itertools  # noqa: E402
import selectors  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402

REQUEST_BYTES = 64


class DelayedEchoServer:
    """One thread on 127.0.0.1 that echoes each request back after a fixed delay, like a slow remote
    service. Bounded: one thread, at most `max_connections` open connections (more are closed at once),
    and it stops when the workload ends."""

    def __init__(self, delay_s: float, max_connections: int):
        self.delay_s = delay_s
        self.max_connections = max_connections
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=max_connections)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.selector.register(self.wake_reader, selectors.EVENT_READ, "stop")
        self.thread = threading.Thread(target=self._serve, name="delayed-echo-server", daemon=True)
        self.open_connections = 0

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.wake_writer.send(b"x")
        self.thread.join(timeout=10)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()
        self.wake_writer.close()

    def _serve(self):
        due = []  # heap of (time to answer, sequence, connection, request)
        sequence = itertools.count()
        while True:
            timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
            for key, _ in self.selector.select(timeout):
                if key.data == "stop":
                    return
                if key.data == "accept":
                    self._accept()
                    continue
                conn = key.fileobj
                try:
                    request = conn.recv(REQUEST_BYTES)
                except OSError:
                    request = b""
                if request:
                    heapq.heappush(due, (time.monotonic() + self.delay_s, next(sequence), conn, request))
                else:
                    self._close(conn)
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, _, conn, request = heapq.heappop(due)
                try:
                    conn.sendall(request)
                except OSError:
                    self._close(conn)

    def _accept(self):
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        if self.open_connections >= self.max_connections:
            conn.close()
            return
        conn.setblocking(True)  # answers are tiny: a blocking send never stalls the loop for long
        self.open_connections += 1
        self.selector.register(conn, selectors.EVENT_READ, "conn")

    def _close(self, conn):
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
        self.open_connections -= 1


def make_task(address):
    def request_and_digest(index: int) -> str:
        """Ask the service, wait for its answer, then a little work: parse and hash it."""
        payload = index.to_bytes(8, "little") * (REQUEST_BYTES // 8)
        with socket.create_connection(address, timeout=30) as conn:
            conn.sendall(payload)
            answer = b""
            while len(answer) < len(payload):
                chunk = conn.recv(len(payload) - len(answer))
                if not chunk:
                    raise ConnectionError("service closed the connection early")
                answer += chunk
        _common.check(answer == payload, f"request {index} got a different answer")
        values = np.frombuffer(answer, dtype=np.int64)
        return hashlib.sha256(values.tobytes() * 64).hexdigest()

    return request_and_digest


def main():
    p = _common.parser(__doc__)
    p.add_argument("--tasks", type=_common.positive_int, default=160, help="requests per pass")
    p.add_argument("--delay-ms", type=float, default=20.0, help="how long the service takes to answer")
    args = p.parse_args()
    pool = args.pool or 32
    indices = list(range(args.tasks))

    with DelayedEchoServer(args.delay_ms / 1000.0, max_connections=max(256, 2 * pool)) as server:
        task = make_task(server.address)
        digests: list = []
        with _common.thread_map(args.impl, pool) as pmap:
            def one_pass():
                digests[:] = pmap(task, indices)

            seconds = _common.timed_passes(args.passes, one_pass)

    _common.check(len(set(digests)) == len(indices), "answers went missing or were mixed up")
    ideal = args.passes * args.tasks * args.delay_ms / 1000.0 / pool
    _common.emit("W5", args.impl, pool, sum(seconds), "s", passes=seconds, tasks=len(indices),
                 ideal_s=ideal)


if __name__ == "__main__":
    main()
