#!/usr/bin/env bash
# DRBD awareness, the one-writer lock and start-up time, with a fake drbdsetup
# (tools/fake-drbdsetup, driven by files) and plain files as backing stores:
#  - start-up: exec to listening in ms (tools/startup-time.py), must be under STARTUP_LIMIT_MS
#    (default 1000; the goal is 200);
#  - while the resource is Secondary the DRBD LUN is present (INQUIRY answers) but not ready:
#    READ CAPACITY gets NOT READY 02/04/0A, and its backing file is not open (/proc/PID/fd);
#  - after "promotion" (role:Primary) it is served: file open, qemu-io writes and reads back;
#  - after "demotion": NOT READY again and the backing file closed;
#  - when drbdsetup dies the gateway logs why and restarts it; the new run's state is followed;
#    after promotion again the data written before is still there;
#  - a second gateway on the same backing file refuses (exit 1) naming the holder's pid, twice;
#  - a second gateway started with a longer lock_wait_secs waits, and takes over once the first
#    one exits;
#  - read cache on a block device (root, a loop device): pages of the device cached before the
#    gateway opened it, stale because the data underneath changed (as when another DRBD node
#    wrote while this one was Secondary), are not served;
#  - direct=off (buffered, write-back) on that loop device: stale pages are not served either,
#    a plain write is acknowledged from the page cache, SYNCHRONIZE CACHE and FUA writes reach
#    the device below (the loop device's backing file), and a clean stop flushes.
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
if [ "$TARGET_KIND" != gateway ]; then
  mark_skipped "DRBD awareness is a gateway feature"
  exit 0
fi
need iscsi-readcapacity16 qemu-io python3
[ -x "$GATEWAY_BIN" ] || die "gateway binary not found: $GATEWAY_BIN (run the build step)"
T=${TOOLS_TIMEOUT:-30}
LIMIT_MS=${STARTUP_LIMIT_MS:-1000}
IQN=iqn.2026-11.test.initiator-tests:drbd
W=$(mktemp -d /tmp/it-drbd.XXXXXX)
export FAKE_DRBD_DIR=$W/drbd
mkdir -p "$FAKE_DRBD_DIR" "$W/data"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || continue
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  # the last fake drbdsetup, in case a gateway died without killing it
  p=$(cat "$FAKE_DRBD_DIR/pid" 2>/dev/null)
  if [ -n "$p" ] && grep -q "fake-drbdsetup\|tail" "/proc/$p/cmdline" 2>/dev/null; then kill -TERM "$p" 2>/dev/null; fi
  [ -n "${LOOPDEV:-}" ] && losetup -d "$LOOPDEV" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

# ---- fake DRBD state -------------------------------------------------------------------------
write_state() { # ROLE
  cat >"$FAKE_DRBD_DIR/state" <<EOF
exists resource name:r0 role:$1 suspended:no may_promote:${MAY_PROMOTE:-no} promotion_score:10102
exists connection name:r0 peer-node-id:1 conn-name:peer connection:Connected role:Secondary
exists device name:r0 volume:0 minor:0 disk:UpToDate client:no quorum:${QUORUM:-yes}
exists peer-device name:r0 peer-node-id:1 conn-name:peer volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
EOF
}
set_role() { # ROLE: what DRBD would report on promotion/demotion
  write_state "$1"
  echo "change resource name:r0 role:$1" >>"$FAKE_DRBD_DIR/changes"
}
write_state Secondary

truncate -s 64M "$W/lun0.img" "$W/lun1.img"
write_config() { # FILE PORT LOCK_WAIT WITH_DRBD_LUN [AUTO_PROMOTE=false]
  {
    echo "[server]"
    echo "listen = [\"127.0.0.1:$2\"]"
    echo "data_dir = \"$W/data\""
    echo "lock_wait_secs = $3"
    echo "[drbd]"
    echo "drbdsetup = \"$IT_DIR/tools/fake-drbdsetup\""
    echo "auto_promote = ${5:-false}"
    echo "[[target]]"
    echo "iqn = \"$IQN\""
    echo "[[target.lun]]"
    echo "lun = 1"
    echo "path = \"$W/lun1.img\""
    if [ "$4" = yes ]; then
      echo "[[target.lun]]"
      echo "lun = 0"
      echo "path = \"$W/lun0.img\""
      echo "drbd_resource = \"r0\""
    fi
  } >"$1"
}
PORT=$(pick_free_port) || die "no free port"
write_config "$W/a.toml" "$PORT" 1 yes
LOG_A="$SUITE_LOG_DIR/gateway-a.log"
URL0="iscsi://127.0.0.1:$PORT/$IQN/0"
URL1="iscsi://127.0.0.1:$PORT/$IQN/1"

