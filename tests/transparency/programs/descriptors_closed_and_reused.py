"""A program's own descriptors: its first open() gets 3, and a program that closes every descriptor it
inherited (as a daemon does) and opens a log of its own keeps that file as it wrote it while its pools
run. corral's tree share once kept its file at the lowest free number and, after the program closed and
reused that number, wrote its member record into the program's log."""
import os
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool


def burn(n):
    total = 0
    for i in range(n):
        total += i
    return total


if __name__ == "__main__":
    with open("first.txt", "w") as first:
        print("first open() gets descriptor", first.fileno())
    os.closerange(3, 4096)
    log = open("app.log", "w")
    print("after closerange, the log gets descriptor", log.fileno())
    log.write("started\n")
    log.flush()
    with ThreadPoolExecutor(8) as ex:
        total = sum(ex.map(burn, [200_000] * 16))
    with ThreadPool(4) as pool:
        total += sum(pool.map(burn, [100_000] * 8, chunksize=1))
    log.write(f"total {total}\n")
    log.close()
    with open("app.log", "rb") as f:
        data = f.read()
    print("log:", data, len(data), "bytes")
