#!/usr/bin/env bash
# Resource limits and timeouts of the gateway ([limits] and [iscsi] timers), with raw clients
# (tools/badclient.py) and libiscsi's iscsi-inq: the connection cap (over-cap connections closed
# at once), the per-initiator session cap (login status 0x0302), the login timeout (silent
# client, half a login), the NOP-In ping timeout (a client that stops answering), and a client
# that sends READs but never reads the responses: the gateway's memory stays bounded by
# max_outgoing_backlog (VmHWM before/after, against a second run with a 1 GiB backlog to show
# the measure can fail) and the connection is dropped after write_timeout_secs. After each case
# a normal iscsi-inq must work. Gateway only (the limits are its configuration).
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
if [ "$TARGET_KIND" != gateway ]; then mark_skipped "limits are gateway configuration"; exit 0; fi
need iscsi-inq python3
BC=(python3 "$IT_DIR/tools/badclient.py")
IQN=iqn.2026-11.test.initiator-tests:limits

# start_gateway BACKLOG: a gateway with small limits so each one is reached quickly.
start_gateway() {
  TARGET_PORT=$(pick_free_port) || { fail "no free port"; return 1; }
  TARGET_WORK=$(mktemp -d "${TARGET_TMPDIR:-/tmp}/it-limits.XXXXXX")
  cat >"$TARGET_WORK/gw.toml" <<TOML
[server]
listen = ["127.0.0.1:$TARGET_PORT"]
data_dir = "$TARGET_WORK/data"
[iscsi]
login_timeout_secs = 3
nop_interval_secs = 1
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
path = "$TARGET_WORK/lun0.img"
size = "1G"
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
echo "FIGURES limits: vmhwm_growth_backlog_8M=${bounded}MiB vmhwm_growth_backlog_1G=${growth}MiB"
checks_summary "limits ($(suite_elapsed)s)"
