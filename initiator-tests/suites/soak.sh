#!/usr/bin/env bash
# Fault soak (~2 min): several sessions write at once while faults are injected, and no write the
# target acknowledged may be lost or corrupted.
#   * 4 writer sessions (tools/soak.py writer: its own initiator, so it knows exactly which writes
#     were acknowledged) write 64 KiB blocks to fresh offsets of LUN 0 through a TCP proxy
#     (soak.py proxy) that cuts connections (RST) at random moments, a bounded number of times;
#     the writers log in again (session reinstatement) and go on
#   * a qemu-io session (libiscsi) writes 1 MiB patterns to its own region of LUN 0, directly
#   * garbage connections (badclient.py cases garbage/http/huge-dsl/truncated-data) hit the port
#   * LUN 1's backing file (64 MiB, sparse) lives on a 16 MiB tmpfs: a writer fills it; writes
#     beyond the space must end in CHECK CONDITION, DATA PROTECT / SPACE ALLOCATION FAILED WRITE
#     PROTECT (07/27/07, SBC-3 thin-provisioning exhaustion) while the other sessions go on
# Afterwards every acknowledged write is read back over iSCSI and, after the gateway stopped, from
# the backing files. Prints FIGURES: sessions, cuts, garbage connections, ENOSPC errors, acked
# writes, lost, corrupt. Needs root (tmpfs mount); gateway only. SOAK_SECONDS (default 75).
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
if [ "$TARGET_KIND" != gateway ]; then mark_skipped "soak checks the gateway's fault handling"; exit 0; fi
if [ "$(id -u)" != 0 ]; then mark_skipped "needs root to mount a tmpfs"; exit 0; fi
need qemu-io python3 mount umount
SOAK=(python3 "$IT_DIR/tools/soak.py")
BC=(python3 "$IT_DIR/tools/badclient.py")
DUR=${SOAK_SECONDS:-75}
IQN=iqn.2026-11.test.initiator-tests:soak
WORK=$(mktemp -d "${TARGET_TMPDIR:-/tmp}/it-soak.XXXXXX")
TINY=$WORK/tiny
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  target_stop
  if mountpoint -q "$TINY"; then umount "$TINY" || echo "soak: cannot unmount $TINY" >&2; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$TINY"
mount -t tmpfs -o size=16M,mode=0700 tmpfs "$TINY" || { fail "cannot mount a tmpfs on $TINY"; checks_summary soak; exit 1; }
TARGET_PORT=$(pick_free_port) || exit 1
PROXY_PORT=$(pick_free_port) || exit 1
while [ "$PROXY_PORT" = "$TARGET_PORT" ]; do PROXY_PORT=$(pick_free_port) || exit 1; done
cat >"$WORK/gw.toml" <<TOML
[server]
listen = ["127.0.0.1:$TARGET_PORT"]
data_dir = "$WORK/data"
[[target]]
iqn = "$IQN"
[[target.lun]]
path = "$WORK/lun0.img"
size = "1G"
[[target.lun]]
path = "$TINY/lun1.img"
size = "64M"
TOML
target_start_config "$WORK/gw.toml" "$IQN" || exit 1

"${SOAK[@]}" proxy --listen "$PROXY_PORT" --target "$TARGET_PORT" --max-cuts 25 --seed 7 >"$SUITE_LOG_DIR/proxy.out" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_for 10 port_listening "$PROXY_PORT" || fail "proxy does not listen"

MiB=$((1 << 20))
WRITERS=()
for i in 1 2 3 4; do
  "${SOAK[@]}" writer --port "$PROXY_PORT" --iqn "$IQN" --lun 0 --name "proxied$i" --seed "$i" \
    --start $(((i - 1) * 112 * MiB)) --end $((i * 112 * MiB)) --duration "$DUR" --pause 0.03 \
    --log "$WORK/acked.log" >"$SUITE_LOG_DIR/writer$i.out" 2>&1 &
  WRITERS+=($!)
