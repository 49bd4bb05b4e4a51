#!/bin/sh
# Guest script for ../shared/kernel-initiator run.sh --script (busybox sh, inside the VM).
# On the SECOND data LUN (highest LUN number among $DISKS): mkfs.ext4 + e2fsck (and a file via
# debugfs or a mount when the image has them), blkdiscard of a range, sg_vpd pages 0x83/0xb0/0xb2,
# sg_readcap -l, and a persistent-reservation cycle with sg_persist (register, reserve, read,
# release, unregister). Expectations per target kind (ki.kind=gateway|tgt on the kernel command
# line): the gateway must do all of it; tgt lacks thin provisioning (blkdiscard is only reported).
KIND=$(sed -n 's/.*ki\.kind=\([a-z]*\).*/\1/p' /proc/cmdline); KIND=${KIND:-gateway}
FAILS=0
ok() { echo "GUEST-OK: $*"; }
bad() { echo "GUEST-FAIL: $*"; FAILS=$((FAILS + 1)); }
soft() { if [ "$KIND" = gateway ]; then bad "$*"; else echo "GUEST-NOTE ($KIND, not required): $*"; fi; }
# expect DESC PATTERN CMD...: CMD succeeds and its output matches the extended regex PATTERN
expect() {
  d=$1; p=$2; shift 2
  out=$("$@" 2>&1); rc=$?
  echo "$out" | sed 's/^/   | /' | head -40
  if [ $rc -eq 0 ] && echo "$out" | grep -Eq "$p"; then ok "$d"; else bad "$d (exit $rc, want /$p/)"; fi
}

echo "target kind: $KIND; disks: $DISKS"
D2=""; best=-1
for d in $DISKS; do
  n=${d#/dev/}; hctl=$(basename "$(readlink -f /sys/block/$n/device)"); lun=${hctl##*:}
  echo "   $d hctl=$hctl"
  [ "$lun" -gt "$best" ] && { best=$lun; D2=$d; }
done
set -- $DISKS
[ $# -ge 2 ] && ok "two disks visible" || bad "expected two disks, have: $DISKS"
[ -b "$D2" ] || { bad "no second LUN"; echo "GUEST-FAILS=$FAILS"; exit 1; }
echo "second LUN: $D2 (LUN $best)"

echo "-- filesystem"
expect "mkfs.ext4 on $D2" "" mkfs.ext4 -F -q -E nodiscard "$D2"
expect "e2fsck -f -n after mkfs is clean" "" e2fsck -f -n "$D2"
if command -v debugfs >/dev/null 2>&1; then
  echo "hello from the kernel initiator" > /tmp/hello.txt
  expect "debugfs writes a file" "" debugfs -w -R "write /tmp/hello.txt hello.txt" "$D2"
  expect "debugfs reads it back" "hello from the kernel initiator" debugfs -R "cat hello.txt" "$D2"
  expect "e2fsck -f -n after writing a file is clean" "" e2fsck -f -n "$D2"
elif grep -qw ext4 /proc/filesystems; then
  mkdir -p /mnt/t && mount -t ext4 "$D2" /mnt/t && dd if=/dev/urandom of=/mnt/t/f bs=1M count=8 2>/dev/null && md5sum /mnt/t/f > /tmp/sum &&
    umount /mnt/t && mount -t ext4 "$D2" /mnt/t && md5sum -c /tmp/sum >/dev/null 2>&1 && umount /mnt/t &&
    ok "mount, write 8 MiB file, remount, checksum matches" || bad "mount/write/remount"
  expect "e2fsck -f -n after writing a file is clean" "" e2fsck -f -n "$D2"
else
  echo "   (no debugfs and no ext4 mount support in the image: mkfs + e2fsck only)"
fi

echo "-- discard"
n=${D2#/dev/}
echo "   discard_max_bytes=$(cat /sys/block/$n/queue/discard_max_bytes) discard_granularity=$(cat /sys/block/$n/queue/discard_granularity)"
dd if=/dev/urandom of=/tmp/r bs=1M count=4 2>/dev/null
dd if=/tmp/r of="$D2" bs=1M seek=64 oflag=direct 2>/dev/null
if blkdiscard -o $((64 * 1048576)) -l $((4 * 1048576)) "$D2" 2>/tmp/bd.err; then
  ok "blkdiscard -o 64M -l 4M"
  lbprz=$(sg_readcap -l "$D2" 2>/dev/null | sed -n 's/.*LBPRZ=\([01]\).*/\1/p')
  dd if="$D2" of=/tmp/z bs=1M skip=64 count=4 iflag=direct 2>/dev/null
  if [ "$(od -An -tx1 -v /tmp/z | tr -d ' \n' | tr -d 0)" = "" ]; then ok "discarded range reads zeros"
  elif [ "$lbprz" = 1 ]; then bad "discarded range not zero although LBPRZ=1"
  else echo "   discarded range not zeroed (LBPRZ=${lbprz:-?}: allowed)"; fi
else
  soft "blkdiscard failed: $(cat /tmp/bd.err)"
fi
# a filesystem-level check that the discard did not touch anything outside its range
expect "e2fsck -f -n after discard is clean" "" e2fsck -f -n "$D2"

echo "-- VPD and capacity"
expect "sg_vpd 0x83 has an NAA designator" "NAA" sg_vpd -p 0x83 "$D2"
expect "sg_vpd 0xb0 block limits" "[Bb]lock limits|Maximum transfer length" sg_vpd -p 0xb0 "$D2"
out=$(sg_vpd -p 0xb2 "$D2" 2>&1); rc=$?; echo "$out" | sed 's/^/   | /'
if [ $rc -eq 0 ] && echo "$out" | grep -qi "provisioning"; then ok "sg_vpd 0xb2 logical block provisioning"
else soft "sg_vpd 0xb2 (exit $rc)"; fi
if [ "$KIND" = gateway ]; then
  expect "gateway: 0xb2 reports LBPU=1 (UNMAP)" "Unmap command supported \(LBPU\): 1" sg_vpd -p 0xb2 "$D2"
fi
expect "sg_readcap -l: 512-byte blocks" "Logical block length=512" sg_readcap -l "$D2"

echo "-- persistent reservations"
K=0x1234abcd
expect "PR IN read keys (none yet)" "PR generation" sg_persist --in -k "$D2"
expect "PR OUT register key $K" "" sg_persist --out --register --param-sark=$K "$D2"
expect "read keys shows $K" "$K" sg_persist --in -k "$D2"
expect "PR OUT reserve (Write Exclusive, type 1)" "" sg_persist --out --reserve --param-rk=$K --prout-type=1 "$D2"
expect "read reservation: held by $K, Write Exclusive" "Key=$K" sg_persist --in -r "$D2"
sg_persist --in -r "$D2" 2>&1 | grep -qi "write exclusive" && ok "reservation type is Write Exclusive" || bad "reservation type not Write Exclusive"
dd if=/dev/zero of="$D2" bs=512 count=1 seek=2048 oflag=direct 2>/dev/null && ok "the reservation holder can write" || bad "holder's write failed"
expect "PR OUT release" "" sg_persist --out --release --param-rk=$K --prout-type=1 "$D2"
expect "no reservation after release" "NO reservation" sg_persist --in -r "$D2"
expect "PR OUT unregister (service action key 0)" "" sg_persist --out --register --param-rk=$K --param-sark=0 "$D2"
expect "no keys after unregister" "NO registered reservation keys" sg_persist --in -k "$D2"

echo "GUEST-FAILS=$FAILS"
[ $FAILS -eq 0 ]
