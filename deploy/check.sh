#!/usr/bin/env bash
# Checks the deploy/ files as far as a machine without DRBD, Proxmox or systemd as PID 1 allows.
# Run as root from anywhere:  deploy/check.sh [path/to/iscsi-gateway]
# (default binary: $CARGO_TARGET_DIR/release/iscsi-gateway, else target/release/iscsi-gateway)
#
#   1. systemd-analyze verify of the unit (ExecStart pointed at the built binary) and
#      systemd-analyze security --offline (the exposure score);
#   2. the unit's hardening, emulated: the binary runs with every capability dropped,
#      no_new_privs, RLIMIT_MEMLOCK 8M (and must fail at 16K: the limit matters without
#      CAP_IPC_LOCK), / read-only except its data dir, serving a loop
#      block device (O_DIRECT, O_EXCL, io_uring); iscsi-inq and a qemu-io write/read/
#      discard cycle go through it, using registered buffers fitted to the memlock limit
#      (metrics); SIGTERM must end it with exit 0;
#   3. every syscall that run made (strace) is allowed by the unit's SystemCallFilter
#      (@system-service minus @privileged and @resources, as systemd expands them);
#   4. deploy/iscsi-gateway.toml passes `iscsi-gateway check-config`;
#   5. the drbd-reactor snippet parses as TOML and uses only keys the promoter knows;
#   6. `drbdadm dump` of deploy/drbd/iscsi.res as each of the three nodes;
#   7. deploy/drbd-reactor/run-start-list.sh: the promoter's start list (Filesystem, portblock,
#      IPaddr2, the gateway) started and stopped in order in network namespaces, with an
#      initiator namespace checking that the port is closed/open when the order says so.
# Needs: systemd (systemd-analyze), strace, util-linux (unshare, setpriv, prlimit, losetup),
# libiscsi-bin, qemu-utils, drbd-utils, python3 >= 3.11, resource-agents, iptables, e2fsprogs. Prints PASS/FAIL (and SKIP when
# loop devices or mount namespaces are unavailable) per check, exits 1 if any failed. Everything it starts is stopped; the loop device is detached.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BIN=${1:-${CARGO_TARGET_DIR:-$REPO/target}/release/iscsi-gateway}
BIN=$(readlink -f "$BIN")
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release -p gateway)"; exit 2; }
WORK=$(mktemp -d /var/tmp/deploy-check.XXXXXX)
FAILS=0 LOOP='' GW_PID=''
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- 1. systemd-analyze ----------------------------------------------------------------
UNIT="$WORK/iscsi-gateway.service"
sed "s|/usr/local/bin/iscsi-gateway|$BIN|g" "$HERE/systemd/iscsi-gateway.service" >"$UNIT"
if out=$(systemd-analyze verify "$UNIT" 2>&1) && [ -z "$out" ]; then
  pass "systemd-analyze verify: no warnings"
else
  fail "systemd-analyze verify: $out"