done
"${SOAK[@]}" writer --port "$TARGET_PORT" --iqn "$IQN" --lun 1 --name enospc --seed 100 \
  --start 0 --end $((64 * MiB)) --duration "$DUR" --pause 0.005 --pause-after-check 0.08 \
  --log "$WORK/acked.log" >"$SUITE_LOG_DIR/writer-enospc.out" 2>&1 &
WRITERS+=($!)
PIDS+=("${WRITERS[@]}")

# qemu-io (libiscsi): a new session every round writes 1 MiB with pattern k and reads it back.
(
  url="iscsi://127.0.0.1:$TARGET_PORT/$IQN/0"
  end=$((SECONDS + DUR)) k=0
  while [ $SECONDS -lt $end ] && [ $k -lt 200 ]; do
    off=$(((512 + k) * MiB)) pat=$((k % 250 + 1))
    if out=$(timeout 30 qemu-io -f raw "$url" -c "write -P $pat $off 1M" -c "read -P $pat $off 1M" 2>&1) &&
      ! echo "$out" | grep -qiE "error|fail|mismatch"; then
      echo "$off $pat" >>"$WORK/qemu-acked.log"
    else
      echo "round $k: $out" >>"$SUITE_LOG_DIR/qemu-failures.log"
    fi
    k=$((k + 1))
    sleep 0.5
  done
) &
QEMU_PID=$!
PIDS+=("$QEMU_PID")

# Garbage at the target port, concurrently.
(
  end=$((SECONDS + DUR)) n=0 cases=(garbage http huge-dsl truncated-data)
  while [ $SECONDS -lt $end ] && [ $n -lt 300 ]; do
    timeout 20 "${BC[@]}" --port "$TARGET_PORT" --iqn "$IQN" case "${cases[$((n % 4))]}" --bound 5 >/dev/null 2>&1
    n=$((n + 1))
    echo "$n" >"$WORK/garbage.count"
    sleep 0.2
  done
) &
GARBAGE_PID=$!
PIDS+=("$GARBAGE_PID")

log "soak running for ${DUR}s: 4 proxied writers, 1 ENOSPC writer, qemu-io, garbage"
for p in "${WRITERS[@]}" "$QEMU_PID" "$GARBAGE_PID"; do wait "$p"; done
kill -TERM "$PROXY_PID" 2>/dev/null
wait "$PROXY_PID" 2>/dev/null
PIDS=()
cat "$SUITE_LOG_DIR"/writer*.out "$SUITE_LOG_DIR/proxy.out" | sed 's/^/        | /'

target_alive && ok "gateway alive after the soak" || fail "gateway died during the soak"
cuts=$(sed -n 's/^PROXY connections=[0-9]* cuts=\([0-9]*\)$/\1/p' "$SUITE_LOG_DIR/proxy.out")
conns=$(sed -n 's/^PROXY connections=\([0-9]*\) .*/\1/p' "$SUITE_LOG_DIR/proxy.out")
[ "${cuts:-0}" -ge 1 ] && ok "proxy cut $cuts of $conns connections" || fail "proxy cut no connection"
for i in 1 2 3 4; do
  a=$(sed -n 's/.* acked=\([0-9]*\) .*/\1/p' "$SUITE_LOG_DIR/writer$i.out")
  [ "${a:-0}" -gt 0 ] && ok "proxied writer $i got $a writes acknowledged" || fail "proxied writer $i got nothing acknowledged"
done
enospc=$(sed -n 's/.* enospc=\([0-9]*\) .*/\1/p' "$SUITE_LOG_DIR/writer-enospc.out")
eacked=$(sed -n 's/.* acked=\([0-9]*\) .*/\1/p' "$SUITE_LOG_DIR/writer-enospc.out")
echearly=$(sed -n 's/.* checks=\([0-9]*\) .*/\1/p' "$SUITE_LOG_DIR/writer-enospc.out")
if [ "${enospc:-0}" -ge 1 ] && [ "${enospc:-0}" = "${echearly:-x}" ]; then
  ok "full tmpfs: $enospc writes got CHECK CONDITION 07/27/07, no other error ($eacked acknowledged before)"
