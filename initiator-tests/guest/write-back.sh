#!/bin/sh
# Guest script for the write-back run (every LUN has direct=off: the gateway reads and writes
# through its page cache and reports WCE=1). The kernel must see a volatile write cache with FUA,
# so that fsync and journal commits reach the target as SYNCHRONIZE CACHE and FUA writes (the
# suite counts the flushes in the gateway's metrics); 16 MiB written and fsynced read back
# identical, and ext4 on the second LUN, with a file written and synced, checks clean.
set -e
for d in $DISKS; do
  n=${d#/dev/}
  wc=$(cat "/sys/block/$n/queue/write_cache")
  [ "$wc" = "write back" ] || { echo "GUEST-FAIL: $d write_cache is '$wc', want 'write back'"; exit 1; }
  fua=$(cat "/sys/block/$n/queue/fua" 2>/dev/null || echo "?")
  [ "$fua" = 1 ] || { echo "GUEST-FAIL: $d queue/fua is '$fua', want 1 (DPOFUA)"; exit 1; }
done
echo "GUEST-OK: every LUN reports a volatile write cache (write back) and FUA"

set -- $DISKS
D1=$1
dd if=/dev/urandom of=/tmp/p bs=1M count=16 2>/dev/null
dd if=/tmp/p of="$D1" bs=1M seek=64 oflag=direct conv=fsync 2>/dev/null
dd if="$D1" of=/tmp/q bs=1M skip=64 count=16 iflag=direct 2>/dev/null
cmp /tmp/p /tmp/q
echo "GUEST-OK: 16 MiB written with O_DIRECT + fsync read back identical"

if [ $# -ge 2 ]; then
  D2=$2
  mkfs.ext4 -F -q -E nodiscard "$D2"
  if command -v debugfs >/dev/null 2>&1; then
    echo "written in write-back mode" >/tmp/wb.txt
    debugfs -w -R "write /tmp/wb.txt wb.txt" "$D2" >/dev/null 2>&1
    sync
    debugfs -R "cat wb.txt" "$D2" 2>/dev/null | grep -q "written in write-back mode" ||
      { echo "GUEST-FAIL: file written with debugfs not read back"; exit 1; }
  fi
  e2fsck -f -n "$D2" >/tmp/fsck 2>&1 || { cat /tmp/fsck; echo "GUEST-FAIL: e2fsck on $D2"; exit 1; }
  echo "GUEST-OK: ext4 on $D2 made, written and checked clean"
fi
