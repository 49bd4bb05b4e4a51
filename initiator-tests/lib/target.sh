# shellcheck shell=bash
# Start and stop the iSCSI target under test on 127.0.0.1:PORT, pluggable by TARGET_KIND:
#   gateway  target/release/iscsi-gateway serve (this project; LUNs numbered 0,1,...)
#   tgt      Debian's tgtd 1.0.85 (LUN 0 is its controller, data LUNs are 1,2,...)
# Each start gets fresh sparse backing files in a new temp dir, waits (bounded) for the port to
# listen and keeps the target's log in $SUITE_LOG_DIR. Sourced; needs lib/common.sh.
#
# After target_start: TARGET_PORT TARGET_IQN TARGET_PID TARGET_LOG TARGET_WORK TARGET_LUN_BASE
# TARGET_BACKING (array of backing files, index = data LUN index). Use target_url IDX for URLs.

GATEWAY_BIN=${GATEWAY_BIN:-${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/iscsi-gateway}
TARGET_START_TIMEOUT=${TARGET_START_TIMEOUT:-20}
TARGET_STOP_TIMEOUT=${TARGET_STOP_TIMEOUT:-10}
TARGET_PID=""
TARGET_WORK=""
TARGET_BACKING=()

# target_start [NLUNS=1] [SIZE=1G] [IQN]: TARGET_PORT may be preset, else a free port is picked.
target_start() {
  local nluns=${1:-1} size=${2:-1G} i f
  TARGET_IQN=${3:-iqn.2026-11.test.initiator-tests:${TARGET_KIND}}
  [ -n "${TARGET_PORT:-}" ] || TARGET_PORT=$(pick_free_port) || { echo "no free port" >&2; return 1; }
  if port_listening "$TARGET_PORT"; then echo "port $TARGET_PORT already listening" >&2; return 1; fi
  local logdir=${SUITE_LOG_DIR:-/tmp}
  mkdir -p "$logdir"
  TARGET_WORK=$(mktemp -d "${TARGET_TMPDIR:-/tmp}/it-target.XXXXXX")
  TARGET_LOG="$logdir/target-$TARGET_KIND-$TARGET_PORT.log"
  TARGET_BACKING=()
  for ((i = 0; i < nluns; i++)); do
    f="$TARGET_WORK/lun$i.img"
    truncate -s "$size" "$f"
    TARGET_BACKING+=("$f")
  done
  case "$TARGET_KIND" in
    gateway) _target_start_gateway "$size" ;;
    tgt) _target_start_tgt ;;
    *) echo "unknown TARGET_KIND=$TARGET_KIND (gateway|tgt)" >&2; return 1 ;;
  esac || { target_stop; return 1; }
  echo "target: $TARGET_KIND pid $TARGET_PID on 127.0.0.1:$TARGET_PORT iqn $TARGET_IQN, $nluns LUN(s) of $size, log $TARGET_LOG"
}

_target_wait_listen() {
  local i n=$((TARGET_START_TIMEOUT * 10))
  for ((i = 0; i < n; i++)); do
    port_listening "$TARGET_PORT" && return 0
    kill -0 "$TARGET_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$TARGET_PID" 2>/dev/null; then
    echo "target did not listen on 127.0.0.1:$TARGET_PORT within ${TARGET_START_TIMEOUT}s; log tail:" >&2
  else
    local st=0
    wait "$TARGET_PID" 2>/dev/null || st=$?
    echo "target exited (status $st) before listening on 127.0.0.1:$TARGET_PORT; log tail:" >&2
  fi
  tail -n 30 "$TARGET_LOG" >&2
  return 1
}

_target_record_pid() {
  if [ -n "${SUITE_LOG_DIR:-}" ]; then echo "$TARGET_PID $TARGET_KIND $TARGET_PORT" >>"$SUITE_LOG_DIR/target.pids"; fi
}

# A target started again on the same port (a restart, or a later start that picked the same
# free port) gets a fresh log; the earlier one is kept as LOG.1, LOG.2, ... for diagnosis.
_target_keep_old_log() {
  [ -s "$TARGET_LOG" ] || return 0
  local n=1
  while [ -e "$TARGET_LOG.$n" ]; do n=$((n + 1)); done
  mv "$TARGET_LOG" "$TARGET_LOG.$n"
}

_target_start_gateway() {
  local size=$1 f args=()
  _target_keep_old_log
  [ -x "$GATEWAY_BIN" ] || { echo "gateway binary not found: $GATEWAY_BIN (cargo build --release -p gateway)" >&2; return 1; }
  TARGET_LUN_BASE=0
  # GATEWAY_LUN_SUFFIX: appended to each --lun PATH (default ",size=SIZE"; set it empty to
  # pass the pre-created sparse file alone)
  for f in "${TARGET_BACKING[@]}"; do args+=(--lun "$f${GATEWAY_LUN_SUFFIX-,size=$size}"); done
  # GATEWAY_EXTRA_ARGS: more serve flags, split on whitespace (e.g. "--metrics-listen 127.0.0.1:P")
  local extra=()
  read -ra extra <<<"${GATEWAY_EXTRA_ARGS:-}"
  args+=("${extra[@]}")
  # --data-dir in the target's temp dir: reservation state (data-dir/state) stays with this
  # target instance (kept across its restarts, gone with it), never in the repository.
  "$GATEWAY_BIN" serve --listen "127.0.0.1:$TARGET_PORT" --iqn "$TARGET_IQN" "${args[@]}" \
    --data-dir "$TARGET_WORK/data" --log-level "${GATEWAY_LOG_LEVEL:-debug}" >"$TARGET_LOG" 2>&1 &
  TARGET_PID=$!
  _target_record_pid
  _target_wait_listen
}

