#!/usr/bin/env bash
# THE test command: run as root on Debian 12 from a clean clone. Installs what it needs (apt),
# builds the workspace, runs the unit tests, clippy and rustfmt, then the initiator suites
# (suites/*.sh) against TARGET_KIND=gateway (default) or tgt, each bounded by `timeout`; prints
# a summary table (step, result, seconds) and exits non-zero when any step failed.
#
# usage: initiator-tests/run-all.sh [--only STEP[,STEP]] [--skip STEP[,STEP]] [--keep-logs DIR]
#                                   [--no-install] [--list]
# Steps, in order: install build unit-tests clippy fmt fuzz libiscsi-tools qemu bad-input
#                  limits soak drbd deploy chap kernel failover libiscsi-compliance   (fuzz: fuzz/run.sh,
#                  FUZZ_SECONDS per target; chap: CHAP and access control with libiscsi and the
#                  kernel initiator)
# Env: TARGET_KIND=gateway|tgt, CARGO_TARGET_DIR, KI_DIR, PORT_RANGE (default 13260-13999),
#      STEP_TIMEOUT_<STEP> (seconds, '-' as '_', e.g. STEP_TIMEOUT_libiscsi_compliance=1200).
set -uo pipefail
IT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(cd "$IT_DIR/.." && pwd)
export IT_DIR REPO_DIR
# shellcheck source=lib/common.sh
source "$IT_DIR/lib/common.sh"
export TARGET_KIND

ALL_STEPS=(install build unit-tests clippy fmt fuzz libiscsi-tools qemu bad-input limits soak drbd deploy chap kernel failover libiscsi-compliance)
declare -A TIMEOUTS=([install]=900 [build]=1200 [unit-tests]=900 [clippy]=900 [fmt]=120 [fuzz]=900
  [libiscsi-tools]=240 [qemu]=420 [bad-input]=900 [limits]=240 [soak]=420 [drbd]=240 [deploy]=180 [chap]=300
  [kernel]=1300 [failover]=420 [libiscsi-compliance]=1100)
only="" skip="" keep_logs="" no_install=""

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only=$2; shift 2 ;;
    --only=*) only=${1#*=}; shift ;;
    --skip) skip=$2; shift 2 ;;
    --skip=*) skip=${1#*=}; shift ;;
    --keep-logs) keep_logs=$2; shift 2 ;;
    --keep-logs=*) keep_logs=${1#*=}; shift ;;
    --no-install) no_install=1; shift ;;
    --list) printf '%s\n' "${ALL_STEPS[@]}"; exit 0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
for s in ${only//,/ } ${skip//,/ }; do
  [[ " ${ALL_STEPS[*]} " == *" $s "* ]] || die "unknown step '$s' (steps: ${ALL_STEPS[*]})"
done
case "$TARGET_KIND" in gateway | tgt) ;; *) die "TARGET_KIND must be gateway or tgt, not '$TARGET_KIND'" ;; esac
selected() {
  local s=$1
  if [ -n "$only" ] && [[ ",$only," != *",$s,"* ]]; then return 1; fi
  if [ -n "$skip" ] && [[ ",$skip," == *",$s,"* ]]; then return 1; fi
  if [ "$s" = install ] && [ -n "$no_install" ]; then return 1; fi
  return 0
}

if [ -n "$keep_logs" ]; then
  mkdir -p "$keep_logs" || die "cannot create $keep_logs"
  LOG_DIR=$(cd "$keep_logs" && pwd)
else
  LOG_DIR=$(mktemp -d /tmp/initiator-tests.XXXXXX)
fi
export LOG_DIR

