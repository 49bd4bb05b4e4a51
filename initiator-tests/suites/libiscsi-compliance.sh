#!/usr/bin/env bash
# libiscsi's compliance suite (iscsi-test-cu) against a fresh 1 GiB LUN, with a second URL to the
# same LUN so that the multipath and reservation tests run (two initiator names). Parses the
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

target_start 1 1G || exit 1
url=$(target_url 0)
out="$SUITE_LOG_DIR/iscsi-test-cu.txt"
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

python3 "$IT_DIR/tools/parse_cu.py" "$out" --json "$SUITE_LOG_DIR/libiscsi-results.json" >"$SUITE_LOG_DIR/libiscsi-results.txt"
counts=$(grep '^COUNTS' "$SUITE_LOG_DIR/libiscsi-results.txt")
echo "$counts"
passed=$(sed -n 's/.*passed=\([0-9]*\).*/\1/p' <<<"$counts")
failed=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$counts")
skipped=$(sed -n 's/.*skipped=\([0-9]*\).*/\1/p' <<<"$counts")

# expected skips: "Suite.Test  reason" per line (glob patterns allowed, # comments)
mapfile -t patterns < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$SKIPS_FILE" 2>/dev/null | awk '{print $1}')
unexplained=()
while read -r _ _ name reason; do
  hit=""
  for p in "${patterns[@]}"; do
    # shellcheck disable=SC2053
    if [[ $name == $p ]]; then hit=1; break; fi
  done
  [ -n "$hit" ] || unexplained+=("$name ($reason)")
done < <(grep '^RESULT skipped' "$SUITE_LOG_DIR/libiscsi-results.txt")

echo "failed tests:"
grep '^RESULT failed' "$SUITE_LOG_DIR/libiscsi-results.txt" | sed 's/^RESULT failed /  /'
echo "skipped tests not in $(basename "$SKIPS_FILE"):"
for u in "${unexplained[@]}"; do echo "  $u"; done
grep '^NOTE' "$SUITE_LOG_DIR/libiscsi-results.txt" | sed 's/^NOTE /  note (teardown message): /'
echo "libiscsi-compliance: passed=${passed:-?} skipped=${skipped:-?} failed=${failed:-?} unexplained_skips=${#unexplained[@]} seconds=$secs gate=$GATE min_passed=$MIN_PASSED"

problems=()
grep -q '^Run Summary' "$out" || problems+=("iscsi-test-cu did not finish (exit $rc; timeout or crash)")
[ -n "${passed:-}" ] || problems+=("no test results parsed")
[ "${failed:-1}" -eq 0 ] || problems+=("$failed test(s) failed")
[ "${passed:-0}" -ge "$MIN_PASSED" ] || problems+=("passed=${passed:-0} < MIN_PASSED=$MIN_PASSED")
[ "${#unexplained[@]}" -eq 0 ] || problems+=("${#unexplained[@]} skipped test(s) not in the expected-skips file")
target_alive || problems+=("target process died during the run")
for p in "${problems[@]}"; do echo "gate: $p"; done
if [ "${#problems[@]}" -eq 0 ]; then echo "libiscsi-compliance: PASS"; exit 0; fi
if [ "$GATE" = report ]; then echo "libiscsi-compliance: PASS (report-only gate for TARGET_KIND=$TARGET_KIND)"; exit 0; fi
echo "libiscsi-compliance: FAIL"
exit 1
