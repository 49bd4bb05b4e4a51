#!/bin/sh
# Kernel-initiator guest step for suites/failover.sh: the initiator side of a gateway failover.
#  1. registers key 0xf0a1 and takes a Write Exclusive persistent reservation on LUN 0
#     (prints "PR-TAKEN");
#  2. writes numbered 4 KiB records, one at a time, with O_DIRECT and an fsync (SYNCHRONIZE
#     CACHE) to 4 KiB slot FO_BASE+n; each record is a 128-byte header
#     "FOBLK n=<8 digits> run=<id> md5=<md5 of the body>" and a 3968-byte body that depends
#     only on n and the run id (tools/failover_verify.py rebuilds both). After each write that
#     returned success it prints "ACK <n> <uptime seconds>";
#  3. stops when the host wrote "FOSTOP <run id>" into 4 KiB slot FO_CTL (it does so once the
#     failover is over and enough writes went through the new gateway), after FO_MAXN records
#     or FO_MAXT seconds, or at the first failed write ("WRITE-FAIL <n> ...");
#  4. prints "WRITER-END last=<last acked n> reason=<why>", then reads the reservation back:
#     "PR-KEPT yes" when key 0xf0a1 still holds Write Exclusive, else "PR-KEPT no"; releases and
#     unregisters. Exit 0 only when no write failed and the reservation was kept.
# Parameters from the kernel command line (run.sh KI_EXTRA_CMDLINE): ki.fo_run (run id, 6
# chars [a-z0-9]), ki.fo_base, ki.fo_ctl, ki.fo_maxn, ki.fo_maxt.
RUN=nornid BASE=256 CTL=128 MAXN=4000 MAXT=150 KEY=0xf0a1
for w in $(cat /proc/cmdline); do
  case "$w" in
    ki.fo_run=*) RUN=${w#*=} ;;
    ki.fo_base=*) BASE=${w#*=} ;;
    ki.fo_ctl=*) CTL=${w#*=} ;;
    ki.fo_maxn=*) MAXN=${w#*=} ;;
    ki.fo_maxt=*) MAXT=${w#*=} ;;
  esac
done
# Centiseconds since boot, from /proc/uptime ("12.34 ...").
cs() { read -r up _ </proc/uptime; echo $((${up%.*} * 100 + 1${up#*.} - 100)); }
now() { read -r up _ </proc/uptime; echo "$up"; }

D=""
for b in /sys/block/sd*; do
  case "$(basename "$(readlink -f "$b/device")")" in *:0) D=/dev/$(basename "$b") ;; esac
done
[ -b "$D" ] || { echo "GUEST-FAIL: no disk for LUN 0"; exit 1; }

sg_persist --out --register --param-sark=$KEY "$D" >/dev/null || { echo "GUEST-FAIL: register"; exit 1; }
sg_persist --out --reserve --param-rk=$KEY --prout-type=1 "$D" >/dev/null || { echo "GUEST-FAIL: reserve"; exit 1; }
sg_persist --in --read-reservation "$D" | grep -q "$KEY" || { echo "GUEST-FAIL: reservation not shown"; exit 1; }
echo "PR-TAKEN key=$KEY type=write-exclusive dev=$D"

body() {
  awk -v n="$1" -v r="$RUN" 'BEGIN { f = "................................"
    for (l = 0; l < 124; l++) { s = sprintf("n=%08d run=%s l=%03d", n, r, l); printf "%s%s\n", s, substr(f, 1, 31 - length(s)) } }'
}
stop_asked() {
  dd if="$D" bs=4096 skip="$CTL" count=1 iflag=direct 2>/dev/null | head -c 64 | grep -q "^FOSTOP $RUN"
}

t0=$(cs) n=0 last=-1 reason=maxn rc=0
while [ "$n" -lt "$MAXN" ]; do
  if [ $(($(cs) - t0)) -gt $((MAXT * 100)) ]; then reason=maxt; break; fi
  if [ $((n % 8)) -eq 0 ] && stop_asked; then reason=stop; break; fi
  body "$n" >/tmp/body
  m=$(md5sum </tmp/body)
  { printf '%-127s\n' "FOBLK n=$(printf %08d "$n") run=$RUN md5=${m%% *}"; cat /tmp/body; } >/tmp/blk
  if dd if=/tmp/blk of="$D" bs=4096 seek=$((BASE + n)) count=1 oflag=direct conv=notrunc,fsync 2>/tmp/dd.err; then
    echo "ACK $n $(now)"
    last=$n
  else
    echo "WRITE-FAIL $n at $(now)s: $(tr '\n' ' ' </tmp/dd.err)"
    reason=write-fail rc=1
    break
  fi
  n=$((n + 1))
done
echo "WRITER-END last=$last reason=$reason"

# The reservation taken before the failover, read through the new gateway.
sg_persist --in --read-keys "$D" >/tmp/keys 2>&1 || sg_persist --in --read-keys "$D" >/tmp/keys 2>&1
sg_persist --in --read-reservation "$D" >/tmp/res 2>&1
sed 's/^/   /' /tmp/keys /tmp/res
if grep -q "$KEY" /tmp/keys && grep -q "$KEY" /tmp/res && grep -qi "write exclusive" /tmp/res; then
  echo "PR-KEPT yes"
else
  echo "PR-KEPT no"
  rc=1
fi
sg_persist --out --release --param-rk=$KEY --prout-type=1 "$D" >/dev/null
sg_persist --out --register --param-rk=$KEY --param-sark=0 "$D" >/dev/null
dmesg | grep -iE 'iscsi|connection[0-9]|session[0-9]|sd [0-9]' | tail -n 20 | sed 's/^/  kernel: /'
exit $rc
