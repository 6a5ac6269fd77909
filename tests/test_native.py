"""corral.native_pools() and the native thread controls, checked against threadpoolctl in the same process."""

import ctypes
import ctypes.util
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import corral
from corral import _core

numpy = pytest.importorskip("numpy")
threadpoolctl = pytest.importorskip("threadpoolctl")


def _by_path(pools):
    return {p["path"]: p for p in pools}


def _openblas(pools):
    found = [p for p in pools if p["library"] == "openblas"]
    assert found, f"numpy's OpenBLAS not discovered: {pools}"
    return found[0]


def test_agrees_with_threadpoolctl():
    ours = _by_path(corral.native_pools())
    theirs = {info["filepath"]: info for info in threadpoolctl.threadpool_info()}
    assert set(ours) == set(theirs)
    assert ours, "numpy is imported: at least its BLAS must show"
    for path, info in theirs.items():
        mine = ours[path]
        assert mine["library"] == info["internal_api"]
        assert mine["prefix"] == info["prefix"]
        assert mine["version"] == info["version"]
        assert mine["num_threads"] == info["num_threads"]
        if "threading_layer" in info:
            assert mine["threading_layer"] == info["threading_layer"]
        assert set(mine) == {"library", "path", "version", "threading_layer", "num_threads", "prefix", "scope"}


def test_reads_the_limit_threadpoolctl_sets():
    before = _openblas(corral.native_pools())["num_threads"]
    with threadpoolctl.threadpool_limits(1):
        assert _openblas(corral.native_pools())["num_threads"] == 1
    assert _openblas(corral.native_pools())["num_threads"] == before


def test_picks_up_a_library_loaded_later():
    # A fresh interpreter, so that nothing else in this session has loaded libgomp yet.
    script = textwrap.dedent(
        """
        import ctypes, ctypes.util, os, corral
        assert not [p for p in corral.native_pools() if p["prefix"] == "libgomp"]
        gomp = ctypes.CDLL(ctypes.util.find_library("gomp"))
        gomp.omp_set_num_threads(3)
        found = [p for p in corral.native_pools() if p["prefix"] == "libgomp"]
        assert len(found) == 1, found
        assert found[0]["library"] == "openmp" and found[0]["scope"] == "calling_thread"
        assert found[0]["num_threads"] == gomp.omp_get_max_threads() == 3, found
        assert os.path.realpath(found[0]["path"]) == found[0]["path"]
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_process_limit_reaches_openblas_and_restores():
    blas = _openblas(corral.native_pools())
    if blas["threading_layer"] != "pthreads":
        pytest.skip(f"numpy's OpenBLAS uses {blas['threading_layer']}, not pthreads")
    assert blas["scope"] == "process"
    before = blas["num_threads"]
    saved = _core.set_native_process_limit(1)
    try:
        seen = {}
        # Process-wide: another thread sees it too (threadpoolctl reads through the same library).
        thread = threading.Thread(target=lambda: seen.update(n=threadpoolctl.threadpool_info()))
        thread.start()
        thread.join()
        assert [i["num_threads"] for i in seen["n"] if i["filepath"] == blas["path"]] == [1]
    finally:
        _core.restore_native_limits(saved)
    assert _openblas(corral.native_pools())["num_threads"] == before


def test_thread_limit_is_per_thread_for_openmp():
    path = ctypes.util.find_library("gomp")
    assert path, "libgomp (part of gcc) not found"
    gomp = ctypes.CDLL(path)
    results = {}

    def worker():
        mine = gomp.omp_get_max_threads()
        saved = _core.set_native_thread_limit(mine + 1)
        results["set"] = gomp.omp_get_max_threads()
        results["snapshot_len"] = len(saved)
        _core.restore_native_limits(saved)
        results["restored"] = gomp.omp_get_max_threads()
        results["mine"] = mine

    main_before = gomp.omp_get_max_threads()
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert results["set"] == results["mine"] + 1
    assert results["restored"] == results["mine"]
    assert results["snapshot_len"] >= 1
    assert gomp.omp_get_max_threads() == main_before  # the main thread never saw it


def test_capture_lists_the_libraries_of_that_scope():
    process = _core.capture_native_limits("process")
    expected = [p for p in corral.native_pools() if p["scope"] == "process"]
    assert len(process) == len(expected)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 1"):
        _core.set_native_thread_limit(0)
    with pytest.raises(ValueError, match="at least 1"):
        _core.set_native_process_limit(-3)
    with pytest.raises(ValueError, match="scope"):
        _core.capture_native_limits("everything")
    with pytest.raises(TypeError):
        _core.restore_native_limits(None)


def test_concurrent_discovery_and_imports_do_not_deadlock():
    # Discovery from many threads while another loads libraries (dlopen under the GIL, as imports do).
    errors = []

    def discover():
        try:
            for _ in range(50):
                corral.native_pools()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def load():
        for _ in range(50):
            ctypes.CDLL(ctypes.util.find_library("m"))

    threads = [threading.Thread(target=discover) for _ in range(4)] + [threading.Thread(target=load)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([os.path.abspath(__file__), "-q"]))