fi
score=$(systemd-analyze security --offline=yes "$UNIT" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: //p')
[ -n "$score" ] && pass "systemd-analyze security --offline: $score" || fail "systemd-analyze security gave no score"

# ---- 2. the hardening, emulated ----------------------------------------------------------
# Needs loop devices and mount namespaces (root, not in an unprivileged container); without
# them, sections 2 and 3 are reported as SKIP (not PASS) and the rest still runs.
truncate -s 64M "$WORK/backing.img"
if unshare --mount --propagation private true 2>/dev/null && LOOP=$(losetup -f --show "$WORK/backing.img" 2>/dev/null); then
  HARDENED=1
else
  HARDENED='' LOOP=''
  echo "SKIP hardened run and syscall check: no loop device or mount namespace here"
fi
if [ -n "$HARDENED" ]; then
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
MPORT=$(free_port)
IQN=iqn.2024-01.org.example:deploy-check
mkdir -p "$WORK/data"
chmod 0600 "$LOOP" 2>/dev/null   # root-owned, no group/other access: no CAP_DAC_OVERRIDE needed
cat >"$WORK/gw.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
data_dir = "$WORK/data"
metrics_listen = "127.0.0.1:$MPORT"
io_threads = 2
[[target]]
iqn = "$IQN"
[[target.lun]]
path = "$LOOP"
serial = "DEPLOYCHECK"
EOF
# The mount namespace: data dir bind-mounted onto itself (stays writable), then / read-only
# (ProtectSystem=strict). Then: no capabilities at all, no_new_privs, RLIMIT_MEMLOCK as set.
hardened() { # hardened MEMLOCK: run the gateway as the unit would, in the foreground
  unshare --mount --propagation private -- sh -c '
    mount --bind "$1" "$1" && mount -o remount,bind,ro / && mount -o remount,bind,rw "$1" &&
    exec setpriv --no-new-privs --bounding-set=-all --inh-caps=-all \
      prlimit --memlock="$4:$4" -- "$2" serve --config "$3"' sh "$WORK/data" "$BIN" "$WORK/gw.toml" "$1"
}
# Too small a memlock limit must fail (else the LimitMEMLOCK line would be untested).
if out=$(timeout 10 bash -c "$(declare -f hardened); WORK='$WORK' BIN='$BIN' hardened 16384" 2>&1); then
  fail "hardened run with memlock 16K did not fail"
elif grep -q 'io_uring.*Cannot allocate memory' <<<"$out"; then
  pass "memlock 16K without CAP_IPC_LOCK: io_uring ENOMEM, exit != 0 (LimitMEMLOCK is needed)"
else
  fail "memlock 16K: unexpected: $out"
fi
strace -f -qq -o "$WORK/strace" -e trace=all \
  bash -c "$(declare -f hardened); WORK='$WORK' BIN='$BIN' hardened 8388608" >"$WORK/gw.log" 2>&1 &
GW_PID=$!
for _ in $(seq 50); do grep -q listening "$WORK/gw.log" && break; sleep 0.2; done
if grep -q listening "$WORK/gw.log"; then
  pass "gateway serves with no capabilities, memlock 8M, read-only / (loop device $LOOP)"
else
  fail "gateway did not start hardened:"; sed 's/^/    /' "$WORK/gw.log"
fi
GPID=$(pgrep -n -f "serve --config $WORK/gw.toml" || echo 0)
CAPS=$(grep -h '^Cap\(Eff\|Bnd\)\|^NoNewPrivs' /proc/"$GPID"/status 2>/dev/null | tr -s '\t\n' '  ')
echo "     gateway pid $GPID: ${CAPS:-?}; $(grep -h '^Max locked' /proc/"$GPID"/limits | tr -s ' ')"
if grep -q '^CapEff:.0000000000000000' /proc/"$GPID"/status && awk '$5 == "/" && $6 ~ /^ro/ {f=1} END {exit !f}' /proc/"$GPID"/mountinfo; then
  pass "gateway process: no effective capabilities, / mounted read-only"
else
  fail "gateway process is not restricted as intended"
fi
URL="iscsi://127.0.0.1:$PORT/$IQN/0"
if timeout 20 iscsi-inq "$URL" | grep -q DIRECT_ACCESS; then pass "iscsi-inq $URL"; else fail "iscsi-inq $URL"; fi
if out=$(timeout 60 qemu-io -f raw -c 'write -P 0x5a 1M 4M' -c 'read -P 0x5a 1M 4M' \
    -c 'write -P 0x33 16M 128k' -c 'read -P 0x33 16M 128k' \
    -c 'discard 8M 1M' -c flush "$URL" 2>&1) && ! grep -qi 'error\|fail\|mismatch' <<<"$out"; then
  pass "qemu-io write/read-back 4 MiB and 128 KiB, discard, flush"
else
  fail "qemu-io: $out"
fi
# Registered buffers under the unit's limits: without CAP_IPC_LOCK the arenas are fitted
# into half of LimitMEMLOCK (2 MiB for each of the 2 threads), registered without a warning,
# and the reads and writes above used them.
REG=$(curl -s "http://127.0.0.1:$MPORT/metrics" | awk '/^iscsi_gateway_block_ops_total\{buffer="registered"\}/ {print $2}')
if grep -q 'registered buffers reduced to fit RLIMIT_MEMLOCK' "$WORK/gw.log" &&
   ! grep -q 'cannot register the buffer arena' "$WORK/gw.log" && [ "${REG:-0}" -gt 0 ]; then
  pass "registered buffers fitted to memlock 8M: $REG reads/writes used them"
else
  fail "registered buffers under memlock 8M (registered ops: ${REG:-none})"; grep -n 'regist\|WARN' "$WORK/gw.log"
fi
pgid_kill() { kill -TERM "$(pgrep -n -f "serve --config $WORK/gw.toml")" 2>/dev/null; }
pgid_kill
rc=0; timeout 20 tail --pid="$GW_PID" -f /dev/null || true
wait "$GW_PID"; rc=$?; GW_PID=
[ "$rc" -eq 0 ] && pass "SIGTERM: exit 0" || fail "SIGTERM: exit $rc"
grep -q 'Operation not permitted\|EPERM' "$WORK/gw.log" && { fail "EPERM in the gateway log"; grep -n 'not permitted' "$WORK/gw.log"; }

# ---- 3. syscalls against the unit's SystemCallFilter --------------------------------------
# Only the gateway's own process tree (after the exec of the binary).
python3 - "$WORK/strace" "$BIN" <<'PY' && pass "every syscall made is in @system-service minus @privileged @resources" || fail "syscall filter"
import re, subprocess, sys
trace, binary = sys.argv[1], sys.argv[2]
groups, cur = {}, None
for line in subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True).stdout.splitlines():
    s = line.strip()
    if line.startswith("@"):
        cur = groups.setdefault(s, set())
    elif s and not s.startswith("#") and cur is not None:
        cur.add(s)
