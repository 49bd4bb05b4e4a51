#!/usr/bin/env bash
# CHAP and access control with real initiators (gateway only; tgt: SKIPPED). The gateway runs from
# a config file it writes (lib/target.sh target_start_config) with [target.auth] (one-way + mutual),
# [discovery.auth], allowed_initiators and allowed_networks; secrets in mode-600 files.
#  libiscsi (MD5 only): iscsi-inq with the right credentials logs in; wrong secret, wrong user, no
#    credentials and an initiator outside allowed_initiators are refused, each with its cause in
#    the target's log; mutual CHAP (?target_user=&target_password=) works and a wrong target
#    secret makes the initiator fail; discovery CHAP: an allowed initiator sees the target, a
#    refused one gets an empty SendTargets answer, a wrong discovery secret is refused.
#  Then chap_algorithms = ["SHA-256"] only: libiscsi is refused (no common algorithm), and the
#  kernel initiator (open-iscsi in the VM, one boot) is refused with a wrong secret, logs in with
#  one-way and mutual CHAP using SHA-256, and refuses a target that answers with the wrong secret.
#  The secrets never appear in the target's log. KI_DIR absent: the VM part is skipped.
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
if [ "$TARGET_KIND" != gateway ]; then
  mark_skipped "CHAP/ACL configuration is the gateway's (TARGET_KIND=$TARGET_KIND)"
  exit 0
fi
need iscsi-ls iscsi-inq
T=${TOOLS_TIMEOUT:-30}
export NO_COLOR=1
GATEWAY_LOG_LEVEL=debug # the no-secret-in-the-log checks cover debug lines too
TARGET_PORT=$(pick_free_port) || exit 1
IQN=iqn.2026-11.test.initiator-tests:chap
KI_DIR=${KI_DIR:-$REPO_DIR/../shared/kernel-initiator}
KT=${KI_TIMEOUT:-240}

SEC=$(mktemp -d /tmp/it-chap-secrets.XXXXXX)
trap 'target_stop; rm -rf "$SEC"' EXIT
IUSER=alice IPASS=alice-secret-0123
TUSER=gw-target TPASS=target-secret-4567
DUSER=disco DPASS=discovery-secret-89
ALLOWED=iqn.2026-11.test.chap:allowed
DENIED=iqn.2026-11.test.chap:denied
VM_INIT=iqn.2026-11.test.kernel-initiator:node1
(umask 077 && printf '%s\n' "$IPASS" >"$SEC/i" && printf '%s\n' "$TPASS" >"$SEC/t" && printf '%s\n' "$DPASS" >"$SEC/d")

# gateway_with ALGORITHMS DISCOVERY_AUTH(0|1): a fresh 64 MiB LUN and a config with CHAP and ACLs
gateway_with() {
  local disc=""
  [ "$2" = 1 ] && disc="[discovery.auth]
chap_user = \"$DUSER\"
chap_secret_file = \"$SEC/d\""
  TARGET_WORK=$(mktemp -d /tmp/it-chap-target.XXXXXX)
  truncate -s 64M "$TARGET_WORK/lun0.img"
  cat >"$TARGET_WORK/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:$TARGET_PORT"]
data_dir = "$TARGET_WORK/data"
$disc
[[target]]
iqn = "$IQN"
allowed_initiators = ["$ALLOWED", "$VM_INIT", "iqn.2026-11.test.chap:other"]
allowed_networks = ["127.0.0.0/8", "::1/128"]
[target.auth]
chap_user = "$IUSER"
chap_secret_file = "$SEC/i"
mutual_user = "$TUSER"
mutual_secret_file = "$SEC/t"
chap_algorithms = $1
[[target.lun]]
path = "$TARGET_WORK/lun0.img"
TOML
  target_start_config "$TARGET_WORK/gateway.toml" "$IQN"
}

