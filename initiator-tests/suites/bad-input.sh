#!/usr/bin/env bash
# The target survives bad input (tools/badclient.py): idle connections, garbage, an HTTP request,
# a BHS with a 16 MiB data segment length, truncated PDUs then disconnect, unknown opcodes and SCSI
# commands during login, malformed login text (no '=', no NUL, huge key/value), a wrong version,
# an unknown target, no InitiatorName, a reserved login stage. After each: the target process is
# alive and iscsi-inq still works. While an idle connection is open, another initiator is served.
# Strictness: for TARGET_KIND=gateway each case that needs a reaction must get a Login Response
# with status class != 0, a Reject or a close within BAD_BOUND seconds (default 10); for tgt the
# reactions are only reported. Survival is required for both.
set -uo pipefail
source "$(dirname "$0")/../lib/suite.sh"
need iscsi-inq python3
BC=(python3 "$IT_DIR/tools/badclient.py")
BOUND=${BAD_BOUND:-10}
strict=()
[ "$TARGET_KIND" = gateway ] && strict=(--strict)

target_start 1 1G || exit 1
url=$(target_url 0)

still_serves() {
  target_alive || { fail "$1: target process died"; return; }
  if timeout 20 iscsi-inq "$url" >/dev/null 2>&1; then ok "$1: target alive, iscsi-inq works"; else fail "$1: iscsi-inq fails afterwards"; fi
}

echo "-- an idle connection does not block others"
exec 7<>"/dev/tcp/127.0.0.1/$TARGET_PORT" || fail "cannot connect"
timeout 20 iscsi-inq "$url" >/dev/null 2>&1 && ok "iscsi-inq works while an idle connection is open" || fail "iscsi-inq blocked by an idle connection"
exec 7>&-

for c in $("${BC[@]}" cases | cut -f1); do
  echo "-- case $c"
  out=$(timeout $((BOUND * 3 + 10)) "${BC[@]}" --port "$TARGET_PORT" --iqn "$TARGET_IQN" case "$c" "${strict[@]}" --bound "$BOUND" 2>&1); rc=$?
  echo "$out" | sed 's/^/        | /'
  case $rc in
    0) ok "$c: outcome acceptable" ;;
    124) fail "$c: badclient hung (killed after $((BOUND * 3 + 10))s)" ;;
    *) fail "$c: outcome not acceptable (exit $rc)" ;;
  esac
  still_serves "$c"
done

echo "-- many connections opened and dropped at once"
python3 - "$TARGET_PORT" <<'PY'
import socket, sys
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) for _ in range(64)]
for i, s in enumerate(socks):
    if i % 2:
        s.sendall(b"\x43" + b"\0" * 20)
    s.close()
PY
still_serves "64 connections dropped"
checks_summary "bad-input ($(suite_elapsed)s)"
