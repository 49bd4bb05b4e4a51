#!/bin/sh
# Kernel-initiator guest step after a gateway restart: the registration and reservation taken
# by pr-take.sh are still in force; then release and unregister (leave the LUN clean).
set -e
# Use LUN 0 by its SCSI address (H:C:T:L in sysfs): the order of sda/sdb, and so $D, can
# differ from one boot to the next, and this check spans two boots.
D=""
for b in /sys/block/sd*; do
  case "$(basename "$(readlink -f "$b/device")")" in *:0) D=/dev/$(basename "$b") ;; esac
done
[ -b "$D" ] || { echo "GUEST-FAIL: no disk for LUN 0"; exit 1; }
sg_persist --in --read-keys "$D" >/tmp/keys 2>&1 || sg_persist --in --read-keys "$D" >/tmp/keys
grep -q 0xabc123 /tmp/keys || { cat /tmp/keys; echo "GUEST-FAIL: key lost"; exit 1; }
echo "GUEST-OK: key 0xabc123 still registered after restart"
sg_persist --in --read-reservation "$D" >/tmp/res
grep -q 0xabc123 /tmp/res && grep -qi "write exclusive" /tmp/res ||
  { cat /tmp/res; echo "GUEST-FAIL: reservation lost"; exit 1; }
echo "GUEST-OK: Write Exclusive reservation still held after restart"
sg_persist --out --release --param-rk=0xabc123 --prout-type=1 "$D"
sg_persist --out --register --param-rk=0xabc123 --param-sark=0 "$D"
echo "GUEST-OK: released and unregistered"
