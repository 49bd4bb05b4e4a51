#!/usr/bin/env bash
# QEMU's libiscsi block driver (qemu-block-extra) against two fresh 1 GiB LUNs:
#  - qemu-img info sees the size;
#  - qemu-io writes distinct patterns at many offsets/sizes (512 B .. 8 MiB; 512-aligned but not
#    4 KiB-aligned; across 1 MiB boundaries; the last sectors of the LUN), then reads every one back
#    with pattern verification, and checks the gaps between them still read as zeros;
#  - write -z -u (WRITE SAME / zeroes) and discard (UNMAP) reads back zeros (discard strictly only
#    when READ CAPACITY(16) reports LBPRZ=1);
#  - qemu-img convert of a random 64 MiB raw image onto LUN 1, qemu-img compare against the image
#    and the backing file; qemu-img compare of LUN 0 (iscsi) against its backing file;
#  - a LUN with read_cache=on: overwrites, zeroing and discard of cached data read back new data;
#  - a LUN with direct=off (write-back): the same, plus unaligned overwrites, flush and FUA writes;
#  - idle polling (--idle-poll-us 200): patterned writes and reads of 512 B .. 8 MiB, with a
#    pause longer than the window between them, read back, the LUN equals its file, and the
#    metrics show polls that found input and time spent polling;
#  - metrics (--metrics-listen): GET /metrics parses as Prometheus text, and a qemu-io write of
#    N bytes and read of M bytes grow the LUN's write/read byte counters by exactly N and M,
#    and no aligned I/O buffer stays live once the sessions ended.
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
need qemu-io qemu-img iscsi-readcapacity16
QEMU_TIMEOUT=${QEMU_TIMEOUT:-120}

target_start 2 1G || exit 1
U0=$(target_url 0)
U1=$(target_url 1)
SIZE=$((1024 * 1024 * 1024))
K=1024 M=$((1024 * 1024))

# qio DESC URL CMD...: one qemu-io process running each CMD (-c); fails on exit status or on a
# pattern/IO error message in its output.
qio() {
  local desc=$1 url=$2; shift 2
  local a=() c out rc=0
  for c in "$@"; do a+=(-c "$c"); done
  out=$(timeout "$QEMU_TIMEOUT" stdbuf -oL qemu-io -f raw "${a[@]}" "$url" 2>&1) || rc=$?
  echo "$out" >>"$SUITE_LOG_DIR/qemu-io.log"
  if [ "$rc" -eq 0 ] && ! grep -qiE 'fail|error|mismatch' <<<"$out"; then
    ok "$desc"
  else
    fail "$desc (exit $rc)"
    grep -iE 'fail|error|mismatch' <<<"$out" | head -5 | sed 's/^/        | /'
    # How far it got (a timeout prints no error): line-buffered output survives the kill.
    tail -n 3 <<<"$out" | sed 's/^/        | last: /'
  fi
}

echo "-- size"
check "qemu-img info reports 1 GiB on LUN 0" bash -c "timeout $QEMU_TIMEOUT qemu-img info --output=json -f raw '$U0' | grep -q '\"virtual-size\": $SIZE'"

echo "-- patterns at many offsets and sizes (LUN 0)"
# offset length: non-overlapping, sorted
regions=(
  "0 512"
  "1536 1024"
  "$((4 * K - 512)) 1536"
  "$((64 * K + 512)) $((4 * K))"
  "$((M - 512)) 1024"
  "$((2 * M - 4 * K)) $((8 * K))"
  "$((3 * M + 512)) $((64 * K + 512))"
  "$((5 * M - 512 * K)) $M"
  "$((16 * M + 512)) $((8 * M))"
  "$((100 * M)) $((128 * K))"
  "$((512 * M - 1536)) 3072"
  "$((SIZE - 16 * M)) $((8 * M))"
  "$((SIZE - M - 512)) $((M - 512))"
  "$((SIZE - 512)) 512"
)
writes=() reads=() i=0
for r in "${regions[@]}"; do
  set -- $r
  pat=$(printf '0x%02x' $((0x11 + i * 7 % 0xe0)))
  writes+=("write -P $pat $1 $2")
  reads+=("read -P $pat $1 $2")
  i=$((i + 1))
done
qio "write ${#writes[@]} patterned regions (512 B .. 8 MiB)" "$U0" "${writes[@]}"
qio "read back ${#reads[@]} regions with pattern verification" "$U0" "${reads[@]}"
# gaps between regions must still be zero
gaps=() prev_end=0
for r in "${regions[@]}"; do
  set -- $r
  if [ "$1" -gt "$prev_end" ]; then
    len=$(($1 - prev_end)); [ "$len" -le $((4 * M)) ] || len=$((4 * M))
    gaps+=("read -P 0 $prev_end $len")
  fi
  prev_end=$(($1 + $2))