_tgtadm() { tgtadm -C "$TARGET_PORT" --lld iscsi "$@"; }

_target_start_tgt() {
  local i f
  command -v tgtd >/dev/null || { echo "tgtd not installed (apt-get install tgt)" >&2; return 1; }
  TARGET_LUN_BASE=1
  rm -f "/var/run/tgtd/socket.$TARGET_PORT" "/var/run/tgtd/socket.$TARGET_PORT.lock"
  _target_keep_old_log
  # -C PORT: a control socket of its own (/var/run/tgtd/socket.PORT), apart from other tgtds.
  tgtd -f -C "$TARGET_PORT" --iscsi "portal=127.0.0.1:$TARGET_PORT" >"$TARGET_LOG" 2>&1 &
  TARGET_PID=$!
  _target_record_pid
  _target_wait_listen || return 1
  _tgtadm --op new --mode target --tid 1 -T "$TARGET_IQN" || return 1
  for i in "${!TARGET_BACKING[@]}"; do
    f=${TARGET_BACKING[$i]}
    _tgtadm --op new --mode logicalunit --tid 1 --lun $((i + 1)) -b "$f" || return 1
  done
  # offer digests like the gateway does (tgt's default is HeaderDigest=None DataDigest=None)
  _tgtadm --op update --mode target --tid 1 -n HeaderDigest -v CRC32C,None || return 1
  _tgtadm --op update --mode target --tid 1 -n DataDigest -v CRC32C,None || return 1
  _tgtadm --op bind --mode target --tid 1 -I ALL || return 1
}

target_alive() { [ -n "$TARGET_PID" ] && kill -0 "$TARGET_PID" 2>/dev/null; }

# target_stop: SIGTERM (tgt: delete target and system first, it ignores SIGTERM while it has
# targets), then SIGKILL after TARGET_STOP_TIMEOUT; removes the backing files.
target_stop() {
  local i n=$((TARGET_STOP_TIMEOUT * 10))
  if [ -n "$TARGET_PID" ] && kill -0 "$TARGET_PID" 2>/dev/null; then
    if [ "$TARGET_KIND" = tgt ]; then
      timeout 10 tgtadm -C "$TARGET_PORT" --lld iscsi --op delete --force --mode target --tid 1 >/dev/null 2>&1 || true
      timeout 10 tgtadm -C "$TARGET_PORT" --op delete --mode system >/dev/null 2>&1 || true
    fi
    kill -TERM "$TARGET_PID" 2>/dev/null || true
    for ((i = 0; i < n; i++)); do kill -0 "$TARGET_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$TARGET_PID" 2>/dev/null; then
      echo "target: pid $TARGET_PID still alive after ${TARGET_STOP_TIMEOUT}s, SIGKILL" >&2
      kill -KILL "$TARGET_PID" 2>/dev/null || true
    fi
    wait "$TARGET_PID" 2>/dev/null || true
  fi
  if [ "$TARGET_KIND" = tgt ] && [ -n "${TARGET_PORT:-}" ]; then
    rm -f "/var/run/tgtd/socket.$TARGET_PORT" "/var/run/tgtd/socket.$TARGET_PORT.lock"
  fi
  TARGET_PID=""
  if [ -n "$TARGET_WORK" ] && [ -z "${KEEP_BACKING:-}" ]; then rm -rf "$TARGET_WORK"; fi
  TARGET_WORK=""
  return 0
}

# target_lun IDX: the LUN number of the IDX-th data LUN (0-based).
target_lun() { echo $((TARGET_LUN_BASE + ${1:-0})); }
# target_url IDX: iscsi://127.0.0.1:PORT/IQN/LUN for the IDX-th data LUN.
target_url() { echo "iscsi://127.0.0.1:$TARGET_PORT/$TARGET_IQN/$(target_lun "${1:-0}")"; }
target_portal_url() { echo "iscsi://127.0.0.1:$TARGET_PORT/"; }

# target_start_config TOML IQN: starts the gateway (TARGET_KIND=gateway only) with a config file
# the suite wrote, listening on 127.0.0.1:$TARGET_PORT (pick TARGET_PORT first). The suite owns
# the files the config names; TARGET_WORK, if the suite sets it, is removed by target_stop.
target_start_config() {
  local toml=$1
  TARGET_IQN=$2
  TARGET_LUN_BASE=0
  [ "$TARGET_KIND" = gateway ] || { echo "target_start_config: gateway only" >&2; return 1; }
  [ -x "$GATEWAY_BIN" ] || { echo "gateway binary not found: $GATEWAY_BIN" >&2; return 1; }
  mkdir -p "${SUITE_LOG_DIR:-/tmp}"
  TARGET_LOG="${SUITE_LOG_DIR:-/tmp}/target-$TARGET_KIND-$TARGET_PORT.log"
  "$GATEWAY_BIN" serve --config "$toml" --log-level "${GATEWAY_LOG_LEVEL:-info}" >>"$TARGET_LOG" 2>&1 &
  TARGET_PID=$!
  _target_record_pid
  _target_wait_listen || { target_stop; return 1; }
  echo "target: gateway pid $TARGET_PID on 127.0.0.1:$TARGET_PORT iqn $TARGET_IQN (config $toml), log $TARGET_LOG"
}
