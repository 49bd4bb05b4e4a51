# shellcheck shell=bash
# Shared helpers for initiator-tests: logging, checks, bounded waits and free-port selection.
# Sourced by run-all.sh, lib/target.sh and every suite; defines functions only (no side effects
# except IT_DIR/REPO_DIR and the counters below).

IT_DIR=${IT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
REPO_DIR=${REPO_DIR:-$(cd "$IT_DIR/.." && pwd)}
TARGET_KIND=${TARGET_KIND:-gateway}
CHECKS_OK=0
CHECKS_FAILED=0
FAILED_CHECKS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# ok/fail record one check and print it; suites call `checks_summary` at the end.
ok() { CHECKS_OK=$((CHECKS_OK + 1)); printf '  ok    %s\n' "$*"; }
fail() { CHECKS_FAILED=$((CHECKS_FAILED + 1)); FAILED_CHECKS+=("$*"); printf '  FAIL  %s\n' "$*"; }

# check DESCRIPTION CMD...: runs CMD (output to stdout, indented), records ok/fail by exit status.
check() {
  local desc=$1; shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then ok "$desc"; else fail "$desc (exit $rc: $*)"; fi
  [ -z "$out" ] || printf '%s\n' "$out" | head -n "${CHECK_OUTPUT_LINES:-20}" | sed 's/^/        | /'
  return 0
}

# checks_summary NAME: prints the tally and returns non-zero when any check failed.
checks_summary() {
  local name=$1 f
  echo "== $name: checks ok=$CHECKS_OK failed=$CHECKS_FAILED"
  for f in "${FAILED_CHECKS[@]}"; do echo "   failed: $f"; done
  [ "$CHECKS_FAILED" -eq 0 ]
}

# mark_skipped REASON: the suite is skipped as a whole (run-all shows SKIPPED); caller exits 0.
mark_skipped() {
  echo "SKIP: $*"
  if [ -n "${SUITE_RESULT_FILE:-}" ]; then echo "SKIPPED $*" >"$SUITE_RESULT_FILE"; fi
}

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds; fails after SECONDS.
wait_for() {
  local secs=$1; shift
  local i n=$((secs * 10))
  for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$@" >/dev/null 2>&1
}

port_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
port_used() { ss -Htan "( sport = :$1 or dport = :$1 )" 2>/dev/null | grep -q .; }

# pick_free_port: prints a TCP port from PORT_RANGE (default 13260-13999) that nothing uses,
# starting at a random offset so that concurrent runs rarely collide.
pick_free_port() {
  local range=${PORT_RANGE:-13260-13999}
  local lo=${range%-*} hi=${range#*-}
  local span=$((hi - lo + 1)) start i p
  start=$((RANDOM % span))
  for ((i = 0; i < span; i++)); do
    p=$((lo + (start + i) % span))
    port_used "$p" || { echo "$p"; return 0; }
  done
  return 1
}

# need CMD...: fails loudly when a tool is missing (run-all.sh installs them).
need() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "missing tool: $c (run run-all.sh as root to install it)"; done
}
