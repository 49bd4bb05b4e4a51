# shellcheck shell=bash
# A small two-gateway cluster on one machine, in network namespaces this file creates (used by
# suites/failover.sh). Every name starts with $NETNS_PREFIX (default "isgfo<pid>-"):
#   <prefix>br   the switch: a bridge br0 and one veth end per member
#   <prefix>a    node-a, eth0 10.99.0.11/24      <prefix>b   node-b, eth0 10.99.0.12/24
#   <prefix>c    the client, eth0 10.99.0.20/24  floating IP 10.99.0.100/24 (on a or b)
# Nothing is created in the root namespace. netns_down deletes the namespaces (which removes
# the veths and the bridge with them); netns_reap_stale removes namespaces of earlier runs whose
# owning shell is gone. Sourced; needs lib/common.sh.

NETNS_PREFIX=${NETNS_PREFIX:-isgfo$$-}
# shellcheck disable=SC2034 # NS_A, NS_B: used by the sourcing suite
NS_BR=${NETNS_PREFIX}br NS_A=${NETNS_PREFIX}a NS_B=${NETNS_PREFIX}b NS_C=${NETNS_PREFIX}c
FO_NET=10.99.0
IP_A=$FO_NET.11 IP_B=$FO_NET.12 IP_C=$FO_NET.20 FIP=$FO_NET.100
NETNS_MADE=()

# netns_reap_stale: delete isgfo<pid>-* namespaces whose <pid> no longer runs.
netns_reap_stale() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^isgfo[0-9]+-(br|a|b|c)$'); do
    pid=${ns#isgfo}; pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null && continue
    echo "netns: removing stale namespace $ns (pid $pid gone)"
    ip netns pids "$ns" 2>/dev/null | while read -r p; do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
}

# netns_up: builds the switch and the three members; fails (after undoing) on any error.
netns_up() {
  local ns ip
  ip netns add "$NS_BR" || return 1
  NETNS_MADE+=("$NS_BR")
  ip -n "$NS_BR" link add br0 type bridge && ip -n "$NS_BR" link set br0 up || { netns_down; return 1; }
  for ns in a b c; do
    case $ns in a) ip=$IP_A ;; b) ip=$IP_B ;; c) ip=$IP_C ;; esac
    ip netns add "$NETNS_PREFIX$ns" || { netns_down; return 1; }
    NETNS_MADE+=("$NETNS_PREFIX$ns")
    ip -n "$NS_BR" link add "p-$ns" type veth peer name eth0 netns "$NETNS_PREFIX$ns" &&
      ip -n "$NS_BR" link set "p-$ns" master br0 up &&
      ip -n "$NETNS_PREFIX$ns" link set lo up &&
      ip -n "$NETNS_PREFIX$ns" link set eth0 up &&
      ip -n "$NETNS_PREFIX$ns" addr add "$ip/24" dev eth0 || { netns_down; return 1; }
  done
}

# netns_down: kills whatever still runs in our namespaces (only ours), then deletes them.
netns_down() {
  local ns p
  for ns in "${NETNS_MADE[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  for ns in "${NETNS_MADE[@]}"; do ip netns del "$ns" 2>/dev/null; done
  NETNS_MADE=()
}

# fip_move FROM TO: the floating IP leaves namespace FROM (if there) and comes up on TO, which
# announces it with gratuitous ARP (arping -U) when arping is installed; otherwise the client's
# neighbour entry for it is flushed (also with FO_ARP=flush). Prints which.
fip_move() {
  local from=$1 to=$2
  ip -n "$from" addr del "$FIP/24" dev eth0 2>/dev/null
  ip -n "$to" addr add "$FIP/24" dev eth0 || return 1
  if [ "${FO_ARP:-garp}" = garp ] && command -v arping >/dev/null; then
    # two unsolicited ARP requests, 1 s apart, in the background (the start is not delayed)
    ip netns exec "$to" timeout 5 arping -q -U -c 2 -I eth0 -s "$FIP" "$FIP" >/dev/null 2>&1 &
    echo "floating IP $FIP -> $to (gratuitous ARP via arping -U)"
  else
    ip -n "$NS_C" neigh flush to "$FIP" 2>/dev/null
    echo "floating IP $FIP -> $to (no gratuitous ARP: flushed the client's neighbour entry)"
  fi
}

# mac_of NS: the MAC address of eth0 in NS; client_neigh_mac: the client's entry for $FIP.
mac_of() { ip -n "$1" -o link show eth0 | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2; }
client_neigh_mac() { ip -n "$NS_C" neigh show to "$FIP" dev eth0 | grep -o 'lladdr [0-9a-f:]*' | cut -d' ' -f2; }