done
qio "gaps between the regions read as zeros (${#gaps[@]} ranges)" "$U0" "${gaps[@]}"
qio "a second session reads the last sector" "$U0" "read -P $(printf '0x%02x' $((0x11 + 13 * 7 % 0xe0))) $((SIZE - 512)) 512"

echo "-- write zeroes and discard"
lbprz=$(timeout 30 iscsi-readcapacity16 "$U0" | sed -n 's/.*LBPRZ:\([01]\).*/\1/p')
lbpme=$(timeout 30 iscsi-readcapacity16 "$U0" | sed -n 's/.*LBPME:\([01]\).*/\1/p')
echo "  READ CAPACITY(16): LBPME=${lbpme:-?} LBPRZ=${lbprz:-?}"
Z1=$((200 * M + 512)) Z2=$((300 * M))
qio "write -P 0x5a then write -z -u (zeroes, may unmap) reads zeros" "$U0" \
  "write -P 0x5a $Z1 $((2 * M))" "write -z -u $Z1 $((2 * M))" "read -P 0 $Z1 $((2 * M))"
qio "write -z (zeroes, no unmap) 4 KiB-unaligned range reads zeros" "$U0" \
  "write -P 0x5b $((Z1 + 3 * M)) $((64 * K))" "write -z $((Z1 + 3 * M + 512)) $((32 * K))" \
  "read -P 0x5b $((Z1 + 3 * M)) 512" "read -P 0 $((Z1 + 3 * M + 512)) $((32 * K))" \
  "read -P 0x5b $((Z1 + 3 * M + 512 + 32 * K)) $((32 * K - 512))"
out=$(timeout "$QEMU_TIMEOUT" qemu-io -f raw -c "write -P 0x6c $Z2 $((4 * M))" -c "discard $Z2 $((4 * M))" -c "read -P 0 $Z2 $((4 * M))" "$U0" 2>&1); rc=$?
echo "$out" >>"$SUITE_LOG_DIR/qemu-io.log"
if [ "$rc" -eq 0 ] && ! grep -qiE 'fail|error' <<<"$out"; then
  ok "discard of 4 MiB reads back zeros"
elif [ "${lbprz:-0}" = 1 ]; then
  fail "discard of 4 MiB did not read back zeros although LBPRZ=1 (exit $rc)"
else
  ok "discard of 4 MiB: data not zeroed, allowed because LBPRZ=0 (LBPME=${lbpme:-?})"
fi

echo "-- qemu-img convert / compare (LUN 1)"
img="$TARGET_WORK/random64.raw"
head -c $((64 * M)) /dev/urandom >"$img"
t0=$(date +%s)
check "qemu-img convert -n 64 MiB random image onto LUN 1" timeout "$QEMU_TIMEOUT" qemu-img convert -n -f raw -O raw "$img" "$U1"
check "qemu-img compare image vs LUN 1 (iscsi; the rest of the LUN is zero)" timeout "$QEMU_TIMEOUT" qemu-img compare -f raw -F raw "$img" "$U1"
check "qemu-img compare LUN 1 (iscsi) vs its backing file" timeout "$QEMU_TIMEOUT" qemu-img compare -f raw -F raw "$U1" "${TARGET_BACKING[1]}"
check "qemu-img compare image vs LUN 1 backing file" timeout "$QEMU_TIMEOUT" qemu-img compare -f raw -F raw "$img" "${TARGET_BACKING[1]}"
check "qemu-img compare LUN 0 (iscsi) vs its backing file (all patterns, 1 GiB)" timeout "$QEMU_TIMEOUT" qemu-img compare -f raw -F raw "$U0" "${TARGET_BACKING[0]}"
echo "  convert+compare took $(($(date +%s) - t0))s"
check "target still running" target_alive

echo "-- read cache (a LUN with read_cache=on: reads via the page cache, writes O_DIRECT)"
target_stop
GATEWAY_LUN_SUFFIX=",size=64M,read_cache=on" target_start 1 64M || exit 1
UC=$(target_url 0)
check "the gateway logged the LUN with read_cache=true" grep -qE 'read_cache[^ ]*=[^ ]*true' "$TARGET_LOG"
qio "read cache: cached data is replaced by each overwrite" "$UC" \
  "write -P 0x21 0 $M" "read -P 0x21 0 $M" "write -P 0x22 4096 8192" \
  "read -P 0x21 0 4096" "read -P 0x22 4096 8192" "read -P 0x21 12288 $((M - 12288))"
qio "read cache: write zeroes and discard of cached data read back zeros" "$UC" \
  "read -P 0x21 $((512 * K)) $((128 * K))" "write -z $((512 * K)) $((64 * K))" \
  "read -P 0 $((512 * K)) $((64 * K))" "discard $((576 * K)) $((64 * K))" "read -P 0 $((576 * K)) $((64 * K))"
