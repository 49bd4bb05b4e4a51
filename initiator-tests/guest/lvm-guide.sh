#!/bin/sh
# The commands of lvm-guide/README.md, run in the kernel-initiator VM (busybox sh) so the guide
# shows real output. Run with the open-iscsi settings the guide recommends, e.g.
#   run.sh PORT --target IQN --script initiator-tests/guest/lvm-guide.sh \
#     --opt node.session.timeo.replacement_timeout=15 \
#     --opt 'node.conn[0].timeo.noop_out_interval=5' --opt 'node.conn[0].timeo.noop_out_timeout=10'
# 1. every node.* setting given with --opt (ki.opt= on /proc/cmdline) is what the kernel uses
#    (sysfs: session recovery_tmo, connection ping_tmo/recv_tmo);
# 2. what Proxmox runs for a shared LVM storage and a VM disk: pvcreate, vgcreate, lvcreate,
#    lvs/vgs in Proxmox's formats, activation, resize with --refresh, removal;
# 3. an LVM filter that hides the LUN (what a DRBD node needs for its backing device).
set -e
D1=${D:-${DISKS%% *}}
[ -b "$D1" ] || { echo "GUEST-FAIL: no iSCSI disk"; exit 1; }
K=$(readlink -f "$D1")   # the kernel name, /dev/sdX
step() { echo "### $*"; }
show() { echo "# $*"; "$@"; }

step "1. open-iscsi timeouts in effect"
S=$(ls -d /sys/class/iscsi_session/session* | head -n 1)
C=$(ls -d /sys/class/iscsi_connection/connection* | head -n 1)
rt=$(cat "$S/recovery_tmo"); pi=$(cat "$C/ping_tmo"); ri=$(cat "$C/recv_tmo")
echo "recovery_tmo=$rt (replacement_timeout)  ping_tmo=$pi (noop_out_timeout)  recv_tmo=$ri (noop_out_interval)"
want() { # want SETTING VALUE: if SETTING was given with --opt, VALUE must equal it
  v=$(tr ' ' '\n' </proc/cmdline | sed -n "s/^ki\.opt=$1=//p" | tail -n 1)
  [ -z "$v" ] && return 0
  [ "$v" = "$2" ] || { echo "GUEST-FAIL: $1 asked $v, kernel uses $2"; exit 1; }
  echo "GUEST-OK: $(echo "$1" | tr -d '\\')=$v in effect"
}
want 'node.session.timeo.replacement_timeout' "$rt"
want 'node.conn\[0\].timeo.noop_out_timeout' "$pi"
want 'node.conn\[0\].timeo.noop_out_interval' "$ri"
echo "# iscsiadm -m node -T TARGET -o show | grep -E 'replacement_timeout|noop_out'"
iscsiadm -m node -T "${KI_TARGET:-${TARGETS%% *}}" -o show | grep -E 'replacement_timeout|noop_out' || true
echo "SCSI command timeout of $K: $(cat /sys/block/${K#/dev/}/device/timeout) s"

step "2. shared LVM as Proxmox creates it"
# Test housekeeping, not part of the guide: an earlier run of this suite (node1-shared-lvm) leaves
# a VG vmdata on one of the LUNs, and which LUN is $D1 changes from boot to boot.
if vgs vmdata >/dev/null 2>&1; then
  echo "# (setup) removing the VG vmdata an earlier run left"
  vgchange -an vmdata >/dev/null 2>&1 || true
  vgremove -ff -y vmdata >/dev/null
fi
ID=$(/lib/udev/scsi_id --whitelisted --device="$D1")
echo "base volume: scsi-$ID"
dd if=/dev/zero of="$D1" bs=512 count=1 conv=fsync 2>/dev/null
show pvcreate --metadatasize 250k -y -ff "$D1"
show vgcreate vmdata "$D1"
show lvcreate -aly -Wy --yes --size 32768k --name vm-100-disk-0 vmdata
show vgs --separator : --noheadings --units b --unbuffered --nosuffix --options vg_name,vg_size,vg_free,lv_count vmdata
show lvs --separator : --noheadings --units b --unbuffered --nosuffix --options lv_name,lv_size,lv_attr,vg_name vmdata
L=/dev/vmdata/vm-100-disk-0
[ -b "$L" ] || L=/dev/mapper/vmdata-vm--100--disk--0
dd if=/dev/urandom of=/tmp/p bs=1M count=8 2>/dev/null
dd if=/tmp/p of="$L" bs=1M oflag=direct 2>/dev/null
dd if="$L" of=/tmp/q bs=1M count=8 iflag=direct 2>/dev/null
cmp /tmp/p /tmp/q && echo "GUEST-OK: 8 MiB through the LV read back identical"
step "   VM stops / migrates away: deactivate; the target node activates"
show lvchange -an vmdata/vm-100-disk-0
show lvs -o lv_name,lv_attr vmdata
show lvchange -aey vmdata/vm-100-disk-0
step "   disk resize: lvextend, then --refresh on the node where the LV is active"
show lvextend -L +16M vmdata/vm-100-disk-0
show lvchange --refresh vmdata/vm-100-disk-0
sz=$(blockdev --getsize64 "$L")
[ "$sz" = $((48 * 1024 * 1024)) ] || { echo "GUEST-FAIL: LV size $sz after extend"; exit 1; }
echo "GUEST-OK: LV is 48 MiB after lvextend"

step "3. an LVM filter that rejects the LUN: vmdata disappears for this command"
show pvs -o pv_name,vg_name
if vgs --config "devices { global_filter = [ \"r|^$K\$|\", \"r|/dev/disk/|\", \"a|.*|\" ] }" vmdata >/tmp/f 2>&1; then
  cat /tmp/f; echo "GUEST-FAIL: filtered vgs still sees vmdata"; exit 1
fi
sed 's/^/  | /' /tmp/f
echo "GUEST-OK: with the filter, vmdata is not found"

step "4. removal (Proxmox: remove disk, remove storage)"
show lvchange -an vmdata/vm-100-disk-0
show lvremove -y vmdata/vm-100-disk-0
show vgremove -y vmdata
show pvremove -y "$D1"
echo "GUEST-OK: lvm-guide commands done"
