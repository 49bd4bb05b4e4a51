#!/usr/bin/env bash
# Failover of one gateway to another under a live kernel initiator, on one machine:
# lib/netns.sh builds namespaces node-a, node-b and client on a bridge, with a floating IP.
# Both nodes run iscsi-gateway with the same config file (same IQN, serial, backing file = the
# "replicated device", state_dir, advertise = the floating IP). The kernel-initiator VM runs in
# the client namespace (qemu and relay.pl there, portal = the floating IP) with
# guest/failover-writer.sh: it takes a Write Exclusive reservation, then writes numbered,
# checksummed 4 KiB records with O_DIRECT+fsync and prints "ACK <n> <uptime>" per completed write.
# Per run (FAILOVER_RUNS, default "clean,crash"; "powerloss" is a third, opt-in mode):
#   1. after FO_ACKS_BEFORE acks: a second gateway started on node-b with the same config must
#      refuse (backing file locked: non-zero exit, "busy" in its log, no listener) while node-a
#      keeps serving;
#   2. failover: node-a's gateway gets SIGTERM and is waited for (clean), or SIGKILL (crash),
#      or SIGKILL after node-a's link to the switch went down (powerloss: nothing from node-a
#      reaches the client, no FIN/RST; the client's next retransmission to the floating IP
#      reaches node-b, whose kernel resets the stale connection); the floating IP moves to
#      node-b (gratuitous ARP with arping -U, else a neighbour flush); the node-b gateway
#      starts (retried while the lock is still busy, bounded);
#   3. after FO_ACKS_AFTER more acks through node-b, another initiator (qemu-io, libiscsi)
#      must be refused a write (the restored reservation is enforced); the host writes a stop
#      mark into the LUN; the guest stops, checks the reservation is still held and releases
#      it; then the same foreign write must go through (control);
#   4. tools/failover_verify.py checks every acknowledged record in the backing file.
# Open-iscsi settings (FO_OPTS): replacement_timeout 30 s, NOP-Out every 5 s with a 5 s timeout.
# Each run prints "<mode>: failover: pause_ms=... acked=... lost=... corrupt=... pr_kept=...";
# the last line of the suite is the same line over all runs (max pause, sums, yes only if all).
# Goals checked: lost=0, corrupt=0, pr_kept=yes, pause_ms < FO_MAX_PAUSE_MS (default 10000).
# FO_ARP=flush moves the IP without gratuitous ARP (flushes the client's neighbour entry).
# FO_TAKEOVER_DELAY=S waits S seconds between node-a's end and the IP move (slow takeover).
# FO_BREAK=state|stale runs node-b deliberately broken (see one_run) to show the checks fail.
# Needs root (ip netns), TARGET_KIND=gateway (tgt keeps no reservations across restarts: skipped)
# and the kernel-initiator harness (KI_DIR, as suites/kernel.sh).
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
source "$IT_DIR/lib/netns.sh"
KI_DIR=${KI_DIR:-$REPO_DIR/../shared/kernel-initiator}
if [ "$TARGET_KIND" != gateway ]; then
  mark_skipped "failover needs TARGET_KIND=gateway (tgt does not keep reservations across restarts)"
  exit 0
fi
if [ ! -x "$KI_DIR/run.sh" ]; then
  mark_skipped "kernel-initiator harness not found at $KI_DIR (set KI_DIR)"
  exit 0
fi
KI_DIR=$(cd "$KI_DIR" && pwd)
[ "$(id -u)" -eq 0 ] || { mark_skipped "needs root for ip netns"; exit 0; }
need ip python3 ss timeout
[ -x "$GATEWAY_BIN" ] || die "gateway binary not found: $GATEWAY_BIN"

