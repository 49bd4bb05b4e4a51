#!/usr/bin/env bash
# Two kernel-initiator VMs at once run guest/lvmlockd-sanlock.sh against one gateway with two
# LUNs (1 GiB sparse: sanlock's internal lvmlock LV alone takes 256 MiB; 1 MiB mailbox): lvmlockd + sanlock on the shared LUN, the LV lock handed from node 1 to node 2.
# usage: lvmlockd-two-nodes.sh [GATEWAY_BINARY]
#   KI_DIR     a kernel-initiator harness whose image has lvmlockd, lvmlockctl and sanlock
#              (the shared one does not yet: add to its build.sh, after the scsi_id line,
#                copy_bin /sbin/lvmlockd /sbin/lvmlockd; copy_bin /sbin/lvmlockctl /sbin/lvmlockctl
#                copy_bin /usr/sbin/sanlock /sbin/sanlock
#              and "lvm2-lockd sanlock" to its pkgs). Default ../shared/kernel-initiator.
#   KI_CACHE   passed through to the harness (a separate image cache for such a copy).
#   KI_TIMEOUT per VM (default 420 s). Logs in $LOG_DIR (default a temp dir, kept).
# Exit 0 only if both VMs print KI-RESULT: PASS. 123 s under TCG on 2 busy cores (load 10).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KI_DIR=${KI_DIR:-$REPO/../shared/kernel-initiator}
BIN=${1:-${CARGO_TARGET_DIR:-$REPO/target}/release/iscsi-gateway}
KT=${KI_TIMEOUT:-420}
LOG_DIR=${LOG_DIR:-$(mktemp -d /tmp/lvmlockd-two-nodes.XXXXXX)}
IQN=iqn.2024-01.org.example:lockd
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$LOG_DIR/data"
"$BIN" serve --listen "127.0.0.1:$PORT" --iqn "$IQN" --data-dir "$LOG_DIR/data" \
  --lun "$LOG_DIR/data/shared.img,size=1G" --lun "$LOG_DIR/data/mailbox.img,size=1M" \
  >"$LOG_DIR/gateway.log" 2>&1 &
GW=$!
P1='' P2=''
# The VMs' qemu runs under its own `timeout` (another process group); find ours by the
# unique port on their command line and stop them by pid.
kill_vms() { local p; for p in $(pgrep -f "ki.port=$PORT " || true); do kill -TERM "$p" 2>/dev/null; done; }
trap 'kill $P1 $P2 2>/dev/null; kill_vms; kill $GW 2>/dev/null; wait $GW 2>/dev/null' EXIT
for _ in $(seq 50); do grep -q listening "$LOG_DIR/gateway.log" && break; sleep 0.2; done
grep -q listening "$LOG_DIR/gateway.log" || { cat "$LOG_DIR/gateway.log"; exit 1; }
vm() { # vm N
  exec timeout --kill-after=10 $((KT + 30)) "$KI_DIR/run.sh" "$PORT" --target "$IQN" --timeout "$KT" \
    --initiator "iqn.2026-11.test.kernel-initiator:node$1" --log "$LOG_DIR/node$1.log" \
    --script "$REPO/initiator-tests/guest/lvmlockd-sanlock.sh" >"$LOG_DIR/node$1.out" 2>&1
}
t0=$SECONDS
vm 1 & P1=$!
# node 2 boots once node 1 is logged in (it then waits for node 1's READY in the mailbox)
for _ in $(seq 240); do grep -q '== \[.*\] script' "$LOG_DIR/node1.log" 2>/dev/null && break; sleep 0.5; done
vm 2 & P2=$!
# When one node fails, the other would only wait for its mailbox word until its timeout.
rc1=0 rc2=0 rcf=0 first=
wait -n -p first $P1 $P2 || rcf=$?
[ $rcf -ne 0 ] && { kill -TERM $P1 $P2 2>/dev/null; kill_vms; }
if [ "$first" = "$P1" ]; then rc1=$rcf; wait $P2 || rc2=$?; else rc2=$rcf; wait $P1 || rc1=$?; fi
P1='' P2=''
for n in 1 2; do
  echo "---- node $n"
  sed -n '/== \[.*\] script/,$p' "$LOG_DIR/node$n.log" | tr -d '\r' | grep -v '^\[ *[0-9.]*\]' | sed 's/^/  /'
done
echo "logs: $LOG_DIR; $((SECONDS - t0)) s"
grep -q 'KI-RESULT: PASS' "$LOG_DIR/node1.log" && grep -q 'KI-RESULT: PASS' "$LOG_DIR/node2.log" \
  && [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]