# Stop every target a suite started and left behind (suites stop their own; this covers a suite
# killed by its timeout). Only pids recorded in our log dir, and only if they still are tgtd or
# iscsi-gateway.
cleanup_targets() {
  local f pid kind port cmd
  for f in "$LOG_DIR"/*/target.pids; do
    [ -f "$f" ] || continue
    while read -r pid kind port; do
      kill -0 "$pid" 2>/dev/null || continue
      cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
      case "$cmd" in *tgtd* | *iscsi-gateway*) ;; *) continue ;; esac
      echo "run-all: stopping leftover $kind pid $pid (port $port)"
      if [ "$kind" = tgt ]; then
        timeout 10 tgtadm -C "$port" --lld iscsi --op delete --force --mode target --tid 1 >/dev/null 2>&1
        timeout 10 tgtadm -C "$port" --op delete --mode system >/dev/null 2>&1
      fi
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    done <"$f"
    : >"$f"
  done
}
CHILD=""
on_exit() {
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then kill -TERM "$CHILD" 2>/dev/null; sleep 1; kill -KILL "$CHILD" 2>/dev/null; fi
  cleanup_targets
}
trap on_exit EXIT
trap 'echo "run-all: interrupted"; exit 130' INT
trap 'echo "run-all: terminated"; exit 143' TERM

# ---- steps -----------------------------------------------------------------------------------
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }
step_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "not root or no apt-get: not installing; checking tools only"
  else
    # iputils-arping: gratuitous ARP when the failover suite moves its floating IP; kmod:
    # modprobe, which the Filesystem resource agent (deploy step) requires and resource-agents
    # does not pull in
    local pkgs=(libiscsi-bin sg3-utils iproute2 python3 coreutils systemd strace drbd-utils util-linux resource-agents iptables e2fsprogs iputils-arping kmod) missing=() p v
    [ "$TARGET_KIND" = tgt ] && pkgs+=(tgt)
    for p in "${pkgs[@]}"; do
      [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
    done
    # qemu-utils may be a newer backport than qemu-block-extra (the iscsi driver): pin both to
    # the version apt offers for qemu-block-extra, so the module loads.
    v=$(apt-cache policy qemu-block-extra 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ -z "$v" ] || [ "$v" = "(none)" ]; then apt-get update -q; v=$(apt-cache policy qemu-block-extra | sed -n 's/^ *Candidate: //p'); fi
    local qneed=""
    for p in qemu-utils qemu-block-extra; do
      [ "$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null)" = "$v" ] || qneed=1
    done
    if [ "${#missing[@]}" -gt 0 ] || [ -n "$qneed" ]; then
      apt-get update -q || return 1
      [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}" || return 1
      if [ -n "$qneed" ]; then
        v=$(apt-cache policy qemu-block-extra | sed -n 's/^ *Candidate: //p')
        echo "installing qemu-utils and qemu-block-extra at $v"
        apt_install --allow-downgrades "qemu-utils=$v" "qemu-block-extra=$v" || return 1
      fi
    else
      echo "all packages present (qemu-utils = qemu-block-extra = $v)"
    fi
  fi
  local t rc=0
  for t in iscsi-test-cu iscsi-ls iscsi-inq iscsi-readcapacity16 qemu-io qemu-img python3 ss timeout stdbuf; do
    command -v "$t" >/dev/null || { echo "missing: $t"; rc=1; }
  done
  [ "$TARGET_KIND" != tgt ] || command -v tgtd >/dev/null || { echo "missing: tgtd"; rc=1; }
  local qv bv
  qv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null); bv=$(dpkg-query -W -f='${Version}' qemu-block-extra 2>/dev/null)
  echo "qemu-utils $qv, qemu-block-extra $bv"
  [ "$qv" = "$bv" ] || { echo "qemu-utils and qemu-block-extra versions differ: the iscsi driver will not load"; rc=1; }
  return $rc
}
locked() { [ -f "$REPO_DIR/Cargo.lock" ] && echo --locked; }
step_build() { cd "$REPO_DIR" && cargo build --release $(locked) --workspace; }
step_unit_tests() {
  cd "$REPO_DIR" || return 1
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --release $(locked) --no-tests=warn || return 1
    cargo test --workspace --release $(locked) --doc
  else
    cargo test --workspace --release $(locked)
  fi
}
step_clippy() { cd "$REPO_DIR" && cargo clippy --workspace --all-targets $(locked) -- -D warnings; }
step_fmt() { cd "$REPO_DIR" && cargo fmt --all -- --check; }
step_fuzz() { "$REPO_DIR/fuzz/run.sh"; }

# ---- runner ----------------------------------------------------------------------------------
declare -A RESULT SECS
run_step() {
  local s=$1 t0 rc=0 to log dir var
  var="STEP_TIMEOUT_${s//-/_}"
  to=${!var:-${TIMEOUTS[$s]}}
  dir="$LOG_DIR/$s"; log="$LOG_DIR/$s.log"
  rm -rf "$dir"; mkdir -p "$dir"; : >"$dir/result"
  echo
  echo "==================== $s (TARGET_KIND=$TARGET_KIND, timeout ${to}s, log $log)"
  t0=$(date +%s)
  if [ -x "$IT_DIR/suites/$s.sh" ]; then
    SUITE_LOG_DIR=$dir SUITE_RESULT_FILE="$dir/result" timeout --kill-after=15 "$to" "$IT_DIR/suites/$s.sh" > >(tee "$log") 2>&1 &
  else
    (timeout --kill-after=15 "$to" bash -c "$(declare -f "step_${s//-/_}" locked apt_install); step_${s//-/_}") > >(tee "$log") 2>&1 &
  fi
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  sleep 0.2 # let tee flush
  SECS[$s]=$(($(date +%s) - t0))
  cleanup_targets
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    RESULT[$s]=TIMEOUT
  elif [ "$rc" -ne 0 ]; then
    RESULT[$s]=FAIL
  elif grep -q '^SKIPPED' "$dir/result" 2>/dev/null; then
    RESULT[$s]=SKIPPED
  else
    RESULT[$s]=PASS
  fi
  echo "==================== $s: ${RESULT[$s]} (exit $rc, ${SECS[$s]}s)"
}

echo "initiator-tests: TARGET_KIND=$TARGET_KIND repo=$REPO_DIR logs=$LOG_DIR"
T_START=$(date +%s)
for s in "${ALL_STEPS[@]}"; do
  if selected "$s"; then run_step "$s"; else RESULT[$s]="-"; SECS[$s]=0; fi
done
TOTAL=$(($(date +%s) - T_START))

failed=0
echo
echo "==================== summary (TARGET_KIND=$TARGET_KIND)"
printf '%-22s %-8s %8s\n' STEP RESULT SECONDS
for s in "${ALL_STEPS[@]}"; do
  r=${RESULT[$s]}
  [ "$r" = "-" ] && r="not run"
  printf '%-22s %-8s %8s\n' "$s" "$r" "${SECS[$s]}"
  case "${RESULT[$s]}" in FAIL | TIMEOUT) failed=$((failed + 1)) ;; esac
done
printf '%-22s %-8s %8s\n' total "" "$TOTAL"
for s in libiscsi-compliance; do
  [ -f "$LOG_DIR/$s.log" ] && grep -h "^libiscsi-compliance (.*): passed=" "$LOG_DIR/$s.log"
done
if [ "$failed" -gt 0 ]; then
  echo "FAILED: $failed step(s); logs kept in $LOG_DIR"
  exit 1
fi
if [ -z "$keep_logs" ]; then rm -rf "$LOG_DIR"; else echo "logs in $LOG_DIR"; fi
echo "ALL PASSED"
exit 0
