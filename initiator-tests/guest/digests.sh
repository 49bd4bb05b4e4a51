#!/bin/sh
# Guest script for the run with HeaderDigest=CRC32C and DataDigest=CRC32C requested (run.sh --opt):
# the session must have negotiated both, and 16 MiB written with O_DIRECT read back identical.
set -e
P=$(iscsiadm -m session -P 2 2>&1)
echo "$P" | grep -i digest | sed 's/^/   | /'
echo "$P" | grep -q 'HeaderDigest: CRC32C' || { echo "GUEST-FAIL: HeaderDigest not CRC32C"; exit 1; }
echo "$P" | grep -q 'DataDigest: CRC32C' || { echo "GUEST-FAIL: DataDigest not CRC32C"; exit 1; }
echo "GUEST-OK: negotiated HeaderDigest=CRC32C DataDigest=CRC32C"
D1=${DISKS%% *}
dd if=/dev/urandom of=/tmp/p bs=1M count=16 2>/dev/null
dd if=/tmp/p of="$D1" bs=1M seek=32 oflag=direct 2>/dev/null
dd if="$D1" of=/tmp/q bs=1M skip=32 count=16 iflag=direct 2>/dev/null
cmp /tmp/p /tmp/q
echo "GUEST-OK: 16 MiB written and read back with digests on"