KT=${KI_TIMEOUT:-180}
FO_ACKS_BEFORE=${FO_ACKS_BEFORE:-40}
FO_ACKS_AFTER=${FO_ACKS_AFTER:-40}
FO_MAX_PAUSE_MS=${FO_MAX_PAUSE_MS:-10000}
FO_OPTS=${FO_OPTS:-node.session.timeo.replacement_timeout=30 node.conn[0].timeo.noop_out_interval=5 node.conn[0].timeo.noop_out_timeout=5}
FO_IQN=iqn.2026-11.test.initiator-tests:failover
FO_PORT=3260
FO_BASE=256 FO_CTL=128
VERIFY="$IT_DIR/tools/failover_verify.py"
GUEST="$IT_DIR/guest/failover-writer.sh"

GW_PID_a="" GW_PID_b="" VM_PID="" FO_WORK=""
# (SIGTERM to the VM run first: timeout passes it on to run.sh, whose exit trap removes its
# work dir; run_teardown is defined below)
fo_cleanup() {
  run_teardown
  netns_down
}
trap 'fo_cleanup; target_stop' EXIT

netns_reap_stale
# The VM image is built (cached) from the root namespace: the client namespace has no route out.
"$KI_DIR/build.sh" >/dev/null || die "kernel-initiator build failed"
if ! err=$(ip netns add "${NETNS_PREFIX}probe" 2>&1); then
  mark_skipped "cannot create network namespaces here (ip netns add: $err)"
  exit 0
fi
ip netns del "${NETNS_PREFIX}probe"
netns_up || die "could not create the network namespaces"
ok "namespaces $NS_A $NS_B $NS_C on bridge $NS_BR; floating IP $FIP"
echo "open-iscsi settings: $FO_OPTS"

ms() { echo $(($(date +%s%N) / 1000000)); }
acks() { grep -ac '^ACK ' "$1" 2>/dev/null; }
listening_in() { ip netns exec "$1" ss -Hltn "sport = :$FO_PORT" 2>/dev/null | grep -q .; }

# wait_console SECONDS LOG PATTERN: until LOG has a line matching PATTERN or the VM ended.
wait_console() {
  local secs=$1 log=$2 pat=$3 i
  for ((i = 0; i < secs * 5; i++)); do
    grep -aq -- "$pat" "$log" 2>/dev/null && return 0
    kill -0 "$VM_PID" 2>/dev/null || break
    sleep 0.2
  done
  grep -aq -- "$pat" "$log" 2>/dev/null
}
# wait_acks SECONDS LOG N: until LOG shows at least N acks.
wait_acks() {
  local secs=$1 log=$2 n=$3 i
  for ((i = 0; i < secs * 5; i++)); do
    [ "$(acks "$log")" -ge "$n" ] && return 0
    kill -0 "$VM_PID" 2>/dev/null || break
    sleep 0.2
  done
  [ "$(acks "$log")" -ge "$n" ]
}

# gw_start NODE(a|b) LOG: starts the gateway in NODE's namespace, waits until it listens.
# While the backing file is still locked by the previous gateway (it exits with "busy") the
# start is retried every 0.2 s for up to 10 s; the number of retries is printed.
gw_start() {
  local node=$1 log=$2 ns=$NETNS_PREFIX$1 pid tries=0 i st
  while :; do
    ip netns exec "$ns" "$GATEWAY_BIN" serve --config "$FO_WORK/gateway-$node.toml" \
      --log-level "${GATEWAY_LOG_LEVEL:-debug}" >>"$log" 2>&1 &
    pid=$!
    eval "GW_PID_$node=$pid"
    echo "$pid gateway $FO_PORT" >>"$SUITE_LOG_DIR/target.pids"
    for ((i = 0; i < 200; i++)); do
      listening_in "$ns" && { [ "$tries" -eq 0 ] || echo "gateway on $ns: started after $tries busy retries"; return 0; }
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && { echo "gateway on $ns did not listen within 10 s"; return 1; }
    st=0; wait "$pid" 2>/dev/null || st=$?
    if grep -q 'busy' "$log" && [ "$tries" -lt 50 ]; then
      tries=$((tries + 1)); sleep 0.2; continue
    fi
    echo "gateway on $ns exited (status $st); log tail:"; tail -n 5 "$log"
    return 1
  done
}