def expand(name, seen=None):
    seen = seen or set()
    out = set()
    for x in groups.get(name, ()):
        if x.startswith("@"):
            if x not in seen:
                seen.add(x); out |= expand(x, seen)
        else:
            out.add(x)
    return out
allowed = expand("@system-service") - expand("@privileged") - expand("@resources")
gw_pids, used = set(), {}
for line in open(trace):
    m = re.match(r"(\d+)\s+(?:<\.\.\. )?(\w+)", line)
    if not m:
        continue
    pid, name = m.group(1), m.group(2)
    if name == "execve" and binary in line and "= 0" in line:
        gw_pids.add(pid)
    if name in ("clone", "clone3", "vfork", "fork") and pid in gw_pids:
        r = re.search(r"= (\d+)$", line.strip())
        if r: gw_pids.add(r.group(1))
    if pid in gw_pids and name not in ("exited", "killed", "resumed"):
        used.setdefault(name, 0); used[name] += 1
denied = sorted(n for n in used if n not in allowed)
print(f"     {len(used)} distinct syscalls by the gateway: {' '.join(sorted(used))}")
if not gw_pids:
    print("     no execve of the binary in the trace"); sys.exit(1)
if denied:
    print(f"     NOT allowed by the filter: {' '.join(denied)}"); sys.exit(1)
PY
fi

# ---- 4. the production config --------------------------------------------------------------
# check-config wants the LUN path to exist: the loop device stands in for /dev/drbd0.
sed "s|/dev/drbd0|${LOOP:-$WORK/backing.img}|" "$HERE/iscsi-gateway.toml" >"$WORK/prod.toml"
if out=$("$BIN" check-config --config "$WORK/prod.toml" 2>&1); then
  pass "check-config deploy/iscsi-gateway.toml ($(grep -m1 -o 'naa = "[0-9a-f]*"' <<<"$out"))"
else
  fail "check-config deploy/iscsi-gateway.toml: $out"
fi

# ---- 5. drbd-reactor snippet -------------------------------------------------------------
python3 - "$HERE/drbd-reactor/iscsi-gateway.toml" <<'PY' && pass "drbd-reactor snippet: TOML ok, known promoter keys" || fail "drbd-reactor snippet"
import sys, tomllib
# Keys of drbd-reactor's PromoterOptResource (src/plugin/promoter.rs, kebab-case).
known = {"start", "stop", "on-stop-failure", "stop-services-on-exit", "runner", "dependencies-as",
         "target-as", "on-drbd-demote-failure", "sleep-before-promote-factor", "preferred-nodes",
         "preferred-nodes-policy", "secondary-force", "on-quorum-loss", "on-disk-detach",
         "fencing-promote-delay", "adjust-resource-on-start"}
d = tomllib.load(open(sys.argv[1], "rb"))
for p in d["promoter"]:
    for name, res in p["resources"].items():
        bad = set(res) - known
        if bad: print("     unknown keys:", bad); sys.exit(1)
        for item in res["start"]:
            if not (item.startswith("ocf:") or item.rsplit(".", 1)[-1] in ("service", "mount", "target")):
                print("     start item is neither ocf: nor a unit:", item); sys.exit(1)
        print(f"     resource {name}: {len(res['start'])} start items")
PY

# ---- 6. DRBD resource file -----------------------------------------------------------------
for node in pve1 pve2 pve3; do
  if out=$(DRBD_DONT_WARN_ON_VERSION_MISMATCH=1 __DRBD_NODE__=$node drbdadm -c "$HERE/drbd/iscsi.res" dump iscsi 2>&1 >/dev/null); then
    pass "drbdadm dump iscsi as $node"
  else
    fail "drbdadm dump iscsi as $node: $(grep -v 'modinfo\|PRETEND\|__DRBD_NODE__' <<<"$out")"
  fi
done

# ---- 7. the promoter's start list, run agent by agent in network namespaces ----------------
if out=$("$HERE/drbd-reactor/run-start-list.sh" "$BIN" 2>&1); then :; else FAILS=$((FAILS + 1)); fi
printf '%s\n' "$out" | sed 's/^\(PASS\|FAIL\|SKIP\|NOTE\) /\1 start list: /'

echo "deploy/check.sh: $FAILS failed"
[ "$FAILS" -eq 0 ]
