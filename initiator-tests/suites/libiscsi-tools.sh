#!/usr/bin/env bash
# libiscsi's command-line tools and raw protocol checks against a target with two 1 GiB LUNs:
#  - iscsi-ls -s lists the target and exactly the expected disk LUNs with their size;
#  - a discovery session (tools/badclient.py): SendTargets=All names the IQN and a portal on our
#    port, and Logout gets response 0 with nothing after it;
#  - iscsi-inq: standard INQUIRY (disk, vendor/product), VPD 0x00 lists 0x80/0x83 (+0xb0/0xb1/0xb2
#    for the gateway), VPD 0x80 serial non-empty, VPD 0x83 has an NAA designator (type 3, LU
#    association); serial and NAA differ between the LUNs, are equal across two runs and survive a
#    target restart on the same config (identity from config only); for the gateway they must
#    match `iscsi-gateway check-config` output when that prints them;
#  - iscsi-readcapacity16: 512-byte blocks, 1 GiB;
#  - gateway: three sessions incrementing one counter block with COMPARE AND WRITE
#    (tools/caw.py) race, and no increment is lost or doubled.
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
need iscsi-ls iscsi-inq iscsi-readcapacity16 python3
BC=(python3 "$IT_DIR/tools/badclient.py")
T=${TOOLS_TIMEOUT:-30}

target_start 2 1G || exit 1

echo "-- iscsi-ls"
ls_out=$(timeout "$T" iscsi-ls -s "$(target_portal_url)" 2>&1); rc=$?
echo "$ls_out" | sed 's/^/        | /'
[ "$rc" -eq 0 ] && ok "iscsi-ls -s exit 0" || fail "iscsi-ls -s exit $rc"
grep -q "^Target:$TARGET_IQN Portal:127.0.0.1:$TARGET_PORT" <<<"$ls_out" && ok "iscsi-ls lists $TARGET_IQN at 127.0.0.1:$TARGET_PORT" || fail "iscsi-ls does not list the target"
for i in 0 1; do
  grep -qE "^Lun:$(target_lun $i) +Type:DIRECT_ACCESS \(Size:102[34]M\)" <<<"$ls_out" && ok "LUN $(target_lun $i) is a 1 GiB disk" || fail "LUN $(target_lun $i) not listed as a 1 GiB disk"
done
ndisk=$(grep -c 'Type:DIRECT_ACCESS' <<<"$ls_out")
[ "$ndisk" -eq 2 ] && ok "exactly 2 disk LUNs" || fail "$ndisk disk LUNs listed, expected 2"
if [ "$TARGET_KIND" = gateway ]; then
  nlun=$(grep -c '^Lun:' <<<"$ls_out")
  [ "$nlun" -eq 2 ] && ok "gateway: no extra LUNs (REPORT LUNS = 0,1)" || fail "gateway: $nlun LUNs listed, expected 2"
fi
check "iscsi-ls --url prints the target URL" bash -c "timeout $T iscsi-ls --url '$(target_portal_url)' | grep -q 'iscsi://127.0.0.1:$TARGET_PORT/$TARGET_IQN'"

echo "-- discovery session"
disc=$(timeout "$T" "${BC[@]}" --port "$TARGET_PORT" discovery 2>&1); rc=$?
echo "$disc" | sed 's/^/        | /'
[ "$rc" -eq 0 ] && ok "discovery session: SendTargets, Logout response 0, nothing after it" || fail "discovery session (exit $rc)"
grep -q "^SENDTARGETS TargetName=$TARGET_IQN\$" <<<"$disc" && ok "SendTargets names $TARGET_IQN" || fail "SendTargets does not name $TARGET_IQN"
grep -qE "^SENDTARGETS TargetAddress=127\.0\.0\.1:$TARGET_PORT,[0-9]+\$" <<<"$disc" && ok "SendTargets TargetAddress is 127.0.0.1:$TARGET_PORT,TPGT" || fail "SendTargets TargetAddress missing or not 127.0.0.1:$TARGET_PORT"

