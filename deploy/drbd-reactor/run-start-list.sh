#!/usr/bin/env bash
# Runs the promoter's start list of deploy/drbd-reactor/iscsi-gateway.toml the way drbd-reactor
# would (each OCF agent's start in order, then stop in reverse), without DRBD or drbd-reactor:
# in a network namespace "node" joined by a veth pair to a namespace "initiator", with a loop
# device standing in for /dev/drbd0 and an ext4 loop device for /dev/drbd1. After every step
# the initiator namespace probes 192.0.2.10:3260 (TCP connect, then iscsi-inq), and the
# probe must match what the order promises:
#   block, IP, gateway started     -> connect times out (dropped, no reset)
#   unblock started                -> iscsi-inq works
#   unblock stopped (first stop)   -> connect times out again while the gateway still runs
# drbd-reconfigure-suspend-or-error@ needs DRBD: reported as SKIP. On iptables 1.8.9 the stock
# portblock agent (resource-agents < 4.14) cannot unblock: a fixed copy is used, with a NOTE.
# usage (root): deploy/drbd-reactor/run-start-list.sh [GATEWAY_BINARY]
# Needs resource-agents, iptables, iproute2, e2fsprogs, util-linux, libiscsi-bin, python3.
# Prints PASS/FAIL/SKIP lines; exit 1 if any FAIL.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEPLOY=$(cd "$HERE/.." && pwd)
BIN=$(readlink -f "${1:-${CARGO_TARGET_DIR:-$DEPLOY/../target}/release/iscsi-gateway}")
[ -x "$BIN" ] || { echo "no binary at $BIN"; exit 2; }
OCF_ROOT=/usr/lib/ocf
[ -x "$OCF_ROOT/resource.d/heartbeat/portblock" ] || { echo "SKIP start list: resource-agents not installed"; exit 0; }
NS=rsl$$ NODE=rsl$$-node INI=rsl$$-ini
WORK=$(mktemp -d /var/tmp/run-start-list.XXXXXX)
FAILS=0 LUN='' ST='' GW=''
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
cleanup() {
  [ -n "$GW" ] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null
  mountpoint -q "$WORK/state" && umount "$WORK/state"
  [ -n "$LUN" ] && losetup -d "$LUN"
  [ -n "$ST" ] && losetup -d "$ST"
  ip netns del "$NODE" 2>/dev/null; ip netns del "$INI" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the two namespaces and the stand-ins for /dev/drbd0 and /dev/drbd1
ip netns add "$NODE" && ip netns add "$INI" || { echo "SKIP start list: cannot create network namespaces"; exit 0; }
ip link add "$NS-n" type veth peer name "$NS-i" || { echo "SKIP start list: no veth"; exit 0; }
ip link set "$NS-n" netns "$NODE"; ip link set "$NS-i" netns "$INI"
ip -n "$NODE" addr add 192.0.2.2/24 dev "$NS-n"; ip -n "$NODE" link set "$NS-n" up; ip -n "$NODE" link set lo up
ip -n "$INI" addr add 192.0.2.50/24 dev "$NS-i"; ip -n "$INI" link set "$NS-i" up; ip -n "$INI" link set lo up
truncate -s 64M "$WORK/lun.img" "$WORK/state.img"
LUN=$(losetup -f --show "$WORK/lun.img") && ST=$(losetup -f --show "$WORK/state.img") || { echo "SKIP start list: no loop devices"; exit 0; }
mkfs.ext4 -q -F "$ST" || { fail "mkfs.ext4"; exit 1; }
mkdir -p "$WORK/state" "$WORK/data"
sed -e "s|/dev/drbd0|$LUN|" -e "s|/srv/iscsi-gateway-state|$WORK/state|" \
    -e "s|^data_dir = .*|data_dir = \"$WORK/data\"|" "$DEPLOY/iscsi-gateway.toml" >"$WORK/gateway.toml"
IQN=$(sed -n 's/^iqn = "\(.*\)"/\1/p' "$WORK/gateway.toml" | head -n 1)

# --- iptables 1.8.9 (Debian 12, PVE 8) lists the protocol as a number ("6", not "tcp"), and the
# portblock agent of resource-agents < 4.14 then never finds its own DROP rule: "unblock"
# leaves the port blocked for good (ClusterLabs/resource-agents PR #1924). Detect it; if so,
# run a copy of the agent fixed as deploy/drbd-reactor/README.md says (and say so).
ip netns exec "$NODE" iptables -I INPUT -p tcp -d 192.0.2.99 -m multiport --dports 9 -j DROP
PB_VENDOR=heartbeat
if ip netns exec "$NODE" iptables -n -L INPUT | grep -q '^DROP *6 '; then
  if grep -q '"^DROP${w}${1}${w}' "$OCF_ROOT/resource.d/heartbeat/portblock"; then
    mkdir -p "$WORK/ocf/resource.d/local"
    python3 - "$OCF_ROOT/resource.d/heartbeat/portblock" "$WORK/ocf/resource.d/local/portblock" <<'PY'
import sys
src = open(sys.argv[1]).read()
old = '  echo "^DROP${w}${1}${w}'
new = ('  case "$1" in tcp) p="\\(tcp\\|6\\)" ;; udp) p="\\(udp\\|17\\)" ;; *) p=$1 ;; esac\n'
       '  echo "^DROP${w}${p}${w}')
assert src.count(old) == 1
open(sys.argv[2], "w").write(src.replace(old, new))
PY
    chmod +x "$WORK/ocf/resource.d/local/portblock"
    PB_VENDOR=local
    echo "NOTE iptables lists protocol numbers and this portblock agent expects names: using a fixed copy (ocf:local:portblock)"
  fi
fi
ip netns exec "$NODE" iptables -D INPUT -p tcp -d 192.0.2.99 -m multiport --dports 9 -j DROP

# --- the start list, from the snippet itself; stand-in paths substituted
mapfile -t ITEMS < <(python3 - "$HERE/iscsi-gateway.toml" <<'PY'
import sys, tomllib
res = tomllib.load(open(sys.argv[1], "rb"))["promoter"][0]["resources"]["iscsi"]
for item in res["start"]:
    print(item)
PY
)
[ "${#ITEMS[@]}" -gt 0 ] || { fail "no start items"; exit 1; }

# ocf ACTION ITEM: run one OCF agent action inside the node namespace
ocf() {
  local action=$1 item=$2 agent id kv env=()
  read -r agent id kv <<<"$item"
  agent=${agent#ocf:heartbeat:}
  for kv in $kv; do
    kv=${kv/\/dev\/drbd1/$ST}; kv=${kv/\/srv\/iscsi-gateway-state/$WORK/state}
    env+=("OCF_RESKEY_$kv")
  done
  # `ip netns exec` also gives the command a private mount namespace, so a mount made there
  # would vanish: the Filesystem agent (no network) runs in the host's namespaces.
  local nsx=(ip netns exec "$NODE")
  [ "$agent" = Filesystem ] && nsx=()
  local path=$OCF_ROOT/resource.d/heartbeat/$agent
  [ "$agent" = portblock ] && [ "$PB_VENDOR" = local ] && path=$WORK/ocf/resource.d/local/portblock
  "${nsx[@]}" env OCF_ROOT=$OCF_ROOT OCF_RESOURCE_INSTANCE="${id}_iscsi" HA_RSCTMP="$WORK" \
    "${env[@]}" "$path" "$action" >>"$WORK/agents.log" 2>&1
}
# probe: "open" (iscsi-inq works), "timeout" (SYN dropped) or "refused"
probe() {
  local r
  r=$(ip netns exec "$INI" python3 -c '
import socket, sys
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("192.0.2.10", 3260)); print("connected")
except socket.timeout: print("timeout")
except ConnectionRefusedError: print("refused")
except OSError as e: print("error", e.errno)')
  if [ "$r" = connected ]; then
    if ip netns exec "$INI" timeout 10 iscsi-inq "iscsi://192.0.2.10:3260/$IQN/0" 2>/dev/null | grep -q DIRECT_ACCESS; then r=open; else r=connected-no-iscsi; fi
  fi
  echo "$r"
}
expect() { # expect WHEN WANT
  local got; got=$(probe)
  [ "$got" = "$2" ] && pass "$1: initiator sees $got" || fail "$1: initiator sees $got, expected $2"
}

started=()
for item in "${ITEMS[@]}"; do
  case "$item" in
    ocf:heartbeat:*)
      if ocf start "$item" && ocf monitor "$item"; then pass "start+monitor ${item%% ip=*}"; started+=("$item")
      else fail "start ${item}"; sed 's/^/    /' "$WORK/agents.log" | tail -n 20; break; fi ;;
    iscsi-gateway.service)
      ip netns exec "$NODE" "$BIN" serve --config "$WORK/gateway.toml" >"$WORK/gw.log" 2>&1 &
      GW=$!
      for _ in $(seq 50); do grep -q listening "$WORK/gw.log" && break; sleep 0.2; done
      if grep -q listening "$WORK/gw.log"; then pass "start iscsi-gateway.service (listens on 192.0.2.10:3260, state_dir on the mounted volume)"; started+=("$item")
      else fail "gateway did not start"; sed 's/^/    /' "$WORK/gw.log"; break; fi ;;
    drbd-reconfigure-suspend-or-error@*) echo "SKIP $item (needs DRBD)" ;;
    *) fail "unknown start item $item" ;;
  esac
  case "$item" in
    *action=block*) ;;
    *IPaddr2*) expect "after IPaddr2, port still blocked" timeout ;;
    iscsi-gateway.service) expect "gateway running, port still blocked" timeout ;;
    *action=unblock*) expect "after portblock unblock" open ;;
  esac
done
[ -d "$WORK/state" ] && mountpoint -q "$WORK/state" && pass "state volume mounted at the gateway's state_dir"

# stop in reverse, as drbd-reactor does when the target stops
for ((i = ${#started[@]} - 1; i >= 0; i--)); do
  item=${started[$i]}
  if [ "$item" = iscsi-gateway.service ]; then
    kill -TERM "$GW"; rc=0; wait "$GW" || rc=$?; GW=
    [ "$rc" -eq 0 ] && pass "stop iscsi-gateway.service (exit 0)" || fail "gateway exit $rc on SIGTERM"
  else
    ocf stop "$item" && pass "stop ${item%% ip=*}" || fail "stop $item"
  fi
  case "$item" in *action=unblock*) expect "first stop (unblock undone), gateway still running" timeout ;; esac
done
ip -n "$NODE" -4 addr show | grep -q 192.0.2.10 && fail "192.0.2.10 still configured after stop" || pass "floating IP removed"
mountpoint -q "$WORK/state" && fail "state volume still mounted" || pass "state volume unmounted"
echo "run-start-list: $FAILS failed"
[ "$FAILS" -eq 0 ]
