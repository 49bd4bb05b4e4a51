#!/usr/bin/env bash
# Resource limits and timeouts of the gateway ([limits] and [iscsi] timers), with raw clients
# (tools/badclient.py) and libiscsi's iscsi-inq: the connection cap (over-cap connections closed
# at once), the per-initiator session cap (login status 0x0302), the login timeout (silent
# client, half a login), the NOP-In ping timeout (a client that stops answering), and a client
# that sends READs but never reads the responses: the gateway's memory stays bounded by
# max_outgoing_backlog (VmHWM before/after, against a second run with a 1 GiB backlog to show
# the measure can fail) and the connection is dropped after write_timeout_secs; and the command
# data budget (max_command_data): with a WRITE stalled on a frozen file system holding all of it,
# the connection still answers a NOP-Out and an ABORT TASK, and holds a new TEST UNIT READY until
# the abort frees the budget. After each case a normal iscsi-inq must work. Gateway only (the
# limits are its configuration).
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
if [ "$TARGET_KIND" != gateway ]; then mark_skipped "limits are gateway configuration"; exit 0; fi
need iscsi-inq python3
BC=(python3 "$IT_DIR/tools/badclient.py")
IQN=iqn.2026-11.test.initiator-tests:limits

# start_gateway BACKLOG [LUN_PATH]: a gateway with small limits so each one is reached quickly;
# BACKLOG is also its max_command_data. NOP_INTERVAL overrides the 1 s ping interval.
start_gateway() {
  TARGET_PORT=$(pick_free_port) || { fail "no free port"; return 1; }
  TARGET_WORK=$(mktemp -d "${TARGET_TMPDIR:-/tmp}/it-limits.XXXXXX")
  cat >"$TARGET_WORK/gw.toml" <<TOML
[server]
listen = ["127.0.0.1:$TARGET_PORT"]
data_dir = "$TARGET_WORK/data"
[iscsi]
login_timeout_secs = 3
nop_interval_secs = ${NOP_INTERVAL:-1}
nop_timeout_secs = 2
[limits]
max_connections = 6
max_sessions_per_initiator = 2
max_outgoing_backlog = "$1"
max_command_data = "$1"
write_timeout_secs = 5
[[target]]
iqn = "$IQN"
[[target.lun]]
path = "${2:-$TARGET_WORK/lun0.img}"
size = "1G"
block_size = 512
TOML
  target_start_config "$TARGET_WORK/gw.toml" "$IQN"
}

inq_works() {
  target_alive || { fail "$1: target process died"; return; }
  if timeout 20 iscsi-inq "iscsi://127.0.0.1:$TARGET_PORT/$IQN/0" >/dev/null 2>&1; then
    ok "$1: afterwards iscsi-inq works"
  else
    fail "$1: afterwards iscsi-inq fails"
  fi
}

