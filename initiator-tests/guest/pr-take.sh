#!/bin/sh
# Kernel-initiator guest step: register key 0xabc123 and take a Write Exclusive persistent
# reservation on the first LUN; pr-check.sh verifies both after the gateway restarted.
set -e
sg_persist --out --register --param-sark=0xabc123 "$D"
sg_persist --out --reserve --param-rk=0xabc123 --prout-type=1 "$D"
sg_persist --in --read-reservation "$D" | grep -q 0xabc123
echo "GUEST-OK: registered 0xabc123 and reserved Write Exclusive"
