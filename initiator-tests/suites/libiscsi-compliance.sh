#!/usr/bin/env bash
# libiscsi's compliance suite (iscsi-test-cu) against a fresh 1 GiB LUN (for the gateway twice: the
# default O_DIRECT LUN, then a direct=off write-back LUN), with a second URL to the same LUN so that the multipath and reservation tests run (two initiator names). Parses the
# verbose text per test (tools/parse_cu.py), merges the families' repeats per Suite.Test, and gates:
#   failed == 0, passed >= MIN_PASSED, every skipped test listed in ../libiscsi-expected-skips.txt
# LIBISCSI_GATE=strict|report (default strict for gateway, report for tgt: print, never fail).
# Env: MIN_PASSED (190), LIBISCSI_TIMEOUT (900 s), LIBISCSI_ARGS (extra iscsi-test-cu args).
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
need iscsi-test-cu python3
MIN_PASSED=${MIN_PASSED:-190}
if [ "$TARGET_KIND" = gateway ]; then GATE=${LIBISCSI_GATE:-strict}; else GATE=${LIBISCSI_GATE:-report}; fi
SKIPS_FILE=${LIBISCSI_EXPECTED_SKIPS:-$IT_DIR/libiscsi-expected-skips.txt}

problems=()
# run_compliance LABEL TAG: one iscsi-test-cu run against a fresh LUN started with the current
# GATEWAY_LUN_SUFFIX; appends what breaks the gate to `problems`.
run_compliance() {
  local label=$1 tag=$2
  echo "== $label"
  target_start 1 1G || { problems+=("$label: the target did not start"); return; }
  local url rc t0 secs counts passed failed skipped p hit name reason u unexplained=()
  url=$(target_url 0)
  local out="$SUITE_LOG_DIR/iscsi-test-cu$tag.txt" results="$SUITE_LOG_DIR/libiscsi-results$tag"
  echo "running: iscsi-test-cu -d -v $url $url (bounded by ${LIBISCSI_TIMEOUT:-900}s; output $out)"
  t0=$(date +%s)
  rc=0
  # shellcheck disable=SC2086
  timeout --kill-after=10 "${LIBISCSI_TIMEOUT:-900}" stdbuf -oL -eL iscsi-test-cu -d -v \
    -i iqn.2026-11.test.initiator-tests:cu-1 -I iqn.2026-11.test.initiator-tests:cu-2 \
    ${LIBISCSI_ARGS:-} "$url" "$url" >"$out" 2>&1 || rc=$?
  secs=$(($(date +%s) - t0))
  echo "iscsi-test-cu exit $rc after ${secs}s"
  grep -A4 '^Run Summary' "$out" | sed 's/^/  /'

  python3 "$IT_DIR/tools/parse_cu.py" "$out" --json "$results.json" >"$results.txt"
  counts=$(grep '^COUNTS' "$results.txt")
  echo "$counts"
  passed=$(sed -n 's/.*passed=\([0-9]*\).*/\1/p' <<<"$counts")
  failed=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$counts")
  skipped=$(sed -n 's/.*skipped=\([0-9]*\).*/\1/p' <<<"$counts")

  # expected skips: "Suite.Test  reason" per line (glob patterns allowed, # comments)
  mapfile -t patterns < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$SKIPS_FILE" 2>/dev/null | awk '{print $1}')
  while read -r _ _ name reason; do
    hit=""
    for p in "${patterns[@]}"; do
      # shellcheck disable=SC2053
      if [[ $name == $p ]]; then hit=1; break; fi
    done
    [ -n "$hit" ] || unexplained+=("$name ($reason)")
  done < <(grep '^RESULT skipped' "$results.txt")

  echo "failed tests:"
  grep '^RESULT failed' "$results.txt" | sed 's/^RESULT failed /  /'
  echo "skipped tests not in $(basename "$SKIPS_FILE"):"
  for u in "${unexplained[@]}"; do echo "  $u"; done
  grep '^NOTE' "$results.txt" | sed 's/^NOTE /  note (teardown message): /'
  echo "libiscsi-compliance ($label): passed=${passed:-?} skipped=${skipped:-?} failed=${failed:-?} unexplained_skips=${#unexplained[@]} seconds=$secs gate=$GATE min_passed=$MIN_PASSED"

  grep -q '^Run Summary' "$out" || problems+=("$label: iscsi-test-cu did not finish (exit $rc; timeout or crash)")
  [ -n "${passed:-}" ] || problems+=("$label: no test results parsed")
  [ "${failed:-1}" -eq 0 ] || problems+=("$label: $failed test(s) failed")
  [ "${passed:-0}" -ge "$MIN_PASSED" ] || problems+=("$label: passed=${passed:-0} < MIN_PASSED=$MIN_PASSED")
  [ "${#unexplained[@]}" -eq 0 ] || problems+=("$label: ${#unexplained[@]} skipped test(s) not in the expected-skips file")
  target_alive || problems+=("$label: target process died during the run")
  target_stop
}

run_compliance "default LUN" ""
if [ "$TARGET_KIND" = gateway ]; then
  # The write-back mode (page-cache reads and writes, WCE=1) must be as compliant.
  GATEWAY_LUN_SUFFIX=",size=1G,direct=off" run_compliance "direct=off LUN" "-direct-off"
fi
for p in "${problems[@]}"; do echo "gate: $p"; done
if [ "${#problems[@]}" -eq 0 ]; then echo "libiscsi-compliance: PASS"; exit 0; fi
if [ "$GATE" = report ]; then echo "libiscsi-compliance: PASS (report-only gate for TARGET_KIND=$TARGET_KIND)"; exit 0; fi
echo "libiscsi-compliance: FAIL"
exit 1
