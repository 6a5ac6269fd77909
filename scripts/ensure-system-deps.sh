#!/usr/bin/env bash
# Installs the Debian packages the C++ build needs when they are missing.
# With the argument `pythons`: those that scripts/test-pythons.sh needs instead (make test-pythons);
# with `screenshot`: the headless browser make report-screenshot renders the report's page with.
# Exits non-zero with a clear message when they are missing and cannot be installed.
set -euo pipefail

need=()
if [ "${1:-}" = pythons ]; then
  # debootstrap makes the Debian roots that ship the newer Pythons (Debian 12 packages none after 3.11).
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
elif [ "${1:-}" = screenshot ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
else
  [ -f /usr/src/googletest/CMakeLists.txt ] || need+=(googletest libgtest-dev)
  [ -f /usr/include/benchmark/benchmark.h ] || need+=(libbenchmark-dev)
  [ -f /usr/include/oneapi/tbb.h ] || need+=(libtbb-dev)
  command -v ninja >/dev/null 2>&1 || [ -x "${VENV_BIN:-/nonexistent}/ninja" ] || need+=(ninja-build)
  command -v g++ >/dev/null 2>&1 || need+=(g++)
  # Real BLAS builds for the native-library tests (cpp/tests/test_native.cpp): OpenBLAS pthreads and BLIS.
  ldconfig -p 2>/dev/null | grep 'libopenblas\.so\.0 ' >/dev/null || need+=(libopenblas0-pthread)
  ldconfig -p 2>/dev/null | grep 'libblis\.so\.4 ' >/dev/null || need+=(libblis4-pthread)
fi

[ ${#need[@]} -eq 0 ] && exit 0

echo "corral setup: installing Debian packages: ${need[*]}"
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "corral setup: cannot install ${need[*]}: not root and no sudo. Install them and run again." >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"; } >/tmp/corral-apt.log 2>&1; then
  echo "corral setup: apt-get install ${need[*]} failed; see /tmp/corral-apt.log" >&2
  tail -5 /tmp/corral-apt.log >&2
  exit 1
fi
