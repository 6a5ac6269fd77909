#!/usr/bin/env bash
# make test-pythons: build corral's wheel and run the whole Python test suite (pytest tests) under every
# tested CPython, then print one summary line per version. Exits non-zero when any version fails, errs,
# or could not be set up: a Python that was not tested must not pass silently.
#
#   scripts/test-pythons.sh [VERSION...]     default: 3.11 3.13 3.14
#
# 3.11 is the machine's Python (the repository's .venv, set up by `make setup`). Debian 12 ships no newer
# Python, so each newer version runs in a minimal Debian root (debootstrap) that ships it, entered with
# chroot (/proc, /sys and /dev bound in: the budget, affinity and cgroup code reads them):
#   3.13: trixie (Debian 13)      3.14: forky (Debian testing)
# The roots are cached in build/pythons/<suite>/ (root filesystem, venv with the test dependencies from
# PyPI, a copy of the source tree with its incremental build directory), so a second run only re-copies
# the sources, rebuilds what changed and runs the tests. Logs: build/pythons/logs/python<V>.log.
#
# Environment: CORRAL_DEBIAN_MIRROR (default: the Debian mirror in /etc/apt/sources*),
# CORRAL_PYTHONS_TIMEOUT (seconds per version for build and tests, default 1500).
# Needs root (debootstrap, mount, chroot); scripts/ensure-system-deps.sh pythons installs debootstrap.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd -P)
BASE=$REPO/build/pythons
LOGS=$BASE/logs
TIMEOUT=${CORRAL_PYTHONS_TIMEOUT:-1500}
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.11 3.13 3.14)

# The Debian suite that ships each Python (its python3.X, -dev and -venv packages).
suite_for() {
  case "$1" in
    3.13) echo trixie ;;
    3.14) echo forky ;;
    *) return 1 ;;
  esac
}

# What the tests need, from PyPI, in each root's venv: requirements-dev.txt without tbb4py (a benchmark
# peer: the harness reports it n/a when absent) and without cmake/ninja (the root has Debian's).
# matplotlib stays: tests/test_bench_harness.py checks the harness's PNG plot.
pip_deps() {
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$REPO/requirements-dev.txt" | grep -v -E '^$|^(tbb4py|cmake|ninja)([<>=!~;[]|$)'
}

debian_mirror() {
  if [ -n "${CORRAL_DEBIAN_MIRROR:-}" ]; then echo "$CORRAL_DEBIAN_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
      grep -v -E '^[[:space:]]*#' | grep -o -E 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' |
      head -1 | tr -d '[:space:]')
  echo "${m:-http://deb.debian.org/debian}"
}

log() { echo "test-pythons: $*"; }

