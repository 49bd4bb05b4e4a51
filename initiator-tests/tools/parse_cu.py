#!/usr/bin/env python3
"""Parse iscsi-test-cu verbose text output into per-test results.

iscsi-test-cu (libiscsi 1.19, CUnit 2.1-3) prints "Suite: S" and "  Test: T ..." lines, the
test's own messages ("[SKIPPED] why", "[FAILED] why"), then CUnit's "passed" or "FAILED".
CUnit has no notion of a skip, so a test that printed "[SKIPPED]" and did not fail is counted as
skipped here. The default run covers several families (ALL, SCSI, LINUX, iSCSI) that repeat the
same Suite.Test; results are merged per distinct Suite.Test: failed if any run failed, passed if
any run passed, else skipped.

Usage: parse_cu.py OUTPUT.txt [--json FILE]
Prints "RESULT <status> <Suite.Test> <reason>" lines and a final "COUNTS passed=N skipped=N
failed=N runs=N"; exit status 0 (the gate is applied by the caller), 2 when nothing was parsed.
"""
import json
import re
import sys

SUITE_RE = re.compile(r"^Suite: (\S+)")
TEST_RE = re.compile(r"^  Test: (\S+) \.\.\.(.*)$")
END_RE = re.compile(r"^(Run Summary:|Suite: )")
ASSERT_RE = re.compile(r"^\s+\d+\. \S+:\d+\s+-")
MSG_RE = re.compile(r"\[(SKIPPED|FAILED)\]\s*(.*)")


NOTES = []


def parse(lines):
    """Yield (suite.test, status, reason) for every test run, in order."""
    suite = None
    cur = None  # [name, result or None, skipped reason, failed reason, saw_assert]

    def finish():
        if cur is None:
            return None
        name, result, skip_msg, fail_msg, saw_assert = cur
        if result is None:
            result = "FAILED" if (saw_assert or fail_msg) else "passed"
        if result == "FAILED":
            return (name, "failed", fail_msg or "")
        if skip_msg is not None:
            return (name, "skipped", skip_msg)
        return (name, "passed", "")

    for raw in lines:
        line = raw.rstrip("\n")
        m = SUITE_RE.match(line)
        t = TEST_RE.match(line)
        if m or t or END_RE.match(line):
            r = finish()
            if r:
                yield r
            cur = None
            if m:
                suite = m.group(1)
            if not t:
                continue
            cur = [f"{suite}.{t.group(1)}", None, None, None, False]
            rest = t.group(2).strip()
            line = rest
            for verdict in ("passed", "FAILED"):
                if rest == verdict or (rest.startswith(verdict) and MSG_RE.match(rest[len(verdict):].strip())):
                    cur[1] = verdict
                    line = rest[len(verdict):]
                    break
            if cur[1] is not None and not line.strip():
                continue
        if cur is None:
            continue
        s = line.strip()
        if cur[1] is None and s in ("passed", "FAILED"):
            cur[1] = s
            continue
        if ASSERT_RE.match(line):
            cur[4] = True
            continue
        mm = MSG_RE.search(s)
        if mm and cur[1] is not None:
            # printed after CUnit's verdict: suite/test teardown, not part of the verdict
            NOTES.append(f"{cur[0]}: after verdict: [{mm.group(1)}] {mm.group(2)}")
            continue
        if mm:
            kind, msg = mm.group(1), mm.group(2)
            if kind == "SKIPPED" and cur[2] is None:
                cur[2] = msg
            elif kind == "FAILED" and cur[3] is None:
                cur[3] = msg
            continue
        if cur[1] is None and (s.endswith("passed") or s.endswith("FAILED")):
            # a message printed without a newline, followed by CUnit's verdict
            cur[1] = "passed" if s.endswith("passed") else "FAILED"
    r = finish()
    if r:
        yield r


def merge(runs):
    order = []
    merged = {}
    for name, status, reason in runs:
        if name not in merged:
            order.append(name)
            merged[name] = (status, reason)
            continue
        old, old_reason = merged[name]
        rank = {"failed": 2, "passed": 1, "skipped": 0}
        if rank[status] > rank[old]:
            merged[name] = (status, reason)
    return [(n, merged[n][0], merged[n][1]) for n in order]


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    with open(argv[1], errors="replace") as f:
        runs = list(parse(f))
    tests = merge(runs)
    counts = {"passed": 0, "skipped": 0, "failed": 0}
    for name, status, reason in tests:
        counts[status] += 1
        print(f"RESULT {status} {name} {reason}".rstrip())
    for note in dict.fromkeys(NOTES):
        print(f"NOTE {note}")
    print(f"COUNTS passed={counts['passed']} skipped={counts['skipped']} "
          f"failed={counts['failed']} runs={len(runs)}")
    if "--json" in argv:
        out = argv[argv.index("--json") + 1]
        with open(out, "w") as f:
            json.dump({"counts": counts, "runs": len(runs),
                       "tests": [{"name": n, "status": s, "reason": r} for n, s, r in tests]},
                      f, indent=1)
    return 0 if runs else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