# refuse_check CONSOLE: a second gateway on node-b while node-a serves must refuse.
refuse_check() {
  local console=$1 log="$FO_WORK/logs/node-b-second.log" rc=0 before
  before=$(acks "$console")
  # The same config, but give up on the busy device after 1 s instead of lock_wait_secs' 10.
  sed 's/^\[server\]$/[server]\nlock_wait_secs = 1/' "$FO_WORK/gateway.toml" >"$FO_WORK/gateway-second.toml"
  ip netns exec "$NS_B" timeout 20 "$GATEWAY_BIN" serve --config "$FO_WORK/gateway-second.toml" >"$log" 2>&1 || rc=$?
  sed 's/^/        | /' "$log" | tail -n 3
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -Eq 'busy|locked by' "$log" && ! listening_in "$NS_B"; then
    ok "second gateway on node-b refused while node-a serves (exit $rc, backing file busy, no listener)"
  else
    fail "second gateway on node-b did not refuse (exit $rc; 124 = it kept running)"
  fi
  if wait_acks 30 "$console" $((before + 3)); then
    ok "node-a kept serving the writer ($before -> $(acks "$console") acks)"
  else
    fail "writes stalled after the second gateway's attempt ($(acks "$console") acks)"
  fi
}

TOTAL_PAUSE=0 TOTAL_ACKED=0 TOTAL_LOST=0 TOTAL_CORRUPT=0 TOTAL_PR=yes SELFTEST_DONE=""