else
  fail "full tmpfs: expected only 07/27/07 errors, got enospc=${enospc:-?} checks=${echearly:-?}"
fi
qacked=$(wc -l <"$WORK/qemu-acked.log" 2>/dev/null || echo 0)
qfail=$(grep -c '^round' "$SUITE_LOG_DIR/qemu-failures.log" 2>/dev/null || echo 0)
[ "$qacked" -gt 0 ] && [ "$qfail" -eq 0 ] && ok "qemu-io: $qacked rounds of write+read -P, none failed" ||
  fail "qemu-io: $qacked rounds ok, $qfail failed (see qemu-failures.log)"
garbage=$(cat "$WORK/garbage.count" 2>/dev/null || echo 0)
[ "$garbage" -gt 0 ] && ok "$garbage garbage connections sent" || fail "no garbage connection sent"

echo "-- read back every acknowledged write over iSCSI"
out=$("${SOAK[@]}" verify --port "$TARGET_PORT" --iqn "$IQN" "$WORK/acked.log" 2>&1)
echo "$out" | sed 's/^/        | /'
echo "$out" | grep -q "lost=0 corrupt=0" && ok "over iSCSI: every acknowledged write intact" || fail "over iSCSI: acknowledged writes lost or corrupt"
qbad=0
if [ "$qacked" -gt 0 ]; then
  cmds=()
  while read -r off pat; do cmds+=(-c "read -P $pat $off 1M"); done <"$WORK/qemu-acked.log"
  qout=$(timeout 60 qemu-io -f raw "iscsi://127.0.0.1:$TARGET_PORT/$IQN/0" "${cmds[@]}" 2>&1)
  qbad=$(echo "$qout" | grep -ciE "mismatch|error|fail")
  [ "$qbad" -eq 0 ] && ok "qemu-io read -P: all $qacked qemu writes intact" || fail "qemu-io read -P: $qbad mismatches"
fi

echo "-- stop the gateway, check the backing files"
target_stop
fout=$("${SOAK[@]}" verify --file "0=$WORK/lun0.img" --file "1=$TINY/lun1.img" "$WORK/acked.log" 2>&1)
echo "$fout" | sed 's/^/        | /'
echo "$fout" | grep -q "lost=0 corrupt=0" && ok "backing files: every acknowledged write intact" || fail "backing files: acknowledged writes lost or corrupt"
qfile=$(python3 - "$WORK/lun0.img" "$WORK/qemu-acked.log" <<'PY'
import sys
bad = 0
with open(sys.argv[1], "rb") as f:
    for line in open(sys.argv[2]):
        off, pat = map(int, line.split())
        f.seek(off)
        bad += f.read(1 << 20) != bytes([pat]) * (1 << 20)
print(bad)
PY
)
[ "${qfile:-1}" = 0 ] && ok "backing file: all qemu writes intact" || fail "backing file: ${qfile:-?} qemu writes differ"

acked=$(wc -l <"$WORK/acked.log")
reconnects=$(cat "$SUITE_LOG_DIR"/writer*.out | sed -n 's/.* reconnects=\([0-9]*\)$/\1/p' | awk "{s+=\$1} END {print s+0}")
lost=$(echo "$fout" | sed -n 's/.* lost=\([0-9]*\) .*/\1/p')
corrupt=$(echo "$fout" | sed -n 's/.* corrupt=\([0-9]*\)$/\1/p')
echo "FIGURES soak: seconds=$DUR sessions=$((5 + ${reconnects:-0} + qacked + qfail)) proxied_connections=${conns:-0} cuts=${cuts:-0} garbage_connections=$garbage enospc_errors=${enospc:-0} acked_writes=$((acked + qacked)) lost=${lost:-?} corrupt=$(( ${corrupt:-0} + qbad + ${qfile:-0} ))"
checks_summary "soak ($(suite_elapsed)s)"
