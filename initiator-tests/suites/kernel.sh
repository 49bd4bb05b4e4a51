#!/usr/bin/env bash
# The Linux kernel initiator (open-iscsi in a VM, ../shared/kernel-initiator) against a target with
# two 1 GiB LUNs:
#   1. node 1 does what Proxmox does for shared LVM (scripts/proxmox-shared-lvm.sh);
#   2. node 2 (another InitiatorName) sees that VG and its LV (scripts/second-node-sees-vg.sh);
#   2b. lvm-guide/README.md's commands and open-iscsi timeouts (guest/lvm-guide.sh);
#   3. guest/fs-and-vpd.sh: ext4 on LUN 2, blkdiscard, sg_vpd 0x83/0xb0/0xb2, sg_readcap, a
#      persistent-reservation cycle with sg_persist;
#   4. HeaderDigest and DataDigest CRC32C negotiated, 16 MiB round trip (guest/digests.sh);
#   5. (gateway) persistent reservations kept across a gateway restart (guest/pr-take.sh, pr-check.sh);
#   6. (gateway) write-back LUNs (direct=off): the kernel sees WCE=1 and FUA, its fsyncs arrive as
#      SYNCHRONIZE CACHE (counted in the metrics), data and ext4 survive (guest/write-back.sh).
# KI_DIR (default <repo>/../shared/kernel-initiator); absent: prints SKIP and returns 0 (the
# summary shows SKIPPED). KERNEL_RUNS selects runs (comma list). KI_TIMEOUT per VM run (default 240 s).
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
KI_DIR=${KI_DIR:-$REPO_DIR/../shared/kernel-initiator}
if [ ! -x "$KI_DIR/run.sh" ]; then
  echo "############################################################"
  mark_skipped "kernel-initiator harness not found at $KI_DIR (set KI_DIR)"
  echo "############################################################"
  exit 0
fi
KI_DIR=$(cd "$KI_DIR" && pwd)
KT=${KI_TIMEOUT:-240}

target_start 2 1G || exit 1

# vm NAME ARGS...: one VM run, console log kept in $SUITE_LOG_DIR/ki-NAME.log
vm() {
  local name=$1; shift
  local log="$SUITE_LOG_DIR/ki-$name.log" t0=$SECONDS rc=0
  KI_EXTRA_CMDLINE="ki.kind=$TARGET_KIND ${KI_EXTRA_CMDLINE:-}" \
    timeout --kill-after=10 $((KT + 30)) "$KI_DIR/run.sh" "$TARGET_PORT" --target "$TARGET_IQN" \
    --timeout "$KT" --log "$log" "$@" >"$SUITE_LOG_DIR/ki-$name.out" 2>&1 || rc=$?
  grep -E 'GUEST-(OK|FAIL|NOTE)|KI-RESULT' "$log" 2>/dev/null | sed 's/\r$//; s/^/        | /'
  if [ "$rc" -eq 0 ] && grep -q 'KI-RESULT: PASS' "$log" 2>/dev/null; then
    ok "$name: KI-RESULT: PASS ($((SECONDS - t0))s)"
  else
    fail "$name: exit $rc ($((SECONDS - t0))s), log $log"
    tail -n 15 "$SUITE_LOG_DIR/ki-$name.out" | sed 's/^/        | /'
  fi
}

# KERNEL_RUNS: which VM runs (default all): node1-shared-lvm,node2-sees-vg,lvm-guide,fs-and-vpd,
# digests,pr-restart,write-back
runs=",${KERNEL_RUNS:-node1-shared-lvm,node2-sees-vg,lvm-guide,fs-and-vpd,digests,pr-restart,write-back},"
want() { [[ $runs == *",$1,"* ]]; }
want node1-shared-lvm && vm node1-shared-lvm --script "$KI_DIR/scripts/proxmox-shared-lvm.sh"
want node2-sees-vg && vm node2-sees-vg --initiator iqn.2026-11.test.kernel-initiator:node2 --script "$KI_DIR/scripts/second-node-sees-vg.sh"
# lvm-guide/README.md's commands, with the open-iscsi timeouts it recommends (they must be in effect)
want lvm-guide && vm lvm-guide --opt node.session.timeo.replacement_timeout=15 \
  --opt 'node.conn[0].timeo.noop_out_interval=5' --opt 'node.conn[0].timeo.noop_out_timeout=10' \
  --script "$IT_DIR/guest/lvm-guide.sh"
want fs-and-vpd && vm fs-and-vpd --script "$IT_DIR/guest/fs-and-vpd.sh"
want digests && vm digests --opt 'node.conn[0].iscsi.HeaderDigest=CRC32C' --opt 'node.conn[0].iscsi.DataDigest=CRC32C' --script "$IT_DIR/guest/digests.sh"
# Persistent reservations survive a gateway restart on the same config (the gateway keeps
# them under its data dir's state/; tgt does not persist them, so gateway only).
if [ "$TARGET_KIND" = gateway ] && want pr-restart; then
  vm pr-take --script "$IT_DIR/guest/pr-take.sh"
  KEEP_BACKING=1
  saved_work=$TARGET_WORK saved_backing=("${TARGET_BACKING[@]}")
  target_stop
  KEEP_BACKING=
  TARGET_WORK=$saved_work TARGET_BACKING=("${saved_backing[@]}")
  _target_start_gateway 1G && ok "gateway restarted on the same config" || fail "gateway restart"
  vm pr-kept-after-restart --script "$IT_DIR/guest/pr-check.sh"
fi
# Write-back mode: the same two LUNs served with direct=off (page cache, WCE=1), metrics on.
if [ "$TARGET_KIND" = gateway ] && want write-back; then
  target_stop
  MPORT=$(pick_free_port)
  while [ "$MPORT" = "$TARGET_PORT" ]; do MPORT=$(pick_free_port); done
  GATEWAY_LUN_SUFFIX=",size=1G,direct=off" GATEWAY_EXTRA_ARGS="--metrics-listen 127.0.0.1:$MPORT" \
    target_start 2 1G || exit 1
  for ((i = 0; i < 50; i++)); do port_listening "$MPORT" && break; sleep 0.1; done
  # flushes: SYNCHRONIZE CACHE commands counted for LUN 0 so far.
  flushes() {
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
      "http://127.0.0.1:$MPORT/metrics" |
      awk -v want="iscsi_gateway_lun_flush_commands_total{target=\"$TARGET_IQN\",lun=\"0\"}" '$1 == want { print $2 }'
  }
  f0=$(flushes)
  vm write-back --script "$IT_DIR/guest/write-back.sh"
  f1=$(flushes)
  check "LUN 0 received SYNCHRONIZE CACHE from the kernel's fsync (flush count $f0 -> $f1)" \
    test "${f1:-0}" -gt "${f0:-0}"
fi
check "target still running" target_alive
checks_summary "kernel ($(suite_elapsed)s)"