# one_run MODE(clean|crash)
one_run() {
  local mode=$1 run console vmout t_kill t_up rc=0 line at img img_b o opts=()
  run_teardown
  run=$(printf '%s%04x' "${mode:0:2}" $((RANDOM % 65536)))
  FO_WORK=$(mktemp -d "${TARGET_TMPDIR:-/tmp}/it-failover.XXXXXX")
  mkdir -p "$FO_WORK/shared/state" "$FO_WORK/logs"
  img="$FO_WORK/shared/lun0.img"
  truncate -s 64M "$img"
  cat >"$FO_WORK/gateway.toml" <<EOF
# the same file for node-a and node-b (paths are shared between the namespaces)
[server]
listen = ["0.0.0.0:$FO_PORT"]
advertise = ["$FIP:$FO_PORT"]
data_dir = "$FO_WORK/node-data"
state_dir = "$FO_WORK/shared/state"
[[target]]
iqn = "$FO_IQN"
[[target.lun]]
path = "$img"
size = "64M"
serial = "FAILOVER0"
EOF
  # Both nodes use this very file, unless FO_BREAK asks for a broken node-b (to show that
  # the checks fail): "state" = node-b has an empty state_dir of its own; "stale" = node-b
  # serves a copy of the device taken a few acknowledged writes before the failover (a
  # replica that lagged behind).
  img_b=$img
  ln -sf gateway.toml "$FO_WORK/gateway-a.toml"
  case "${FO_BREAK:-}" in
    state) sed "s|^state_dir = .*|state_dir = \"$FO_WORK/other-state\"|" "$FO_WORK/gateway.toml" >"$FO_WORK/gateway-b.toml" ;;
    stale) img_b="$FO_WORK/shared/lun0-b.img"
      sed "s|^path = .*|path = \"$img_b\"|" "$FO_WORK/gateway.toml" >"$FO_WORK/gateway-b.toml" ;;
    *) ln -sf gateway.toml "$FO_WORK/gateway-b.toml" ;;
  esac
  [ -z "${FO_BREAK:-}" ] || echo "FO_BREAK=$FO_BREAK: node-b is deliberately broken; this run must fail"
  console="$SUITE_LOG_DIR/ki-failover-$mode.log"
  vmout="$SUITE_LOG_DIR/ki-failover-$mode.out"
  echo "-- run $mode (id $run, work $FO_WORK)"
  ip -n "$NS_BR" link set p-a up
  fip_move "$NS_B" "$NS_A" >/dev/null || { fail "$mode: floating IP to node-a"; return; }
  gw_start a "$SUITE_LOG_DIR/gateway-$mode-node-a.log" || { fail "$mode: gateway on node-a"; return; }
  for o in $FO_OPTS; do opts+=(--opt "$o"); done
  ip netns exec "$NS_C" env KI_EXTRA_CMDLINE="ki.kind=gateway loglevel=3 ki.fo_run=$run ki.fo_base=$FO_BASE ki.fo_ctl=$FO_CTL ki.fo_maxt=$((KT - 60))" \
    timeout --kill-after=10 $((KT + 20)) "$KI_DIR/run.sh" "$FO_PORT" --host "$FIP" --target "$FO_IQN" \
    --timeout "$KT" --log "$console" "${opts[@]}" --script "$GUEST" >"$vmout" 2>&1 &
  VM_PID=$!
  if wait_console 120 "$console" '^PR-TAKEN'; then
    ok "$mode: guest logged in through $FIP and took the reservation"
  else
    fail "$mode: no PR-TAKEN from the guest"; tail -n 15 "$vmout" | sed 's/^/        | /'
  fi
  if grep -aqx "$FIP:$FO_PORT,[0-9]* $FO_IQN" "$console"; then
    ok "$mode: SendTargets advertises the floating IP ($FIP:$FO_PORT)"
  else
    fail "$mode: SendTargets did not advertise $FIP:$FO_PORT"
  fi
  [ -s "$FO_WORK/shared/state/$FO_IQN.lun0.pr" ] && ok "$mode: reservation state stored in the shared state_dir" ||
    fail "$mode: no reservation state file in $FO_WORK/shared/state"
  if ! wait_acks 90 "$console" "$FO_ACKS_BEFORE"; then
    fail "$mode: only $(acks "$console") acks before the failover (wanted $FO_ACKS_BEFORE)"
  fi
  refuse_check "$console"

  # --- the failover
  if [ "${FO_BREAK:-}" = stale ]; then
    cp --sparse=always "$img" "$img_b"
    wait_acks 30 "$console" $(($(acks "$console") + 5))
  fi
  at=$(acks "$console")
  t_kill=$(ms)
  if [ "$mode" = clean ]; then
    kill -TERM "$GW_PID_a" 2>/dev/null
    for ((o = 0; o < 100; o++)); do kill -0 "$GW_PID_a" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$GW_PID_a" 2>/dev/null; then
      fail "$mode: node-a did not stop within 10 s of SIGTERM"; kill -KILL "$GW_PID_a"
    fi
  else
    # powerloss: node-a drops off the switch first, so the client gets no FIN/RST from it
    [ "$mode" = powerloss ] && ip -n "$NS_BR" link set p-a down
    kill -KILL "$GW_PID_a" 2>/dev/null
  fi
  wait "$GW_PID_a" 2>/dev/null
  echo "node-a gateway stopped ($([ "$mode" = clean ] && echo SIGTERM || echo SIGKILL)) at ack $at, $(($(ms) - t_kill)) ms"
  GW_PID_a=""
  # FO_TAKEOVER_DELAY: seconds node-b takes to take over (default 0; e.g. a cluster manager's
  # fencing and promotion), to see how the initiator's timeouts behave
  [ "${FO_TAKEOVER_DELAY:-0}" -gt 0 ] && sleep "$FO_TAKEOVER_DELAY"
  fip_move "$NS_A" "$NS_B"
  if gw_start b "$SUITE_LOG_DIR/gateway-$mode-node-b.log"; then
    t_up=$(ms)
    ok "$mode: node-b gateway listening $((t_up - t_kill)) ms after node-a was stopped"
  else
    fail "$mode: node-b gateway did not start"
  fi
  grep -q 'persistent reservations restored' "$SUITE_LOG_DIR/gateway-$mode-node-b.log" &&
    ok "$mode: node-b restored the reservation from the state_dir" || fail "$mode: node-b restored no reservation"
  if wait_acks 120 "$console" $((at + FO_ACKS_AFTER)); then
    ok "$mode: writes resumed through node-b ($(acks "$console") acks)"
  else
    fail "$mode: writes did not resume through node-b ($(acks "$console") acks)"
  fi
  intruder_check "$mode" "$img_b" refused
  o=$(client_neigh_mac)
  [ "$o" = "$(mac_of "$NS_B")" ] && ok "$mode: the client reaches $FIP at node-b's MAC $o" ||
    fail "$mode: the client's neighbour entry for $FIP is '$o', not node-b's $(mac_of "$NS_B")"
  # stop mark for the writer, written into the backing file behind the gateway (control slot)
  printf 'FOSTOP %s\n' "$run" | dd of="$img_b" bs=4096 seek="$FO_CTL" count=1 conv=notrunc,fsync status=none
  wait "$VM_PID" || rc=$?
  VM_PID=""
  # control: the guest released its reservation, so the same write now goes through
  intruder_check "$mode" "$img_b" allowed
  # the guest is done: stop node-b before the checker reads the file
  kill -TERM "$GW_PID_b" 2>/dev/null
  for ((o = 0; o < 100; o++)); do kill -0 "$GW_PID_b" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$GW_PID_b" 2>/dev/null && fail "$mode: node-b did not stop within 10 s of SIGTERM"
  grep -aE '^(PR-TAKEN|PR-KEPT|WRITER-END|WRITE-FAIL|KI-RESULT)' "$console" | sed 's/^/        | /'
  [ "$rc" -eq 0 ] && ok "$mode: guest finished: KI-RESULT: PASS" || fail "$mode: guest run failed (exit $rc), log $console"
  line=$(python3 "$VERIFY" --image "$img_b" --console "$console" --run "$run" --base "$FO_BASE" --verbose 2>"$FO_WORK/logs/verify.err")
  sed 's/^/        | /' "$FO_WORK/logs/verify.err"
  echo "$mode: $line"
  record_line "$mode" "$line"

  if [ -z "$SELFTEST_DONE" ] && [ -n "$line" ] && [ -z "${FO_BREAK:-}" ]; then
    verify_selftest "$img_b" "$console" "$run"
    SELFTEST_DONE=1
  fi
  run_teardown
}

