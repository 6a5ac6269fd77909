# corral: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

# What the package build compiles (CMakeLists.txt: cpp/ without its tests and benchmarks, and bindings/).
SOURCES := $(shell find cpp/include cpp/src bindings src -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.py' -o -name '*.pth' \) 2>/dev/null) \
  cpp/CMakeLists.txt CMakeLists.txt pyproject.toml
PRESETS := release asan tsan

.PHONY: report-screenshot bench-report setup demo test test-cpp test-py test-pythons bench bench-cpp bench-py bench-quick format format-check clean $(addprefix test-cpp-,$(PRESETS))

setup: $(VENV)/.installed

# Tools and test dependencies: only when the venv is new or the requirements change.
# The venv first: its ninja then spares the system one (the requirements are wheels; no compiler needed).
$(VENV)/.deps: scripts/ensure-system-deps.sh requirements-dev.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	VENV_BIN=$(abspath $(VENV))/bin bash scripts/ensure-system-deps.sh
	touch $@

# The package itself, rebuilt when any source changes (incremental: build/py-*).
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	flock $(VENV)/.lock $(VPY) -m pip install -q --no-build-isolation --no-deps .
	touch $@

demo: setup
	$(VPY) benchmarks/demo.py

test: setup format-check test-cpp test-py bench-quick

test-cpp: $(addprefix test-cpp-,$(PRESETS))

$(addprefix test-cpp-,$(PRESETS)): test-cpp-%: $(VENV)/.deps
	cd cpp && cmake --preset $* >/dev/null && cmake --build --preset $* && ctest --preset $*
	@# Under CI (CORRAL_NO_SKIP=1) a GoogleTest skip is a failure, as a pytest skip is.
	@if [ "$${CORRAL_NO_SKIP:-}" = 1 ] && grep -q '\[  SKIPPED \]' build/cpp-$*/Testing/Temporary/LastTest.log; then \
	  grep '\[  SKIPPED \]' build/cpp-$*/Testing/Temporary/LastTest.log; \
	  echo "C++ tests were skipped ($*): CI does not accept skips" >&2; exit 1; fi

test-py: setup
	$(VPY) -m pytest tests -q

# Python lint (ruff, pinned in requirements-dev.txt; settings in pyproject.toml). benchmarks/ joins once clean.
LINT_PATHS := src tests scripts benchmarks
.PHONY: lint
lint: $(VENV)/.deps
	$(VPY) -m ruff check $(LINT_PATHS)
test: lint

# The wheel and the whole Python suite under every tested CPython (3.11 here, 3.13 and 3.14 in Debian
# roots made by debootstrap, cached in build/pythons/); one summary line per version. Needs root.
test-pythons: setup
	bash scripts/ensure-system-deps.sh pythons
	bash scripts/test-pythons.sh $(PYTHONS)

bench: setup bench-cpp bench-py bench-report

bench-cpp: $(VENV)/.deps
	cd cpp && cmake --preset bench >/dev/null && cmake --build --preset bench
	$(VPY) benchmarks/run_cpp.py

bench-py: setup
	$(VPY) benchmarks/run.py $(if $(QUICK),--quick,)

# What `python -m corral report` costs the demo (docs/report.md, "Overhead").
bench-report: setup
	$(VPY) benchmarks/report_overhead.py $(if $(QUICK),--quick --out build/bench-quick,--reps 3)

# The README's picture: `report --compare` on the seed's demo, rendered by headless chromium (installed by
# scripts/ensure-system-deps.sh screenshot; not part of make test).
DEMO_ARGS := --arrays 64 --n 256 --passes 1
report-screenshot: setup
	bash scripts/ensure-system-deps.sh screenshot
	mkdir -p build docs/images
	$(VPY) -m corral report --compare --html build/report-demo.html benchmarks/workloads/w1_balanced.py $(DEMO_ARGS) >/dev/null
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1320,1760 \
	  --screenshot=$(abspath docs/images/report-demo.png) file://$(abspath build/report-demo.html)

# make test proves the benchmark harness works (correctness, not speed); results go to build/, not results/.
bench-quick: setup
	$(VPY) benchmarks/run.py --quick --out build/bench-quick

# The C++ and the bindings, formatted by .clang-format with the clang-format pinned in
# requirements-dev.txt (the venv's, first on PATH), so every machine formats alike.
FORMATTED = $$(find cpp bindings -name '*.cpp' -o -name '*.hpp')

format: $(VENV)/.deps
	clang-format -i $(FORMATTED)

format-check: $(VENV)/.deps
	clang-format --dry-run --Werror $(FORMATTED)

clean:
	rm -rf build $(VENV)