# in_range VALUE LO HI (decimals allowed)
in_range() { python3 -c "import sys; v,lo,hi=map(float,sys.argv[1:]); sys.exit(0 if lo<=v<=hi else 1)" "$1" "$2" "$3"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$TARGET_PID/status"; }

start_gateway 8M || exit 1
inq_works "start"

echo "-- connection cap: max_connections = 6, 10 connections at once"
out=$(timeout 30 "${BC[@]}" --port "$TARGET_PORT" connections --count 10 --hold 2 2>&1 &
      sleep 1.2; timeout 10 iscsi-inq "iscsi://127.0.0.1:$TARGET_PORT/$IQN/0" >/dev/null 2>&1 && echo "INQ-WHILE-FULL ok" || echo "INQ-WHILE-FULL refused"; wait)
echo "$out" | sed 's/^/        | /'
echo "$out" | grep -q "CONNECTIONS open=6 closed=4" && ok "6 connections served, 4 closed at once" || fail "connection cap not enforced as 6 open / 4 closed"
echo "$out" | grep -q "INQ-WHILE-FULL refused" && ok "a 7th initiator is refused while the cap is reached" || fail "iscsi-inq got through while 6 connections were open"
grep -q "limits.max_connections reached" "$TARGET_LOG" && ok "refusal logged" || fail "no log line for refused connections"
sleep 0.5
inq_works "connection cap"

echo "-- sessions per initiator: max_sessions_per_initiator = 2, 3 logins of one InitiatorName"
out=$(timeout 30 "${BC[@]}" --port "$TARGET_PORT" --iqn "$IQN" sessions --count 3 --hold 1 2>&1)
echo "$out" | sed 's/^/        | /'
if echo "$out" | grep -q "SESSIONS ok=2 refused=1" && echo "$out" | grep -q "2:login_refused:_status_class_0x03_detail_0x02"; then
  ok "third session refused with status 0x0302 (out of resources)"
else
  fail "session cap: expected 2 ok and the third refused with 0x0302"
fi
inq_works "session cap"

echo "-- login timeout (login_timeout_secs = 3)"
for mode in silent half; do
  flag=(); [ "$mode" = half ] && flag=(--half)
  out=$(timeout 40 "${BC[@]}" --port "$TARGET_PORT" --iqn "$IQN" login-timeout "${flag[@]}" --bound 20 2>&1)
  echo "        | $mode: $out"
  t=$(echo "$out" | sed -n 's/^CLOSED after \([0-9.]*\) s$/\1/p')
  if [ -n "$t" ] && in_range "$t" 2.5 6; then ok "$mode client dropped after ${t}s"; else fail "$mode client not dropped within 2.5..6 s"; fi
done
inq_works "login timeout"

echo "-- NOP-In timeout (nop_interval_secs = 1, nop_timeout_secs = 2): a client that stops answering"
out=$(timeout 40 "${BC[@]}" --port "$TARGET_PORT" --iqn "$IQN" nop-silent --bound 20 2>&1)
echo "        | $out"
t=$(echo "$out" | sed -n 's/^NOPIN count=[1-9][0-9]* closed_after=\([0-9.]*\)$/\1/p')
if [ -n "$t" ] && in_range "$t" 2 8; then ok "silent client pinged and dropped after ${t}s"; else fail "silent client not pinged and dropped within 2..8 s"; fi
grep -q "did not answer NOP-In ping" "$TARGET_LOG" && ok "ping timeout logged" || fail "no log line for the ping timeout"
inq_works "NOP-In timeout"

# no_read LABEL: 128 READs of 4 MiB never read; prints the VmHWM growth in MiB into $growth.
no_read() {
  local before after
  before=$(hwm_kib)
  out=$(timeout 60 "${BC[@]}" --port "$TARGET_PORT" --iqn "$IQN" no-read --count 128 --size $((4 << 20)) --hold 10 --bound 15 2>&1)
  echo "$out" | sed 's/^/        | /'
  after=$(hwm_kib)
  growth=$(((after - before) / 1024))
  echo "        | $1: VmHWM ${before} KiB -> ${after} KiB (+${growth} MiB)"
}

echo "-- a client that never reads its READ responses (max_outgoing_backlog = 8M, write_timeout_secs = 5)"
no_read "backlog 8M"
echo "$out" | grep -q "NOREAD sent=128" && ok "128 READs of 4 MiB sent" || fail "could not send the READs"
if echo "$out" | grep -Eq "closed_after<=([0-9]|1[0-9])\."; then ok "non-reading client dropped (write timeout)"; else fail "non-reading client not dropped within 20 s"; fi
if ! echo "$out" | grep -q "NOREAD sent=128"; then fail "memory not measured (READs not sent)"
elif [ "$growth" -lt 64 ]; then ok "memory bounded: VmHWM grew ${growth} MiB (< 64 MiB; 128 x 4 MiB requested)"; else fail "VmHWM grew ${growth} MiB with an 8 MiB backlog"; fi
grep -q "did not take its responses" "$TARGET_LOG" && ok "write timeout logged" || fail "no log line for the write timeout"
inq_works "non-reading client"
bounded=$growth

echo "-- the same client against a 1 GiB backlog (shows the measure can fail)"
target_stop
start_gateway 1G || exit 1
no_read "backlog 1G"
if ! echo "$out" | grep -q "NOREAD sent=128"; then fail "1 GiB backlog: READs not sent"
elif [ "$growth" -gt $((bounded + 128)) ]; then
  ok "with a 1 GiB backlog VmHWM grew ${growth} MiB (vs ${bounded} MiB with 8M): the bound is what limits it"
else
  fail "VmHWM grew only ${growth} MiB with a 1 GiB backlog: the measure does not show the bound"
fi
inq_works "non-reading client, 1 GiB backlog"
# budget_checks OUTPUT: the checks on what `badclient.py budget-stall` printed.
budget_checks() {
  local out=$1 nop tmf tur
  if ! echo "$out" | grep -q "^BUDGET "; then
    fail "data budget: the client did not get through (a gateway that stops reading at the budget drops it on its own NOP-In timeout)"
    return
  fi
  nop=$(echo "$out" | sed -n 's/^BUDGET nop=\([0-9.]*\) .*/\1/p')
  tmf=$(echo "$out" | sed -n 's/^BUDGET .* tmf=0x00\/\([0-9.]*\) .*/\1/p')
  tur=$(echo "$out" | sed -n 's/^BUDGET .* tur=0x00\/\([0-9.]*\) .*/\1/p')
  if [ -n "$nop" ] && in_range "$nop" 0 2; then ok "NOP-Out answered in ${nop}s while a stalled WRITE holds the budget"; else fail "NOP-Out not answered within 2 s while the budget was used up"; fi
  echo "$out" | grep -q "tur_before_abort=no" && ok "a new TEST UNIT READY is held while the budget is used up" || fail "TEST UNIT READY was not held at the budget"
  if [ -n "$tmf" ] && in_range "$tmf" 0 2; then ok "ABORT TASK for the stalled WRITE answered (function complete) in ${tmf}s"; else fail "ABORT TASK not answered with function complete within 2 s"; fi
  if [ -n "$tur" ] && in_range "$tur" 0 2; then ok "the held TEST UNIT READY ran once the abort freed the budget (${tur}s)"; else fail "the held TEST UNIT READY did not complete after the abort"; fi
  echo "$out" | grep -q "write_response=no" && ok "the aborted WRITE got no response" || fail "the aborted WRITE got a response"
  echo "$out" | grep -q "window_nop_in=yes" && ok "the reopened CmdSN window was announced (NOP-In, ITT and TTT 0xffffffff)" || fail "no NOP-In announced the reopened window"
}

# wake_checks OUTPUT: the checks on what `badclient.py budget-wake` printed.
wake_checks() {
  local out=$1 first late
  if ! echo "$out" | grep -q "^WAKE "; then fail "data budget, two sessions: the client did not get through"; return; fi
  first=$(echo "$out" | sed -n 's/^WAKE b_first_tur=\([0-9.]*\) .*/\1/p')
  late=$(echo "$out" | sed -n 's/^WAKE .* b_tur=\([0-9.]*\)$/\1/p')
  if [ -n "$first" ] && in_range "$first" 0 2; then ok "a second session with nothing running is served while the budget is used up (${first}s)"; else fail "a second session with nothing running was not served at the budget"; fi
  echo "$out" | grep -q "b_held=yes" && ok "its next command is held while its own WRITE runs at the budget" || fail "the second session's command was not held at the budget"
  echo "$out" | grep -q "a_tmf=0x00" && ok "the first session's ABORT TASK completed" || fail "the first session's ABORT TASK did not complete"
  if [ -n "$late" ] && in_range "$late" 0 0.5; then ok "the budget freed by the first session woke the second, its held command answered in ${late}s"; else fail "the second session was not woken when the first freed the budget"; fi
}

# budget_stall: LUN 0 on a loop-mounted ext4 that is frozen (fsfreeze) while the client runs, so
# its 8 MiB WRITE stalls in the backend holding the whole 8 MiB max_command_data.
budget_stall() {
  if [ "$(id -u)" != 0 ] || ! command -v fsfreeze >/dev/null || ! command -v mkfs.ext4 >/dev/null; then
    echo "   skip: needs root, mkfs.ext4 and fsfreeze (a loop-mounted file system to freeze)"; return 0
  fi
  target_stop
  FRZ=$(mktemp -d "${TARGET_TMPDIR:-/tmp}/it-limits-frozen.XXXXXX")
  truncate -s 128M "$FRZ/fs.img" && mkfs.ext4 -q -F "$FRZ/fs.img" && mkdir "$FRZ/mnt" \
    && mount -o loop "$FRZ/fs.img" "$FRZ/mnt" || { fail "data budget: cannot mount a loop file system"; return; }
  # Never leave the file system frozen (or mounted), even when interrupted.
  trap 'fsfreeze -u "$FRZ/mnt" 2>/dev/null; target_stop; umount "$FRZ/mnt" 2>/dev/null' EXIT
  # Pings every 10 s only: an idle connection's ping timer must not be what wakes it.
  if NOP_INTERVAL=10 start_gateway 8M "$FRZ/mnt/lun0.img"; then
    inq_works "frozen-fs gateway start"
    fsfreeze -f "$FRZ/mnt"
    local out
    out=$(timeout 60 "${BC[@]}" --port "$TARGET_PORT" --iqn "$IQN" budget-stall --size $((8 << 20)) --bound 5 2>&1)
    echo "$out" | sed 's/^/        | /'
    budget_checks "$out"
    out=$(timeout 60 "${BC[@]}" --port "$TARGET_PORT" --iqn "$IQN" budget-wake --size $((8 << 20)) --bound 5 2>&1)
    fsfreeze -u "$FRZ/mnt"
    echo "$out" | sed 's/^/        | /'
    wake_checks "$out"
    sleep 0.5
    inq_works "data budget"
  fi
  target_stop
  umount "$FRZ/mnt" && rm -rf "$FRZ"
  trap 'target_stop' EXIT
}

echo "-- data budget (max_command_data = 8M) exhausted by a WRITE stalled on a frozen file system"
budget_stall

echo "FIGURES limits: vmhwm_growth_backlog_8M=${bounded}MiB vmhwm_growth_backlog_1G=${growth}MiB"
checks_summary "limits ($(suite_elapsed)s)"