# run_teardown: stops what a run left (also after an early return): VM, both gateways, files.
run_teardown() {
  local p i
  if [ -n "$VM_PID" ] && kill -TERM "$VM_PID" 2>/dev/null; then
    for ((i = 0; i < 50; i++)); do kill -0 "$VM_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  for p in "$GW_PID_a" "$GW_PID_b"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || continue
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  for p in "$VM_PID" "$GW_PID_a" "$GW_PID_b"; do
    [ -n "$p" ] && { kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; }
  done
  VM_PID="" GW_PID_a="" GW_PID_b=""
  [ -n "$FO_WORK" ] && rm -rf "$FO_WORK"
  FO_WORK=""
}

# intruder_check MODE IMG refused|allowed: another initiator (qemu-io's libiscsi driver, from
# the client namespace) writes 0x55 to 4 KiB slot FO_SPARE. "refused": while the guest holds
# its reservation, node-b must refuse it and the slot stay zeros; "allowed" (the control, after
# the guest released): it must go through and the slot hold 0x55.
FO_SPARE=64
intruder_check() {
  local mode=$1 img=$2 want=$3 out rc=0 url got
  command -v qemu-io >/dev/null || { echo "no qemu-io: intruder check not run"; return 0; }
  url="driver=iscsi,transport=tcp,portal=$FIP:$FO_PORT,target=$FO_IQN,lun=0,initiator-name=iqn.2026-11.test.initiator-tests:intruder"
  out=$(ip netns exec "$NS_C" timeout 30 qemu-io --image-opts "$url" -c "write -P 0x55 $((FO_SPARE * 4096)) 4096" 2>&1) || rc=$?
  echo "$out" | sed 's/^/        | /' | head -n 3
  got=$(dd if="$img" bs=4096 skip="$FO_SPARE" count=1 status=none | od -An -tx1 -v | tr -s ' \n' '\n' | sort -u | tr '\n' ' ')
  if [ "$want" = refused ]; then
    if [ "$rc" -ne 0 ] && [[ $out == *"write failed"* ]] && [ "$got" = " 00 " ]; then
      ok "$mode: node-b enforces the restored reservation: another initiator's write refused (exit $rc), slot still zeros"
    else
      fail "$mode: another initiator's write while the reservation is held: exit $rc, slot bytes {$got}"
    fi
  elif [ "$rc" -eq 0 ] && [ "$got" = " 55 " ]; then
    ok "$mode: control: after the release the same write goes through (slot holds 0x55)"
  else
    fail "$mode: control write after the release: exit $rc, slot bytes {$got}"
  fi
}

