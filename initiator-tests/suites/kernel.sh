#!/usr/bin/env bash
# The Linux kernel initiator (open-iscsi in a VM, ../shared/kernel-initiator) against a target with
# two 1 GiB LUNs:
#   1. node 1 does what Proxmox does for shared LVM (scripts/proxmox-shared-lvm.sh);
#   2. node 2 (another InitiatorName) sees that VG and its LV (scripts/second-node-sees-vg.sh);
#   2b. lvm-guide/README.md's commands and open-iscsi timeouts (guest/lvm-guide.sh);
#   3. guest/fs-and-vpd.sh: ext4 on LUN 2, blkdiscard, sg_vpd 0x83/0xb0/0xb2, sg_readcap, a
#      persistent-reservation cycle with sg_persist;
#   4. HeaderDigest and DataDigest CRC32C negotiated, 16 MiB round trip (guest/digests.sh).
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
# digests,pr-restart
runs=",${KERNEL_RUNS:-node1-shared-lvm,node2-sees-vg,lvm-guide,fs-and-vpd,digests,pr-restart},"
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
check "target still running" target_alive
checks_summary "kernel ($(suite_elapsed)s)"