fd_open() { # PID FILE: is FILE among PID's open fds?
  local f
  for f in /proc/"$1"/fd/*; do [ "$(readlink "$f" 2>/dev/null)" = "$2" ] && return 0; done
  return 1
}
logged() { grep -q -- "$1" "$LOG_A"; }
rc16() { timeout "$T" iscsi-readcapacity16 -s "$1" 2>&1; }
not_ready() { # URL: READ CAPACITY(16) fails with NOT READY, ASC/ASCQ 04/0A
  local out
  out=$(rc16 "$1") && { echo "READ CAPACITY succeeded: $out"; return 1; }
  echo "$out"
  grep -qiE 'NOT_READY|NOT READY' <<<"$out" && grep -qiE '0x040a|ASYMMETRIC|NOT_ACCESSIBLE' <<<"$out"
}

echo "-- start-up time (exec to listening), DRBD resource Secondary"
out=$(python3 "$IT_DIR/tools/startup-time.py" "$PORT" 20 "$LOG_A" -- \
  "$GATEWAY_BIN" serve --config "$W/a.toml" --log-level "${GATEWAY_LOG_LEVEL:-debug}")
rc=$?
echo "        | $out"
A=$(sed -n 's/^pid=\([0-9]*\).*/\1/p' <<<"$out")
[ -n "$A" ] && PIDS+=("$A") && echo "$A gateway $PORT" >>"$SUITE_LOG_DIR/target.pids"
[ "$rc" -eq 0 ] || { tail -20 "$LOG_A"; die "gateway did not start"; }
ms=$(sed -n 's/.*ms=\([0-9.]*\).*/\1/p' <<<"$out")
echo "STARTUP_MS=$ms"
awk -v m="$ms" -v l="$LIMIT_MS" 'BEGIN { exit !(m < l) }' && ok "listening ${ms} ms after exec (limit ${LIMIT_MS} ms, goal 200)" || fail "start-up took ${ms} ms (limit ${LIMIT_MS})"

echo "-- Secondary: LUN 0 present but not ready, device not open"
wait_for 10 logged "DRBD role is Secondary" && ok "gateway logs that LUN 0 is not served: Secondary" || fail "no 'not served ... Secondary' log line"
grep -m1 "DRBD role is Secondary" "$LOG_A" | sed 's/^/        | /'
# libiscsi's tools send TEST UNIT READY right after login and give up on NOT READY, so the
# identity check uses tools/badclient.py (login + INQUIRY only).
inq=$(timeout "$T" python3 "$IT_DIR/tools/badclient.py" --port "$PORT" --iqn "$IQN" inquiry --lun 0 --page 0x80 2>&1)
echo "$inq" | sed 's/^/        | /'
grep -q '^STATUS 0x00' <<<"$inq" && grep -q '^SERIAL .' <<<"$inq" && ok "INQUIRY VPD 0x80 answers on LUN 0 (serial visible)" || fail "INQUIRY on LUN 0 failed while Secondary"
check "READ CAPACITY on LUN 0: NOT READY 02/04/0A" not_ready "$URL0"
check "READ CAPACITY on the plain LUN 1 works" bash -c "timeout $T iscsi-readcapacity16 -s '$URL1' | grep -qx 67108864"
fd_open "$A" "$W/lun0.img" && fail "lun0.img is open while Secondary" || ok "lun0.img not open while Secondary"
fd_open "$A" "$W/lun1.img" && ok "lun1.img (plain LUN) is open" || fail "lun1.img not open"

echo "-- promotion"
set_role Primary
wait_for 10 logged "LUN served" && ok "gateway logs that LUN 0 is served" || fail "no 'LUN served' log line"
check "READ CAPACITY on LUN 0 after promotion: 64 MiB" bash -c "timeout $T iscsi-readcapacity16 -s '$URL0' | grep -qx 67108864"
fd_open "$A" "$W/lun0.img" && ok "lun0.img open while Primary" || fail "lun0.img not open while Primary"
check "qemu-io writes and reads back a pattern on LUN 0" \
  timeout "$T" qemu-io -f raw -c 'write -P 0xa5 1M 256k' -c 'read -P 0xa5 1M 256k' "$URL0"

echo "-- demotion"
set_role Secondary
wait_for 10 logged "LUN no longer served; device closed" && ok "gateway logs the demotion once" || fail "no demotion log line"
n=$(grep -c "LUN no longer served" "$LOG_A")
[ "$n" -eq 1 ] && ok "demotion logged exactly once" || fail "demotion logged $n times"
check "READ CAPACITY on LUN 0 after demotion: NOT READY 02/04/0A" not_ready "$URL0"
check "qemu-io cannot read LUN 0 after demotion" bash -c "! timeout $T qemu-io -f raw -c 'read 0 4k' '$URL0'"
fd_open "$A" "$W/lun0.img" && fail "lun0.img still open after demotion" || ok "lun0.img closed after demotion (/proc/$A/fd)"

echo "-- drbdsetup dies: restarted, state followed again"
old=$(cat "$FAKE_DRBD_DIR/pid")
kill -TERM "$old"
wait_for 10 bash -c "[ \$(wc -l <'$FAKE_DRBD_DIR/runs') -ge 2 ]" && ok "drbdsetup restarted after it was killed" || fail "drbdsetup not restarted"
wait_for 5 logged "drbdsetup events2 stopped; restarting" && ok "gateway logs why drbdsetup stopped" || fail "no restart log line"
grep -m1 "drbdsetup events2 stopped" "$LOG_A" | sed 's/^/        | /'
new=$(cat "$FAKE_DRBD_DIR/pid")
[ "$new" != "$old" ] && ok "new drbdsetup pid $new (was $old)" || fail "drbdsetup pid unchanged"
sleep 0.5
set_role Primary
wait_for 10 bash -c "[ \$(grep -c 'LUN served' '$LOG_A') -ge 2 ]" && ok "served again after promotion seen by the new drbdsetup" || fail "not served after the restart"
check "data written before the demotion is still there" \
  timeout "$T" qemu-io -f raw -c 'read -P 0xa5 1M 256k' "$URL0"

echo "-- quorum lost while Primary, then regained"
QUORUM=no write_state Primary
echo "change device name:r0 volume:0 quorum:no" >>"$FAKE_DRBD_DIR/changes"
wait_for 10 logged "volume 0 lost quorum" && ok "gateway logs the quorum loss" || fail "no quorum-loss log line"
check "READ CAPACITY on LUN 0 without quorum: NOT READY 02/04/0A" not_ready "$URL0"
fd_open "$A" "$W/lun0.img" && fail "lun0.img still open without quorum" || ok "lun0.img closed without quorum"
write_state Primary
echo "change device name:r0 volume:0 quorum:yes" >>"$FAKE_DRBD_DIR/changes"
wait_for 10 bash -c "[ \$(grep -c 'LUN served' '$LOG_A') -ge 3 ]" && ok "served again with quorum" || fail "not served after quorum returned"
check "READ CAPACITY on LUN 0 with quorum again" bash -c "timeout $T iscsi-readcapacity16 -s '$URL0' | grep -qx 67108864"

echo "-- a second gateway on the same backing file"
PORT_B=$(pick_free_port) || die "no free port"
write_config "$W/b.toml" "$PORT_B" 1 no
LOG_B="$SUITE_LOG_DIR/gateway-b.log"
for i in 1 2; do
  t0=$(date +%s%N)
  timeout 20 "$GATEWAY_BIN" serve --config "$W/b.toml" >"$LOG_B.$i" 2>&1
  rc=$?
  dt=$((($(date +%s%N) - t0) / 1000000))
  sed 's/^/        | /' "$LOG_B.$i" | tail -3
  [ "$rc" -eq 1 ] && ok "second gateway (try $i) exits 1 after ${dt} ms" || fail "second gateway (try $i) exit $rc"
  grep -q "locked by process $A " "$LOG_B.$i" && ok "its error names the holder, pid $A" || fail "error does not name pid $A"
done
port_listening "$PORT_B" && fail "second gateway listens" || ok "second gateway never listened"
check "first gateway still serves LUN 1" bash -c "timeout $T iscsi-readcapacity16 -s '$URL1' | grep -qx 67108864"

echo "-- takeover: a gateway waiting for the lock starts once the holder exits"
write_config "$W/c.toml" "$PORT_B" 15 no
"$GATEWAY_BIN" serve --config "$W/c.toml" >"$LOG_B.wait" 2>&1 &
C=$!
PIDS+=("$C")
echo "$C gateway $PORT_B" >>"$SUITE_LOG_DIR/target.pids"
wait_for 5 grep -q "waiting for it to be released" "$LOG_B.wait" && ok "waiting gateway logs the lock holder and waits" || fail "no waiting log line"
grep -m1 "waiting for it" "$LOG_B.wait" | sed 's/^/        | /'
port_listening "$PORT_B" && fail "waiting gateway listens before the lock is free" || ok "waiting gateway not listening yet"
t0=$(date +%s%N)
kill -TERM "$A"
wait_for 15 port_listening "$PORT_B" && ok "waiting gateway listens $((($(date +%s%N) - t0) / 1000000)) ms after SIGTERM to the holder" || fail "waiting gateway did not take over"
check "LUN 1 served by the new gateway" bash -c "timeout $T iscsi-readcapacity16 -s 'iscsi://127.0.0.1:$PORT_B/$IQN/1' | grep -qx 67108864"

echo "-- auto_promote = true: served while Secondary but promotable (the open promotes)"
kill -TERM "$C"
wait_for 10 bash -c "! kill -0 $C" || fail "gateway $C did not exit"
MAY_PROMOTE=yes write_state Secondary
: >"$FAKE_DRBD_DIR/changes"
PORT_D=$(pick_free_port) || die "no free port"
write_config "$W/d.toml" "$PORT_D" 1 yes true
LOG_A="$SUITE_LOG_DIR/gateway-d.log"
"$GATEWAY_BIN" serve --config "$W/d.toml" >"$LOG_A" 2>&1 &
D=$!
PIDS+=("$D")
echo "$D gateway $PORT_D" >>"$SUITE_LOG_DIR/target.pids"
wait_for 10 bash -c "grep 'LUN served' '$LOG_A' | grep -q Promote" && ok "may_promote:yes with auto_promote: LUN 0 opened (verdict Promote)" || fail "not served while promotable"
check "READ CAPACITY on LUN 0 while promotable" bash -c "timeout $T iscsi-readcapacity16 -s 'iscsi://127.0.0.1:$PORT_D/$IQN/0' | grep -qx 67108864"
write_state Secondary
echo "change resource name:r0 may_promote:no" >>"$FAKE_DRBD_DIR/changes"
wait_for 10 logged "LUN no longer served" && ok "may_promote:no (peer promoted): LUN 0 closed" || fail "still served after may_promote:no"
fd_open "$D" "$W/lun0.img" && fail "lun0.img still open" || ok "lun0.img closed"

echo "-- read cache on a block device: pages cached before the open are not served"
if [ "$(id -u)" -ne 0 ] || ! command -v losetup >/dev/null; then
  echo "  (skipped: needs root and losetup)"
else
  truncate -s 16M "$W/rc.img"
  LOOPDEV=$(losetup --find --show "$W/rc.img") || fail "losetup failed"
  if [ -n "${LOOPDEV:-}" ]; then
    # Held open all along: the last close of a block device drops its page cache by itself.
    exec 9<"$LOOPDEV"
    # "Old" data written and read through the device: it sits in the device's page cache.
    python3 -c "import os; f=os.open('$LOOPDEV', os.O_WRONLY); os.pwrite(f, b'\x41'*4096, 0); os.fsync(f); os.close(f)"
    head -c 4096 "$LOOPDEV" >/dev/null
    # "Another node" changes the data underneath the device (the file behind the loop device).
    python3 -c "import os; f=os.open('$W/rc.img', os.O_WRONLY); os.pwrite(f, b'\x42'*4096, 0); os.fsync(f); os.close(f)"
    stale=$(head -c 1 "$LOOPDEV" | od -An -tx1 | tr -d ' ')
    [ "$stale" = 41 ] && ok "setup: the device's page cache holds stale 0x41 (the file has 0x42)" \
      || fail "setup: expected a stale 0x41 in the device's page cache, read 0x$stale"
    PORT_R=$(pick_free_port) || die "no free port"
    "$GATEWAY_BIN" serve --listen "127.0.0.1:$PORT_R" --iqn "$IQN" --lun "$LOOPDEV,read_cache=on" \
      --data-dir "$W/rc-data" >"$SUITE_LOG_DIR/gateway-rc.log" 2>&1 &
    R=$!
    PIDS+=("$R")
    echo "$R gateway $PORT_R" >>"$SUITE_LOG_DIR/target.pids"
    wait_for 10 port_listening "$PORT_R" || fail "read-cache gateway did not listen"
    check "read cache on $LOOPDEV: iSCSI reads the new data (0x42), not the cached page" \
      timeout "$T" qemu-io -f raw -c 'read -P 0x42 0 4096' "iscsi://127.0.0.1:$PORT_R/$IQN/0"
    kill -TERM "$R"
    wait_for 10 bash -c "! kill -0 $R" || fail "gateway $R did not exit"

    echo "-- direct=off on a block device: stale pages dropped, writes acknowledged from the page cache, flushes reach the device"
    # Stale page again (0x43 cached, 0x44 underneath), now for buffered reads and writes.
    python3 -c "import os; f=os.open('$LOOPDEV', os.O_WRONLY); os.pwrite(f, b'\x43'*4096, 0); os.fsync(f); os.close(f)"
    head -c 4096 "$LOOPDEV" >/dev/null
    python3 -c "import os; f=os.open('$W/rc.img', os.O_WRONLY); os.pwrite(f, b'\x44'*4096, 0); os.fsync(f); os.close(f)"
    stale=$(head -c 1 "$LOOPDEV" | od -An -tx1 | tr -d ' ')
    [ "$stale" = 43 ] || fail "setup: expected a stale 0x43 in the device's page cache, read 0x$stale"
    "$GATEWAY_BIN" serve --listen "127.0.0.1:$PORT_R" --iqn "$IQN" --lun "$LOOPDEV,direct=off" \
      --data-dir "$W/rc-data" --log-level info >"$SUITE_LOG_DIR/gateway-wb.log" 2>&1 &
    R=$!
    PIDS+=("$R")
    echo "$R gateway $PORT_R" >>"$SUITE_LOG_DIR/target.pids"
    wait_for 10 port_listening "$PORT_R" || fail "direct=off gateway did not listen"
    URL_WB="iscsi://127.0.0.1:$PORT_R/$IQN/0"
    check "direct=off on $LOOPDEV: iSCSI reads the new data (0x44), not the cached page" \
      timeout "$T" qemu-io -f raw -c 'read -P 0x44 0 4096' "$URL_WB"
    # What the device below has (the loop device's backing file), one byte at OFFSET.
    below() { od -An -tx1 -j "$1" -N 1 "$W/rc.img" | tr -d ' '; }
    # qemu-io defaults to write-through (a flush after every write): `-t writeback` sends only
    # the flushes asked for. It also flushes when it closes the image; `abort` ends it without
    # that (no core dump wanted; stdbuf, since abort loses buffered output).
    wb_write() { # QEMU-IO-COMMANDS...: runs them, then aborts; true when every write completed
      local args=() c n=0
      for c in "$@"; do args+=(-c "$c"); [[ $c == write* ]] && n=$((n + 1)); done
      local out
      out=$(ulimit -c 0; timeout "$T" stdbuf -oL qemu-io -t writeback -f raw "${args[@]}" -c abort "$URL_WB" 2>&1)
      [ "$(grep -c '^wrote 4096/4096' <<<"$out")" = "$n" ]
    }
    wb_write 'write -P 0x61 64k 4k' || fail "direct=off: write of 0x61 not acknowledged"
    [ "$(below 65536)" = 00 ] && ok "direct=off: an acknowledged write without FUA or flush is still only in the page cache (write-back)" \
      || fail "direct=off: the device below already has 0x$(below 65536) after a plain write: not write-back"
    check "direct=off: iSCSI reads the acknowledged write (0x61) back" \
      timeout "$T" qemu-io -f raw -c 'read -P 0x61 64k 4k' "$URL_WB"
    wb_write 'write -P 0x62 128k 4k' 'flush' 'write -P 0x65 320k 4k' || fail "direct=off: writes around the flush not acknowledged"
    [ "$(below 131072)" = 62 ] && [ "$(below 65536)" = 61 ] \
      && ok "direct=off: SYNCHRONIZE CACHE wrote every earlier write to the device below (0x61, 0x62)" \
      || fail "direct=off: after SYNCHRONIZE CACHE the device below has 0x$(below 65536)/0x$(below 131072), not 61/62"
    wb_write 'write -f -P 0x63 192k 4k' || fail "direct=off: FUA write not acknowledged"
    [ "$(below 196608)" = 63 ] && ok "direct=off: a FUA write is on the device below when acknowledged" \
      || fail "direct=off: FUA write acknowledged but the device below has 0x$(below 196608)"
    wb_write 'write -P 0x64 256k 4k' || fail "direct=off: write of 0x64 not acknowledged"
    [ "$(below 262144)" = 00 ] || fail "direct=off: 0x64 reached the device below before any flush"
    # A clean stop flushes: the device stays open here (fd 9), so its last close cannot.
    kill -TERM "$R"
    wait_for 10 bash -c "! kill -0 $R" || fail "gateway $R did not exit"
    [ "$(below 262144)" = 64 ] && ok "direct=off: a clean stop flushed the acknowledged write (0x64) to the device below" \
      || fail "direct=off: after a clean stop the device below has 0x$(below 262144), not 64"
    exec 9<&-
  fi
fi

checks_summary "drbd ($(suite_elapsed)s)"