echo "-- INQUIRY"
std=$(timeout "$T" iscsi-inq "$(target_url 0)" 2>&1)
grep -q 'Peripheral Device Type:DIRECT_ACCESS' <<<"$std" && ok "standard INQUIRY: direct-access device" || fail "standard INQUIRY: not direct access"
grep -q 'Removable:0' <<<"$std" && ok "standard INQUIRY: not removable" || fail "standard INQUIRY: RMB set"
vendor=$(sed -n 's/^Vendor:\(.*\)/\1/p' <<<"$std" | tr -d ' ')
product=$(sed -n 's/^Product:\(.*\)/\1/p' <<<"$std" | tr -d ' ')
[ -n "$vendor" ] && [ -n "$product" ] && ok "vendor '$vendor' product '$product'" || fail "empty vendor/product"
vpds=$(timeout "$T" iscsi-inq -e 1 -c 0 "$(target_url 0)" 2>&1)
echo "$vpds" | sed 's/^/        | /'
want_pages="0x80 0x83"
[ "$TARGET_KIND" = gateway ] && want_pages="0x80 0x83 0xb0 0xb1 0xb2"
for p in $want_pages; do
  grep -q "^Page:$p " <<<"$vpds" && ok "VPD 0x00 lists page $p" || fail "VPD 0x00 does not list page $p"
done