lun_url() { echo "iscsi://$1@127.0.0.1:$TARGET_PORT/$TARGET_IQN/0${2:-}"; }
# tlog [PATTERN]: the target's log without colours (lines matching PATTERN)
tlog() { sed 's/\x1b\[[0-9;]*m//g' "$TARGET_LOG" | grep -E "${1:-.}"; }
# logged CAUSE_ERE: the target's log has a "login refused" line with this cause
logged() { tlog 'login refused' | grep -qE "$1"; }
# inq_ok DESC INITIATOR URL / inq_refused DESC INITIATOR URL [CAUSE]
inq_ok() {
  local out rc=0
  out=$(timeout "$T" iscsi-inq -i "$2" "$3" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ] && grep -q 'Peripheral Device Type:DIRECT_ACCESS' <<<"$out"; then ok "$1"; else
    fail "$1 (exit $rc)"; sed 's/^/        | /' <<<"$out" | head -5; fi
}
inq_refused() {
  local out rc=0
  out=$(timeout "$T" iscsi-inq -i "$2" "$3" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ! grep -q 'DIRECT_ACCESS' <<<"$out"; then ok "$1: refused"; else
    fail "$1: not refused (exit $rc)"; fi
  sed 's/^/        | /' <<<"$out" | grep -i -m2 'fail\|error' || true
  if [ -n "${4:-}" ]; then
    if logged "$4"; then ok "$1: target log names the cause ($4)"; else fail "$1: no 'login refused' line with '$4'"; fi
  fi
}

gateway_with '["SHA-256", "MD5"]' 1 || exit 1

echo "-- normal sessions (libiscsi, CHAP_A=5)"
inq_ok "right credentials" "$ALLOWED" "$(lun_url "$IUSER%$IPASS")"
tlog 'CHAP authentication succeeded' | grep -q 'algorithm="MD5"' &&
  ok "target log: CHAP succeeded with MD5 (libiscsi offers only CHAP_A=5)" || fail "no 'CHAP authentication succeeded ... MD5' line"
inq_refused "wrong secret" "$ALLOWED" "$(lun_url "$IUSER%alice-secret-0124")" "wrong CHAP response"
inq_refused "wrong user" "$ALLOWED" "$(lun_url "mallory%$IPASS")" "unknown CHAP user name"
inq_refused "no credentials" "$ALLOWED" "iscsi://127.0.0.1:$TARGET_PORT/$TARGET_IQN/0" "no acceptable AuthMethod|left the security stage"
inq_refused "initiator not in allowed_initiators (right credentials)" "$DENIED" "$(lun_url "$IUSER%$IPASS")" "initiator not in allowed_initiators"
tlog 'login refused' | grep -F "$DENIED" | grep -q 'peer=127.0.0.1:' &&
  ok "refusal line names initiator and source address" || fail "refusal line lacks initiator or address"

echo "-- mutual CHAP (libiscsi target_user/target_password)"
inq_ok "mutual CHAP, right target secret" "$ALLOWED" "$(lun_url "$IUSER%$IPASS" "?target_user=$TUSER&target_password=$TPASS")"
tlog 'CHAP authentication succeeded' | grep -q 'mutual=true' && ok "target log: mutual=true" || fail "no mutual CHAP success line"
inq_refused "mutual CHAP, wrong target secret (initiator refuses the target)" "$ALLOWED" \
  "$(lun_url "$IUSER%$IPASS" "?target_user=$TUSER&target_password=target-secret-XXXX")"
inq_refused "mutual CHAP, wrong target name" "$ALLOWED" \
  "$(lun_url "$IUSER%$IPASS" "?target_user=someone-else&target_password=$TPASS")"

echo "-- discovery CHAP and SendTargets filtering"
portal="iscsi://$DUSER%$DPASS@127.0.0.1:$TARGET_PORT"
out=$(timeout "$T" iscsi-ls -i "$ALLOWED" "$portal" 2>&1); rc=$?
sed 's/^/        | /' <<<"$out" | head -5
[ "$rc" -eq 0 ] && grep -q "^Target:$TARGET_IQN " <<<"$out" && ok "allowed initiator: discovery CHAP ok, target listed" || fail "allowed initiator: exit $rc, target not listed"
out=$(timeout "$T" iscsi-ls -i "$DENIED" "$portal" 2>&1); rc=$?
sed 's/^/        | /' <<<"$out" | head -5
[ "$rc" -eq 0 ] && ! grep -q "Target:" <<<"$out" && ok "refused initiator: discovery ok, target not listed" || fail "refused initiator: exit $rc or target listed"
for c in "wrong discovery secret|$DUSER%discovery-secret-88|iqn.2026-11.test.chap:other|wrong CHAP response" \
  "no discovery credentials||iqn.2026-11.test.chap:other-2|no acceptable AuthMethod|left the security stage"; do
  IFS='|' read -r desc cred init cause <<<"$c"
  url="iscsi://${cred:+$cred@}127.0.0.1:$TARGET_PORT"
  out=$(timeout "$T" iscsi-ls -i "$init" "$url" 2>&1); rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ! grep -q "Target:" <<<"$out"; then ok "$desc: refused"; else fail "$desc: exit $rc"; fi
  tlog 'login refused' | grep -F "$init" | grep -qE "$cause" && ok "$desc: cause logged" || fail "$desc: cause '$cause' not logged"
done

target_log_clean() {
  local s leaked=""
  for s in "$IPASS" "$TPASS" "$DPASS"; do grep -qF "$s" "$TARGET_LOG" && leaked+=" $s"; done
  [ -z "$leaked" ] && ok "$1: no secret in the target log ($(wc -l <"$TARGET_LOG") lines)" || fail "$1: secret(s) in the target log:$leaked"
}
target_log_clean "libiscsi part"
target_stop

echo "-- chap_algorithms = [\"SHA-256\"] only"
# Discovery open here: the VM harness discovers without credentials before the script runs.
gateway_with '["SHA-256"]' 0 || exit 1
inq_refused "libiscsi (MD5 only) against a SHA-256-only target" "$ALLOWED" "$(lun_url "$IUSER%$IPASS")" "no CHAP algorithm in common"

if [ ! -x "$KI_DIR/run.sh" ]; then
  echo "kernel-initiator harness not found at $KI_DIR: VM part skipped"
else
  # The guest cannot receive credentials otherwise: the script is generated with them.
  gs="$SEC/guest-chap.sh"
  cat >"$gs" <<GUEST
#!/bin/sh
T=\$(echo \$TARGETS | cut -d' ' -f1)
n() { iscsiadm -m node -T "\$T" -p \$PORTAL -o update -n "\$1" -v "\$2"; }
login() { iscsiadm -m node -T "\$T" -p \$PORTAL --login; }
logout() { iscsiadm -m node -T "\$T" -p \$PORTAL --logout >/dev/null; }
bad() { echo "GUEST-FAIL \$*"; exit 1; }
iscsiadm -m node -T "\$T" -p \$PORTAL >/dev/null 2>&1 || iscsiadm -m node -o new -T "\$T" -p \$PORTAL >/dev/null
n node.session.auth.authmethod CHAP
n node.session.auth.chap_algs SHA256,MD5 || bad "open-iscsi has no node.session.auth.chap_algs"
n node.session.auth.username $IUSER
n node.session.auth.password alice-secret-0124
login && bad "login with a wrong secret succeeded"
echo "GUEST-OK wrong secret refused"
n node.session.auth.password $IPASS
login || bad "one-way CHAP login failed"
sleep 1; ls /sys/block | grep -q '^sd' || bad "no disk after one-way CHAP login"
echo "GUEST-OK one-way CHAP login, disk present"
logout
n node.session.auth.username_in $TUSER
n node.session.auth.password_in $TPASS
login || bad "mutual CHAP login failed"
echo "GUEST-OK mutual CHAP login"
logout
n node.session.auth.password_in target-secret-XXXX
login && bad "login succeeded although the target answered with another secret"
echo "GUEST-OK wrong target secret: the initiator refused the target"
exit 0
GUEST
  log="$SUITE_LOG_DIR/ki-chap.log" t0=$SECONDS rc=0
  timeout --kill-after=10 $((KT + 30)) "$KI_DIR/run.sh" "$TARGET_PORT" --target "$TARGET_IQN" --initiator "$VM_INIT" \
    --no-login --script "$gs" --timeout "$KT" --log "$log" >"$SUITE_LOG_DIR/ki-chap.out" 2>&1 || rc=$?
  grep -E 'GUEST-(OK|FAIL|NOTE)|KI-RESULT' "$log" 2>/dev/null | sed 's/\r$//; s/^/        | /'
  if [ "$rc" -eq 0 ] && grep -q 'KI-RESULT: PASS' "$log"; then ok "kernel initiator CHAP run: PASS ($((SECONDS - t0))s)"; else
    fail "kernel initiator CHAP run: exit $rc ($((SECONDS - t0))s), log $log"; tail -n 15 "$SUITE_LOG_DIR/ki-chap.out" | sed 's/^/        | /'; fi
  n=$(tlog 'CHAP authentication succeeded' | grep -F "$VM_INIT" | grep -c 'algorithm="SHA-256"')
  [ "$n" -ge 2 ] && ok "target log: $n kernel-initiator CHAP logins with SHA-256 (CHAP_A=7)" || fail "kernel initiator: $n SHA-256 CHAP successes logged, expected 2"
  tlog 'CHAP authentication succeeded' | grep -F "$VM_INIT" | grep -q 'mutual=true' && ok "target log: kernel initiator mutual CHAP" || fail "no kernel-initiator mutual CHAP line"
  tlog 'login refused' | grep -F "$VM_INIT" | grep -q "wrong CHAP response" && ok "target log: kernel initiator's wrong secret refused with its cause" || fail "no refusal line for the kernel initiator's wrong secret"
  tlog 'login refused' | grep -F "$VM_INIT" | sed 's/^/        | /' | head -3
fi
target_log_clean "SHA-256 part"

echo "== chap: $(suite_elapsed)s"
checks_summary chap