check "read cache: LUN (iscsi) equals its backing file" timeout "$QEMU_TIMEOUT" qemu-img compare -f raw -F raw "$UC" "${TARGET_BACKING[0]}"
check "target still running" target_alive

echo "-- write-back (a LUN with direct=off: reads and writes via the page cache, WCE=1)"
target_stop
GATEWAY_LUN_SUFFIX=",size=64M,direct=off" target_start 1 64M || exit 1
UW=$(target_url 0)
check "the gateway logged the LUN with direct=false and write_cache=true" \
  bash -c "grep -E 'direct[^ ]*=[^ ]*false' '$TARGET_LOG' | grep -qE 'write_cache[^ ]*=[^ ]*true'"
qio "write-back: overwrites, unaligned and across 1 MiB, read back" "$UW" \
  "write -P 0x31 0 $((2 * M))" "write -P 0x32 $((M - 1536)) 3584" "write -P 0x33 $((3 * M)) 8M" \
  "read -P 0x31 0 $((M - 1536))" "read -P 0x32 $((M - 1536)) 3584" "read -P 0x31 $((M + 2048)) $((M - 2048))" \
  "read -P 0x33 $((3 * M)) 8M" "read -P 0 $((2 * M)) $M"
qio "write-back: flush, FUA write, write zeroes and discard read back" "$UW" \
  "flush" "write -f -P 0x34 $((12 * M)) 4096" "read -P 0x34 $((12 * M)) 4096" \
  "write -z $((512 * K)) $((64 * K))" "read -P 0 $((512 * K)) $((64 * K))" \
  "discard $((576 * K)) $((64 * K))" "read -P 0 $((576 * K)) $((64 * K))"
check "write-back: LUN (iscsi) equals its backing file" timeout "$QEMU_TIMEOUT" qemu-img compare -f raw -F raw "$UW" "${TARGET_BACKING[0]}"
check "target still running" target_alive

# scrape: the metrics text at $MURL (curl, or python3 where curl is missing).
scrape() {
  if command -v curl >/dev/null; then
    curl -sf --max-time 10 "$MURL"
  else
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$MURL"
  fi
}

# start_with_metrics [SERVE_FLAG...]: restarts the gateway with one 64M LUN, the flags and a
# metrics endpoint on a free port ($MPORT, fetched by scrape).
start_with_metrics() {
  target_stop
  MPORT=$(pick_free_port)
  while [ "$MPORT" = "$TARGET_PORT" ]; do MPORT=$(pick_free_port); done
  MURL="http://127.0.0.1:$MPORT/metrics"
  GATEWAY_EXTRA_ARGS="$* --metrics-listen 127.0.0.1:$MPORT" target_start 1 64M
}

echo "-- idle polling (--idle-poll-us 200: connection threads poll before they sleep)"
if [ "$TARGET_KIND" != gateway ]; then
  echo "  skipped: idle polling is the gateway's"
else
  start_with_metrics --idle-poll-us 200 || exit 1
  UP=$(target_url 0)
  check "the gateway logged idle_poll_us=200" grep -qE 'idle_poll_us[^ ]*=[^ ]*200' "$TARGET_LOG"
  # Back-to-back commands (the polling path) of every size, then a pause longer than the
  # cap (the window shrinks and the thread sleeps) and more commands (it must still wake).
  qio "idle polling: writes and reads of 512 B .. 8 MiB read back" "$UP" \
    "write -P 0x51 0 512" "write -P 0x52 4096 $((64 * K))" "write -P 0x53 $M 8M" \
    "read -P 0x51 0 512" "read -P 0x52 4096 $((64 * K))" "read -P 0x53 $M 8M" \
    "sleep 300" "write -P 0x54 $((12 * M)) 4096" "read -P 0x54 $((12 * M)) 4096" "read -P 0x53 $M 4096"
  check "idle polling: LUN (iscsi) equals its backing file" timeout "$QEMU_TIMEOUT" qemu-img compare -f raw -F raw "$UP" "${TARGET_BACKING[0]}"
  # The threads count per thread and publish at most every 50 ms after a wake-up; the pause
  # in the qemu-io run above and the compare's own session give them wake-ups to do it.
  polls=$(scrape) || polls=""
  hits=$(awk '$1 == "iscsi_gateway_idle_polls_total{result=\"hit\"}" { print $2 }' <<<"$polls")
  psecs=$(awk '$1 == "iscsi_gateway_idle_poll_seconds_total" { print $2 }' <<<"$polls")
  check "idle polling: some polls found input before the thread slept (hits: ${hits:-none})" test "${hits:-0}" -gt 0
  check "idle polling: time spent polling is counted (${psecs:-none} s)" awk -v v="${psecs:-0}" 'BEGIN { exit !(v > 0) }'
  check "target still running" target_alive
