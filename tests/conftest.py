"""Shared pytest set-up.

With CORRAL_NO_SKIP=1 (set by .ci/run) a skipped test fails the run: a missing
dependency must never turn CI green silently. The one exception is a test marked
`@pytest.mark.requires_python((3, 14))` on an older Python: an API the stdlib does not
have there is skipped by version, on purpose (`make test-pythons` runs it where it exists).
"""

import os
import sys

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_python(version): the test needs this Python or newer")


def _too_old_for(item):
    marker = item.get_closest_marker("requires_python")
    return marker is not None and sys.version_info[:2] < tuple(marker.args[0])


def pytest_runtest_setup(item):
    if _too_old_for(item):
        needed = ".".join(map(str, item.get_closest_marker("requires_python").args[0]))
        pytest.skip(f"needs Python {needed}+ (this is {sys.version_info.major}.{sys.version_info.minor})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (os.environ.get("CORRAL_NO_SKIP") == "1" and report.skipped and not hasattr(report, "wasxfail")
            and not _too_old_for(item)):
        report.outcome = "failed"
        report.longrepr = f"skipped under CORRAL_NO_SKIP=1: {report.longrepr}"
