# shellcheck shell=bash
# Prologue for suites/*.sh: loads the helpers, names the suite, gives it a log dir
# ($SUITE_LOG_DIR, from run-all.sh or a new temp dir) and stops its target on any exit.
_suite_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$_suite_lib/common.sh"
# shellcheck source=target.sh
source "$_suite_lib/target.sh"
SUITE_NAME=$(basename "$0" .sh)
if [ -z "${SUITE_LOG_DIR:-}" ]; then SUITE_LOG_DIR=$(mktemp -d "/tmp/it-$SUITE_NAME.XXXXXX"); fi
mkdir -p "$SUITE_LOG_DIR"
export SUITE_LOG_DIR
SUITE_T0=$(date +%s)
trap 'target_stop' EXIT
trap 'echo "$SUITE_NAME: interrupted"; exit 143' TERM
trap 'echo "$SUITE_NAME: interrupted"; exit 130' INT
echo "== suite $SUITE_NAME (TARGET_KIND=$TARGET_KIND), logs in $SUITE_LOG_DIR"
suite_elapsed() { echo $(($(date +%s) - SUITE_T0)); }