fi

echo "-- metrics (GET /metrics while qemu-io writes and reads)"
if [ "$TARGET_KIND" != gateway ]; then
  echo "  skipped: the metrics endpoint is the gateway's"
else
  start_with_metrics || exit 1
  UM=$(target_url 0)
  # metric TEXT NAME: the value of NAME for LUN 0 of this target.
  metric() {
    awk -v want="$2{target=\"$TARGET_IQN\",lun=\"0\"}" '$1 == want { print $2; found = 1 } END { exit !found }' <<<"$1"
  }
  # delta NAME: the growth of NAME from $before to $after.
  delta() { echo $(($(metric "$after" "$1") - $(metric "$before" "$1"))); }
  for ((i = 0; i < 50; i++)); do port_listening "$MPORT" && break; sleep 0.1; done
  before=$(scrape) || before=""
  check "GET /metrics answers" test -n "$before"
  # Every line: a comment, or `name{labels} value` / `name value` (text format 0.0.4).
  bad=$(grep -vE '^(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? ([-+]?[0-9.]+([eE][-+]?[0-9]+)?|[-+]Inf|NaN))$' <<<"$before" | head -3)
  if [ -z "$bad" ]; then ok "every line parses (comment or name{labels} value)"; else fail "unparseable metrics lines: $bad"; fi
  if command -v curl >/dev/null; then
    check "Content-Type is text/plain; version=0.0.4" bash -c "curl -sf -o /dev/null -D - '$MURL' | grep -qi '^content-type: text/plain; version=0.0.4'"
    check "another path is 404" bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' 'http://127.0.0.1:$MPORT/')\" = 404 ]"
  fi
  check "lun_served is 1" test "$(metric "$before" iscsi_gateway_lun_served)" = 1
  NW=$((192 * K)) NR=$((64 * K))
  qio "qemu-io writes $NW bytes" "$UM" "write -P 0x41 $M $NW"
  after=$(scrape)
  check "write bytes grew by exactly $NW (got $(delta iscsi_gateway_lun_write_bytes_total))" \
    test "$(delta iscsi_gateway_lun_write_bytes_total)" = "$NW"
  check "read bytes did not grow during the write (got $(delta iscsi_gateway_lun_read_bytes_total))" \
    test "$(delta iscsi_gateway_lun_read_bytes_total)" = 0
  check "write latency histogram counts every write command" \
    test "$(metric "$after" iscsi_gateway_lun_write_latency_seconds_count)" = "$(metric "$after" iscsi_gateway_lun_write_commands_total)"
  before=$after
  qio "qemu-io reads $NR bytes back" "$UM" "read -P 0x41 $M $NR"
  after=$(scrape)
  check "read bytes grew by exactly $NR (got $(delta iscsi_gateway_lun_read_bytes_total))" \
    test "$(delta iscsi_gateway_lun_read_bytes_total)" = "$NR"
  check "write bytes did not grow during the read" test "$(delta iscsi_gateway_lun_write_bytes_total)" = 0
  check "read commands grew" test "$(delta iscsi_gateway_lun_read_commands_total)" -ge 1
  if grep -qE '^iscsi_gateway_logins_total\{result="ok"\} [1-9]' <<<"$after"; then
    ok "logins counted as ok"
  else
    fail "logins counted as ok"
  fi
  # Every aligned I/O buffer comes back once the qemu-io sessions are gone (bounded wait:
  # the gateway tears a connection down after the client has closed it).
  for ((i = 0; i < 50; i++)); do
    after=$(scrape)
    grep -qx 'iscsi_gateway_buffers_live 0' <<<"$after" && break
    sleep 0.1
  done
  check "no I/O buffer is live once the sessions ended ($(grep '^iscsi_gateway_buffers_live ' <<<"$after"))" \
    grep -qx 'iscsi_gateway_buffers_live 0' <<<"$after"
  check "the buffer pool reports its held bytes" \
    grep -qE '^iscsi_gateway_buffer_pool_held_bytes [0-9]+$' <<<"$after"
  # Registered buffers (default 8 MiB per connection thread): the 192 KiB write and 64 KiB
  # read above went to io_uring from the arena, and every arena block came back.
  REGD=$(awk '$1 == "iscsi_gateway_block_ops_total{buffer=\"registered\"}" { print $2 }' <<<"$after")
  check "reads and writes used registered buffers (${REGD:-none})" test "${REGD:-0}" -ge 2
  check "no registered-buffer block in use once the sessions ended" \
    grep -qx 'iscsi_gateway_registered_buffer_bytes{state="in_use"} 0' <<<"$after"
  echo "$after" >"$SUITE_LOG_DIR/metrics.txt"
  check "target still running" target_alive
fi
checks_summary "qemu ($(suite_elapsed)s)"