# ---- mounts: every bind mount made is undone on exit, also on failure or interruption ----
mounts_under() { awk -v p="$1/" 'index($2, p) == 1 {print $2}' /proc/self/mounts; }
# The processes chrooted into a root (left-over pool workers, a forkserver after a timeout), by pid.
pids_in_root() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
  done
}
unmount_root() {
  local r=$1 m pids i
  pids=$(pids_in_root "$r")
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null
    for i in 1 2 3 4 5 6 7 8 9 10; do [ -z "$(pids_in_root "$r")" ] && break; sleep 0.5; done
    pids=$(pids_in_root "$r"); [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
  fi
  for m in dev sys proc; do
    if mountpoint -q "$r/$m" 2>/dev/null; then
      umount -R "$r/$m" 2>/dev/null || umount -R -l "$r/$m" 2>/dev/null || true
    fi
  done
  if [ -n "$(mounts_under "$r")" ]; then
    log "WARNING: still mounted under $r: $(mounts_under "$r" | tr '\n' ' ')" >&2
    return 1
  fi
}
# Every root, not only those this shell mounted: mounts made in subshells (pipelines, parallel set-up).
cleanup() {
  local r
  for r in "$BASE"/*/root; do [ -d "$r" ] && unmount_root "$r"; done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

mount_root() {
  local r=$1
  unmount_root "$r" || return 1   # left over from an interrupted run
  mount --rbind /proc "$r/proc" && mount --make-rslave "$r/proc" &&
  mount --rbind /sys "$r/sys" && mount --make-rslave "$r/sys" &&
  mount --rbind /dev "$r/dev" && mount --make-rslave "$r/dev"
}

# Run a command inside a root, with a clean environment (the host's pip settings point at host paths).
in_root() {
  local r=$1; shift
  local env=(HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
             PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_ROOT_USER_ACTION=ignore)
  local v
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY CORRAL_NO_SKIP; do
    [ -n "${!v:-}" ] && env+=("$v=${!v}")
  done
  chroot "$r" /usr/bin/env -i "${env[@]}" "$@"
}

# Deletes a cached root, refusing while anything is mounted under it (it would delete the host's /dev).
remove_root() {
  local r=$1
  unmount_root "$r" || { log "refusing to delete $r: mounts remain" >&2; return 1; }
  rm -rf --one-file-system "$r"
}

# ---- one root per suite: debootstrap, then a venv with the test dependencies ----
setup_root() {
  local v=$1 suite r include script stamp deps
  suite=$(suite_for "$v") || { log "no Debian suite known for Python $v" >&2; return 1; }
  r=$BASE/$suite/root
  include="python$v,python$v-dev,python$v-venv,g++,cmake,ninja-build,make,ca-certificates,util-linux,procps"
  stamp=$r/.corral-root
  if [ "$(cat "$stamp" 2>/dev/null)" != "$include" ]; then
    [ -e "$r" ] && { remove_root "$r" || return 1; }
    mkdir -p "$r"
    script=/usr/share/debootstrap/scripts/$suite
    [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid   # testing: same script as sid
    log "python$v: debootstrap $suite from $MIRROR (first run: a few minutes)"
    debootstrap --variant=minbase --include="$include" "$suite" "$r" "$MIRROR" "$script" ||
      { log "python$v: debootstrap $suite failed (see $r/debootstrap/debootstrap.log)" >&2; return 1; }
    rm -f "$r"/var/cache/apt/archives/*.deb   # the downloaded packages: 150 MB a root
    echo "$include" > "$stamp"
  fi
  cp -L /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  # The machine's own CAs (a TLS-inspecting proxy's, for one) so that pip reaches PyPI from the root too.
  local cas=/usr/local/share/ca-certificates
  if [ -d "$cas" ] && ! diff -rq "$cas" "$r$cas" >/dev/null 2>&1; then
    rm -rf "$r$cas" && cp -a "$cas" "$r$cas" && in_root "$r" update-ca-certificates >/dev/null ||
      { log "python$v: copying the machine's CA certificates into the root failed" >&2; return 1; }
  fi
  deps=$(pip_deps | tr '\n' ' ')
  stamp=$r/opt/venv/.corral-deps
  if [ "$(cat "$stamp" 2>/dev/null)" != "$deps" ]; then
    log "python$v: venv with $deps"
    mount_root "$r" &&
    in_root "$r" "python$v" -m venv --clear /opt/venv &&
    in_root "$r" /opt/venv/bin/python -m pip install -q --upgrade pip &&
    in_root "$r" /opt/venv/bin/python -m pip install -q $deps ||
      { log "python$v: installing the test dependencies failed" >&2; unmount_root "$r"; return 1; }
    unmount_root "$r"
    echo "$deps" > "$stamp"
  fi
}

# The working tree as git sees it (tracked and untracked-but-not-ignored files), copied into the root;
# the copy's build/ is kept, so scikit-build-core rebuilds incrementally.
copy_sources() {
  local dest=$1
  mkdir -p "$dest"
  find "$dest" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
     tar --null -T - -cf -) | tar -C "$dest" -xf -
}

# Build the wheel, install it, run the tests; in the root for 3.13+, on the machine for 3.11.
# timeout --foreground: everything stays in the caller's process group, so that Ctrl-C reaches pytest
# (plain timeout makes a group of its own); what outlives a timeout in a root is killed on unmounting.
run_version() {
  local v=$1 log=$LOGS/python$v.log
  if [ "$v" = 3.11 ]; then
    local vpy=$REPO/.venv/bin/python
    [ "$("$vpy" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = 3.11 ] ||
      { echo "$REPO/.venv is not a Python 3.11 venv (run make setup)"; return 1; }
    (cd "$REPO" && rm -rf "$BASE/wheels/3.11" &&
     timeout --foreground "$TIMEOUT" "$vpy" -m pip wheel -q --no-deps --no-build-isolation -w "$BASE/wheels/3.11" . &&
     echo "wheel: $(ls "$BASE/wheels/3.11")" &&
     timeout --foreground -k 30 "$TIMEOUT" "$vpy" -m pytest tests -q -p no:cacheprovider)
    return
  fi
  local suite r
  suite=$(suite_for "$v"); r=$BASE/$suite/root
  copy_sources "$r/work/src" || return 1
  mount_root "$r" || { echo "mounting /proc, /sys, /dev into $r failed"; return 1; }
  in_root "$r" /bin/bash -c "
    set -e; cd /work/src
    /opt/venv/bin/python -VV
    rm -rf /work/wheels
    timeout --foreground $TIMEOUT python -m pip wheel -q --no-deps --no-build-isolation -w /work/wheels .
    echo \"wheel: \$(ls /work/wheels)\"
    python -m pip install -q --no-deps --force-reinstall /work/wheels/corral-*.whl
    timeout --foreground -k 30 $TIMEOUT python -m pytest tests -q -p no:cacheprovider"
  local rc=$?
  unmount_root "$r"
  return $rc
}

# "314 passed, 2 failed" from pytest's last line, or why there is none.
summary_of() {
  local log=$1 rc=$2 line
  line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)' "$log" | tail -1 |
         sed -E 's/^=+ //; s/ in [0-9.]+s.*$//; s/ =+$//')
  if [ -n "$line" ]; then
    [ "$rc" -eq 0 ] || case "$line" in *failed*|*error*) ;; *) line="$line (exit $rc)" ;; esac
    echo "$line"
  elif grep -q 'wheel: corral-' "$log"; then
    [ "$rc" -eq 124 ] && echo "tests timed out after ${TIMEOUT}s" || echo "tests did not finish (exit $rc)"
  else
    echo "build failed (exit $rc)"
  fi
}

# ---------------------------------------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  echo "test-pythons: needs root (debootstrap, mount, chroot)" >&2
  exit 1
fi
mkdir -p "$LOGS"
exec 9>"$BASE/.lock"
flock -n 9 || { log "another test-pythons run holds $BASE/.lock; waiting"; flock 9; }
MIRROR=$(debian_mirror)
START=$SECONDS

declare -A RESULT
# Set up the roots in parallel (network-bound), before any test runs.
pids=()
for v in "${VERSIONS[@]}"; do
  [ "$v" = 3.11 ] && continue
  if ! suite_for "$v" >/dev/null; then RESULT[$v]="not set up: no Debian suite known for Python $v"; continue; fi
  setup_root "$v" > "$LOGS/setup-python$v.log" 2>&1 &
  pids+=("$v:$!")
done
for p in "${pids[@]}"; do
  v=${p%%:*}
  if ! wait "${p#*:}"; then
    RESULT[$v]="not set up (see build/pythons/logs/setup-python$v.log)"
    tail -5 "$LOGS/setup-python$v.log" | sed "s/^/  python$v setup: /"
  fi
done
log "set-up done after $((SECONDS - START))s"

for v in "${VERSIONS[@]}"; do
  [ -n "${RESULT[$v]:-}" ] && continue
  t=$SECONDS
  log "python$v: build the wheel and run pytest tests"
  run_version "$v" 2>&1 | tee "$LOGS/python$v.log"
  rc=${PIPESTATUS[0]}
  RESULT[$v]="$(summary_of "$LOGS/python$v.log" "$rc") [$((SECONDS - t))s]"
  [ "$rc" -eq 0 ] || FAILED=1
done

echo
echo "test-pythons summary ($((SECONDS - START))s; logs in build/pythons/logs/):"
status=0
for v in "${VERSIONS[@]}"; do
  echo "python$v: ${RESULT[$v]}"
  case "${RESULT[$v]}" in
    *failed*|*error*|*"not set up"*|*timed\ out*|*"did not finish"*|*exit*) status=1 ;;
  esac
done
[ "${FAILED:-0}" = 1 ] && status=1
exit $status