# identity LUN_IDX: "serial|naa-hex" from badclient (raw bytes; iscsi-inq prints binary NAA as text)
identity() {
  local lun=$(target_lun "$1") s n
  s=$(timeout "$T" "${BC[@]}" --port "$TARGET_PORT" --iqn "$TARGET_IQN" inquiry --lun "$lun" --page 0x80 | sed -n 's/^SERIAL //p')
  n=$(timeout "$T" "${BC[@]}" --port "$TARGET_PORT" --iqn "$TARGET_IQN" inquiry --lun "$lun" --page 0x83 | sed -n 's/^DESIGNATOR type=3 assoc=0 codeset=1 value=//p' | sort | tr '\n' ' ')
  echo "${s}|${n% }"
}
id0=$(identity 0); id1=$(identity 1)
echo "  LUN $(target_lun 0): serial|NAA = $id0"
echo "  LUN $(target_lun 1): serial|NAA = $id1"
[ -n "${id0%%|*}" ] && ok "VPD 0x80 unit serial number non-empty" || fail "VPD 0x80 serial empty"
[ -n "${id0#*|}" ] && ok "VPD 0x83 has an NAA designator (LU association, binary)" || fail "VPD 0x83 has no NAA designator"
if [ "$TARGET_KIND" = gateway ]; then
  naa_first=${id0#*|}; naa_first=${naa_first%% *}
  if [[ $naa_first =~ ^(6[0-9a-f]{31}|5[0-9a-f]{15})$ ]]; then ok "gateway: NAA $naa_first is type 5 or 6 (IEEE registered [extended])"
  else fail "gateway: NAA '$naa_first' is not type 5 (16 hex) or 6 (32 hex)"; fi
fi
[ "${id0%%|*}" != "${id1%%|*}" ] && ok "serials differ between LUNs" || fail "both LUNs have serial '${id0%%|*}'"
[ "${id0#*|}" != "${id1#*|}" ] && ok "NAA designators differ between LUNs" || fail "both LUNs have NAA '${id0#*|}'"
[ "$(identity 0)" = "$id0" ] && ok "identity of LUN 0 stable across runs" || fail "identity of LUN 0 changed between two runs"
inq83a=$(timeout "$T" iscsi-inq -e 1 -c 131 "$(target_url 1)" 2>&1); inq83b=$(timeout "$T" iscsi-inq -e 1 -c 131 "$(target_url 1)" 2>&1)
[ "$inq83a" = "$inq83b" ] && grep -q 'Designator Type:(3) NAA' <<<"$inq83a" && ok "iscsi-inq VPD 0x83 of LUN 1: NAA present, same output twice" || fail "iscsi-inq VPD 0x83 of LUN 1 differs between runs or has no NAA"

if [ "$TARGET_KIND" = gateway ] && "$GATEWAY_BIN" check-config --help >/dev/null 2>&1; then
  cc=$(timeout "$T" "$GATEWAY_BIN" check-config --iqn "$TARGET_IQN" --lun "${TARGET_BACKING[0]},size=1G" --lun "${TARGET_BACKING[1]},size=1G" 2>&1)
  echo "$cc" | sed 's/^/        | check-config: /' | head -20
  naa0=${id0#*|}
  if grep -qiE '[0-9a-f]{16,32}' <<<"$cc"; then
    grep -qi "$naa0" <<<"$cc" && ok "check-config prints LUN 0's NAA $naa0" || fail "check-config output does not contain LUN 0's NAA $naa0"
    grep -qF "${id0%%|*}" <<<"$cc" && ok "check-config prints LUN 0's serial" || fail "check-config output does not contain LUN 0's serial ${id0%%|*}"
  else
    echo "  note: check-config prints no designators; identity checked for stability only"
  fi
fi

echo "-- restart on the same config keeps the identity"
KEEP_BACKING=1
saved_work=$TARGET_WORK saved_backing=("${TARGET_BACKING[@]}")
target_stop
KEEP_BACKING=
if [ "$TARGET_KIND" = gateway ]; then
  TARGET_WORK=$saved_work TARGET_BACKING=("${saved_backing[@]}")
  _target_start_gateway 1G && ok "gateway restarted on the same backing files" || fail "gateway restart"
else
  TARGET_WORK=$saved_work TARGET_BACKING=("${saved_backing[@]}")
  _target_start_tgt && ok "tgt restarted on the same backing files" || fail "tgt restart"
fi
[ "$(identity 0)" = "$id0" ] && [ "$(identity 1)" = "$id1" ] && ok "serial and NAA unchanged after restart" || fail "identity changed after restart: $(identity 0) / $(identity 1)"

echo "-- READ CAPACITY(16)"
rc16=$(timeout "$T" iscsi-readcapacity16 "$(target_url 0)" 2>&1)
echo "$rc16" | sed 's/^/        | /'
grep -q 'LOGICAL BLOCK LENGTH IN BYTES:512' <<<"$rc16" && ok "512-byte logical blocks" || fail "block length not 512"
grep -q 'RETURNED LOGICAL BLOCK ADDRESS:2097151' <<<"$rc16" && ok "last LBA 2097151 (1 GiB)" || fail "last LBA not 2097151"
check "iscsi-readcapacity16 -s prints 1073741824" bash -c "timeout $T iscsi-readcapacity16 -s '$(target_url 1)' | grep -qx 1073741824"
if [ "$TARGET_KIND" = gateway ]; then
  # Three sessions increment one counter block with COMPARE AND WRITE, re-reading it after each
  # MISCOMPARE: the final value must be the sum of their successes (two interleaved
  # read-modify-writes would lose an increment), and they must have raced (MISCOMPAREs seen).
  echo "-- COMPARE AND WRITE from three sessions on one block"
  CAW=(timeout 30 python3 "$IT_DIR/tools/caw.py" --port "$TARGET_PORT" --iqn "$TARGET_IQN" --lun "$(target_lun 0)" --lba 4096)
  caw_dir=$(mktemp -d)
  if "${CAW[@]}" init >/dev/null; then
    caw_pids=()
    for s in 1 2 3; do
      "${CAW[@]}" counter --session "$s" --seconds 4 >"$caw_dir/$s" 2>&1 &
      caw_pids+=($!)
    done
    wait "${caw_pids[@]}"
    caw_sum=$(python3 - "$caw_dir" <<'PY'
import json, os, sys
won = miscompares = errors = 0
for f in sorted(os.listdir(sys.argv[1])):
    try:
        r = json.loads(open(os.path.join(sys.argv[1], f)).read().strip().splitlines()[-1])
    except Exception:
        print("bad output from counter", f)
        sys.exit()
    won += r["won"]; miscompares += r["miscompares"]; errors += r["errors"]
print(won, miscompares, errors)
PY
)
    read -r caw_won caw_mis caw_err _ <<<"$caw_sum"
    caw_now=$("${CAW[@]}" read --session 4)
    echo "        | won=$caw_won miscompares=$caw_mis errors=$caw_err read=$caw_now"
    [ "$caw_err" = 0 ] && ok "COMPARE AND WRITE counters: no errors" || fail "COMPARE AND WRITE counters: $caw_sum"
    [[ $caw_mis =~ ^[0-9]+$ ]] && [ "$caw_mis" -gt 0 ] && ok "the three sessions raced ($caw_mis MISCOMPAREs)" || fail "no MISCOMPARE: the sessions did not race ($caw_sum)"
    [ "$caw_now" = "{\"value\": $caw_won, \"torn\": false}" ] && ok "counter = $caw_won, the sum of the successful COMPARE AND WRITEs" || fail "counter $caw_now after $caw_won successful COMPARE AND WRITEs"
  else
    fail "COMPARE AND WRITE counter: the initial WRITE failed"
  fi
  rm -rf "$caw_dir"
fi
check "target still running" target_alive
checks_summary "libiscsi-tools ($(suite_elapsed)s)"
