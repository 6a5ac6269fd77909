"""Shared pytest set-up.

With CORRAL_NO_SKIP=1 (set by .ci/run) a skipped test fails the run: a missing
dependency must never turn CI green silently.
"""

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CORRAL_NO_SKIP") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CORRAL_NO_SKIP=1: {report.longrepr}"
