#!/usr/bin/env bash
# Runs every cargo-fuzz target for a fixed time (FUZZ_SECONDS each, default 20) on a scratch
# corpus seeded from fuzz/seeds/<target>, and fails on the first crash. Uses the nightly
# toolchain when rustup has one, else the stable one with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs
# -Z flags). Installs cargo-fuzz when it is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz() { cargo +nightly fuzz "$@"; }
else
  fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-corpus.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cd "$here"
for t in $(fuzz list); do
  mkdir -p "$scratch/$t"
  echo "== fuzz $t for ${secs}s"
  rc=0
  fuzz run "$t" "$scratch/$t" "$here/seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    >"$scratch/$t.log" 2>&1 || rc=$?
  grep -E '^Done|SUMMARY|panicked|ERROR|Test unit written' "$scratch/$t.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -40 "$scratch/$t.log"
    echo "fuzz target $t failed (exit $rc): reproducer in fuzz/artifacts/$t"
    exit 1
  fi
done
