#!/usr/bin/env bash
# The deploy/ recipes, checked as far as a machine without DRBD, Proxmox or systemd as PID 1
# allows: deploy/check.sh (systemd-analyze verify/security of the unit; the unit's hardening
# emulated while the gateway serves a loop device to iscsi-inq and qemu-io; the syscalls it
# made against the unit's SystemCallFilter; check-config of the production config; the
# drbd-reactor snippet's keys; drbdadm dump of the DRBD resource as each node; the promoter's
# start list run agent by agent in network namespaces). About 20 s.
# Gateway only (tgt: SKIPPED); needs root (losetup, unshare).
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
if [ "$TARGET_KIND" != gateway ]; then mark_skipped "deploy checks are for the gateway"; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then mark_skipped "needs root (losetup, unshare)"; exit 0; fi
need systemd-analyze strace drbdadm unshare setpriv prlimit losetup iscsi-inq qemu-io python3
out=$(timeout 120 "$REPO_DIR/deploy/check.sh" "$GATEWAY_BIN" 2>&1); rc=$?
printf '%s\n' "$out" | sed 's/^/        | /'
while IFS= read -r l; do
  case "$l" in PASS\ *) ok "${l#PASS }" ;; FAIL\ *) fail "${l#FAIL }" ;; SKIP\ * | NOTE\ *) echo "  ${l%% *}  ${l#* }" ;; esac
done <<<"$out"
[ "$rc" -eq 0 ] || fail "deploy/check.sh exit $rc"
checks_summary "deploy ($(suite_elapsed)s)"
