"""corral.patch(): the stdlib pools become corral's, names imported earlier included, and leaving
the patch puts everything back exactly."""

import concurrent.futures
import concurrent.futures.thread
import multiprocessing.dummy
import multiprocessing.pool
from concurrent.futures import ThreadPoolExecutor as EarlyExecutor  # imported before any patch
from multiprocessing.pool import ThreadPool as EarlyPool

import pytest

import corral


def _state():
    return (
        multiprocessing.pool.ThreadPool,
        concurrent.futures.thread.ThreadPoolExecutor,
        concurrent.futures.ThreadPoolExecutor,
        "ThreadPoolExecutor" in vars(concurrent.futures),
        vars(multiprocessing.pool.ThreadPool)["__init__"],
        vars(concurrent.futures.thread.ThreadPoolExecutor)["__init__"],
    )


def test_module_attributes_are_replaced_and_restored():
    before = _state()
    with corral.patch():
        assert multiprocessing.pool.ThreadPool is corral.ThreadPool
        assert concurrent.futures.ThreadPoolExecutor is corral.ThreadPoolExecutor
        assert concurrent.futures.thread.ThreadPoolExecutor is corral.ThreadPoolExecutor
        with multiprocessing.dummy.Pool(2) as pool:
            assert type(pool) is corral.ThreadPool
    assert _state() == before


def test_names_imported_before_patching_build_corrals_pools():
    with corral.patch():
        with EarlyExecutor(max_workers=3, thread_name_prefix="early") as ex:
            assert type(ex) is corral.ThreadPoolExecutor
            assert ex._max_workers == 3  # __init__ ran once, with the caller's arguments
            assert ex.submit(pow, 2, 5).result(timeout=10) == 32
        with EarlyPool(2) as pool:
            assert type(pool) is corral.ThreadPool
            assert pool.map(abs, [-1, -2]) == [1, 2]
    with EarlyExecutor(2) as ex:
        assert type(ex) is EarlyExecutor
    pool = EarlyPool(1)
    assert type(pool) is EarlyPool
    pool.terminate()


def test_subclasses_of_the_stdlib_classes_are_left_alone():
    class MyExecutor(EarlyExecutor):
        pass

    with corral.patch():
        with MyExecutor(2) as ex:
            assert type(ex) is MyExecutor
            assert ex.submit(abs, -4).result(timeout=10) == 4


def test_nested_patches_restore_only_at_the_outermost():
    before = _state()
    with corral.patch():
        with corral.patch():
            pass
        assert multiprocessing.pool.ThreadPool is corral.ThreadPool
    assert _state() == before


def test_restores_after_an_exception():
    before = _state()
    with pytest.raises(ZeroDivisionError):
        with corral.patch():
            1 / 0
    assert _state() == before


def test_as_a_decorator():
    @corral.patch()
    def build():
        return concurrent.futures.ThreadPoolExecutor(1)

    ex = build()
    assert type(ex) is corral.ThreadPoolExecutor
    ex.shutdown()
    assert concurrent.futures.ThreadPoolExecutor is EarlyExecutor


def test_settings_follow_the_patch():
    from corral import _pool_settings

    before = _pool_settings.get()
    with corral.patch(native=False, mode="static"):
        assert _pool_settings.get() == {"native": False, "mode": "static"}
    assert _pool_settings.get() == before


def test_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="mode"):
        corral.patch(mode="turbo")
