#!/bin/sh
# lvmlockd + sanlock on the gateway's LUN, two kernel-initiator VMs at once (lvm-guide/README.md,
# "Other environments"). The role comes from the InitiatorName: ...:node1 is host_id 1, ...:node2
# host_id 2. Needs a VM image with lvmlockd, lvmlockctl and sanlock (see
# initiator-tests/tools/lvmlockd-two-nodes.sh) and a target with two LUNs: LUN 0 carries the
# shared VG, LUN 1 is a mailbox (one 512-byte sector) through which the two VMs take turns.
#   node 1: vgcreate --shared, lvcreate -aey, says READY; waits for TRIED; deactivates, RELEASED
#   node 2: waits for READY, vgchange --lockstart, lvchange -aey must FAIL (node 1 holds the
#           lock), says TRIED; waits for RELEASED; lvchange -aey must now work, reads node 1's
#           pattern, says ACTIVE.
# The watchdog is off (sanlock -w 0): the VM has none. Never do that in production.
set -e
case "$KI_INITIATOR" in *node2) ID=2 ;; *) ID=1 ;; esac
lun() { # lun N: the /dev/sdX of LUN N
  for d in $DISKS; do
    h=$(basename "$(readlink -f /sys/block/${d#/dev/}/device)")
    [ "${h##*:}" = "$1" ] && { echo "$d"; return; }
  done
}
L0=$(lun 0); MB=$(lun 1)
[ -b "$L0" ] && [ -b "$MB" ] || { echo "GUEST-FAIL: need LUN 0 and LUN 1 (got $DISKS)"; exit 1; }
say() { printf '%-511s\n' "$1" | dd of="$MB" bs=512 count=1 oflag=direct conv=notrunc 2>/dev/null; echo "mailbox <- $1"; }
heard() { dd if="$MB" bs=512 count=1 iflag=direct 2>/dev/null | tr -d '\0' | awk '{print $1}'; }
await() { # await WORD SECONDS
  i=0; while [ "$(heard)" != "$1" ]; do
    i=$((i + 1)); [ $i -le $(($2 * 2)) ] || { echo "GUEST-FAIL: no $1 in the mailbox after $2 s (last: $(heard))"; exit 1; }
    sleep 0.5
  done; echo "mailbox -> $1 (after ~$((i / 2)) s)"
}
show() { echo "# $*"; "$@"; }
t0=$(cut -d. -f1 /proc/uptime)
el() { echo $(($(cut -d. -f1 /proc/uptime) - t0)); }

echo "### host_id $ID: lvm.conf use_lvmlockd = 1, lvmlocal.conf host_id = $ID"
sed -i 's/use_lvmlockd = 0/use_lvmlockd = 1/' /etc/lvm/lvm.conf
printf 'local {\n    host_id = %s\n}\n' "$ID" >/etc/lvm/lvmlocal.conf
mkdir -p /run/lvm /run/sanlock /var/log
show sanlock daemon -w 0 -U root -G root
show lvmlockd -g sanlock
i=0; while [ ! -S /run/lvm/lvmlockd.socket ] || [ ! -S /run/sanlock/sanlock.sock ]; do
  i=$((i + 1)); [ $i -le 40 ] || { echo "GUEST-FAIL: daemons did not start"; exit 1; }; sleep 0.5
done
echo "sanlock and lvmlockd running"

if [ "$ID" = 1 ]; then
  dd if=/dev/zero of="$MB" bs=512 count=1 oflag=direct 2>/dev/null
  dd if=/dev/zero of="$L0" bs=1M count=1 oflag=direct 2>/dev/null
  s=$(el); show vgcreate --shared vmdata "$L0"; echo "vgcreate --shared took $(($(el) - s)) s"
  show vgs -o vg_name,vg_attr,vg_lock_type,vg_lock_args vmdata
  show lvcreate -aey --yes -n vm-100-disk-0 -L 16M vmdata
  show lvs -o lv_name,lv_attr,lv_lock_args vmdata
  dd if=/dev/urandom of=/tmp/p bs=1M count=4 2>/dev/null
  dd if=/tmp/p of=/dev/vmdata/vm-100-disk-0 bs=1M oflag=direct 2>/dev/null
  md5sum /tmp/p | awk '{print $1}' >/tmp/p.md5
  echo "pattern md5 $(cat /tmp/p.md5)"
  show lvmlockctl --info | head -n 12 || true
  say "READY $(cat /tmp/p.md5)"
  await TRIED 400
  show lvchange -an vmdata/vm-100-disk-0
  say RELEASED
  await ACTIVE 200
  echo "GUEST-OK: node 1: created the shared VG, held the LV, released it to node 2"
  show vgchange --lockstop vmdata
else
  await READY 400
  want=$(dd if="$MB" bs=512 count=1 iflag=direct 2>/dev/null | tr -d '\0' | awk '{print $2}')
  s=$(el)
  # Without udev (this VM) the first lockstart activates the internal lvmlock LV but its
  # /dev/mapper node only appears when the command ends, after lvmlockd looked for it
  # ("stat error 2"); a second lockstart then finds it. With udev one call does it.
  if ! show vgchange --lockstart vmdata; then
    echo "(first lockstart failed, the no-udev artifact; again)"
    show vgchange --lockstart vmdata
  fi
  echo "vgchange --lockstart took $(($(el) - s)) s"
  # lockstart returns before the lockspace is joined; wait for it (bounded)
  i=0; until lvmlockctl --info 2>/dev/null | grep -q 'vmdata'; do
    i=$((i + 1)); [ $i -le 240 ] || { echo "GUEST-FAIL: lockspace never joined"; exit 1; }; sleep 0.5
  done
  s2=$(el)
  until lvs vmdata >/dev/null 2>&1; do
    [ $(($(el) - s2)) -le 180 ] || { echo "GUEST-FAIL: lvs vmdata keeps failing"; lvs vmdata; exit 1; }; sleep 1
  done
  echo "lockspace joined, $(($(el) - s)) s after lockstart"
  show lvs -o lv_name,lv_attr vmdata
  if lvchange -aey vmdata/vm-100-disk-0 >/tmp/e 2>&1; then
    cat /tmp/e; echo "GUEST-FAIL: node 2 activated an LV that node 1 holds"; exit 1
  fi
  echo "# lvchange -aey vmdata/vm-100-disk-0   (node 1 holds it)"; sed 's/^/  | /' /tmp/e
  echo "GUEST-OK: node 2 refused while node 1 holds the LV lock"
  say TRIED
  await RELEASED 200
  show lvchange -aey vmdata/vm-100-disk-0
  got=$(dd if=/dev/vmdata/vm-100-disk-0 bs=1M count=4 iflag=direct 2>/dev/null | md5sum | awk '{print $1}')
  [ "$got" = "$want" ] || { echo "GUEST-FAIL: pattern md5 $got, node 1 wrote $want"; exit 1; }
  echo "GUEST-OK: node 2 activated the LV after node 1 released it, node 1's pattern read back"
  say ACTIVE
  show lvchange -an vmdata/vm-100-disk-0
  show vgchange --lockstop vmdata
fi
