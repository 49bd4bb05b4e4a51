#!/bin/sh
# Kernel-initiator guest step: register key 0xabc123 and take a Write Exclusive persistent
# reservation on LUN 0; pr-check.sh verifies both after the gateway restarted.
set -e
# Use LUN 0 by its SCSI address (H:C:T:L in sysfs): the order of sda/sdb, and so $D, can
# differ from one boot to the next, and this check spans two boots.
D=""
for b in /sys/block/sd*; do
  case "$(basename "$(readlink -f "$b/device")")" in *:0) D=/dev/$(basename "$b") ;; esac
done
[ -b "$D" ] || { echo "GUEST-FAIL: no disk for LUN 0"; exit 1; }
sg_persist --out --register --param-sark=0xabc123 "$D"
sg_persist --out --reserve --param-rk=0xabc123 --prout-type=1 "$D"
sg_persist --in --read-reservation "$D" | grep -q 0xabc123
echo "GUEST-OK: registered 0xabc123 and reserved Write Exclusive"
