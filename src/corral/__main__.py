"""Command line: `python -m corral [options] script.py|-m module|-c code [args]` runs a program under
corral (see _runner.py); `python -m corral info` shows what corral sees; `python -m corral report ...` runs a
program and shows how it used its CPUs (_report.py)."""

from __future__ import annotations

import importlib
import sys

from . import _runner

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

# The subcommands' modules, imported when one runs: a program run under corral does not pay for them.
_INFO, _REPORT = "corral._info", "corral._report"
DEFERRED_IMPORTS = (_INFO, _REPORT)  # tests/test_imports.py counts them in the module graph


def build_info_parser() -> argparse.ArgumentParser:
    import argparse  # as the runner's: only when a subcommand runs

    info = argparse.ArgumentParser(
        prog=f"{_runner.PROG} info",
        description="Show the CPU budget (and where each figure came from), "
        "the topology of the allowed CPUs and the native thread pools loaded.",
    )
    importlib.import_module(_INFO).add_arguments(info)
    return info


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, rest = _runner.split_argv(argv)
    if own and own[-1] == "info" and (len(own) < 2 or own[-2] not in ("-m", "-c", "--")):
        # `info` is a subcommand; options before it (-p N) still apply. A script named info: ./info
        options = _runner.build_parser().parse_args(own[:-1])
        _runner.apply_cpus(options.cpus)
        _runner.apply_share(options)
        return importlib.import_module(_INFO).run(build_info_parser().parse_args(rest))
    if own and own[-1] == "report" and (len(own) < 2 or own[-2] not in ("-m", "-c", "--")):
        # As info: a subcommand (a script named report: ./report); -p N before it sets the corral run's budget.
        options = _runner.build_parser().parse_args(own[:-1])
        _runner.apply_cpus(options.cpus)
        return importlib.import_module(_REPORT).run(rest)
    return _runner.main(argv)


if __name__ == "__main__":
    status = main()
    if status:  # not sys.exit(0): under python -i it prints a SystemExit traceback before the prompt
        sys.exit(status)