# record_line MODE LINE: checks one run's verdict and adds it to the totals.
record_line() {
  local mode=$1 line=$2 pause acked lost corrupt pr
  if ! [[ $line =~ ^failover:\ pause_ms=([0-9]+)\ acked=([0-9]+)\ lost=([0-9]+)\ corrupt=([0-9]+)\ pr_kept=(yes|no)$ ]]; then
    fail "$mode: no verdict from failover_verify.py"; TOTAL_PR=no; return
  fi
  pause=${BASH_REMATCH[1]} acked=${BASH_REMATCH[2]} lost=${BASH_REMATCH[3]} corrupt=${BASH_REMATCH[4]} pr=${BASH_REMATCH[5]}
  [ "$pause" -gt "$TOTAL_PAUSE" ] && TOTAL_PAUSE=$pause
  TOTAL_ACKED=$((TOTAL_ACKED + acked)) TOTAL_LOST=$((TOTAL_LOST + lost)) TOTAL_CORRUPT=$((TOTAL_CORRUPT + corrupt))
  [ "$pr" = yes ] || TOTAL_PR=no
  [ "$acked" -gt $((FO_ACKS_BEFORE + FO_ACKS_AFTER)) ] && ok "$mode: $acked acknowledged writes, across the failover" ||
    fail "$mode: only $acked acknowledged writes"
  [ "$lost" -eq 0 ] && [ "$corrupt" -eq 0 ] && ok "$mode: every acknowledged record intact" ||
    fail "$mode: lost=$lost corrupt=$corrupt"
  [ "$pr" = yes ] && ok "$mode: reservation kept across the failover" || fail "$mode: reservation not kept"
  [ "$pause" -lt "$FO_MAX_PAUSE_MS" ] && ok "$mode: I/O pause ${pause} ms < ${FO_MAX_PAUSE_MS} ms" ||
    fail "$mode: I/O pause ${pause} ms >= ${FO_MAX_PAUSE_MS} ms"
}

# verify_selftest IMG CONSOLE RUN: the checker must see a zeroed and a garbled record.
verify_selftest() {
  local img=$1 console=$2 run=$3 copy="$FO_WORK/tampered.img" out
  cp --sparse=always "$img" "$copy"
  dd if=/dev/zero of="$copy" bs=4096 seek="$FO_BASE" count=1 conv=notrunc status=none
  printf 'X' | dd of="$copy" bs=1 seek=$(((FO_BASE + 1) * 4096 + 2000)) conv=notrunc status=none
  out=$(python3 "$VERIFY" --image "$copy" --console "$console" --run "$run" --base "$FO_BASE" 2>/dev/null)
  [[ $out == *" lost=1 corrupt=1 "* ]] && ok "failover_verify.py catches a zeroed (lost) and a garbled (corrupt) record" ||
    fail "failover_verify.py missed tampering: $out"
  rm -f "$copy"
}

runs=${FAILOVER_RUNS:-clean,crash}
for mode in ${runs//,/ }; do
  case "$mode" in clean | crash | powerloss) one_run "$mode" ;; *) fail "unknown FAILOVER_RUNS mode $mode" ;; esac
done
rc=0
checks_summary "failover ($(suite_elapsed)s)" || rc=1
echo "failover: pause_ms=$TOTAL_PAUSE acked=$TOTAL_ACKED lost=$TOTAL_LOST corrupt=$TOTAL_CORRUPT pr_kept=$TOTAL_PR"
exit $rc
