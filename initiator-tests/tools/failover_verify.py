#!/usr/bin/env python3
"""Checks a failover run of guest/failover-writer.sh against the backing file.

Reads the guest's console log (ACK <n> <uptime>, WRITER-END last=<n>, PR-KEPT yes|no) and the
replicated backing file, rebuilds every acknowledged record exactly as the guest made it, and
prints one line:

    failover: pause_ms=<max gap> acked=<n> lost=<n> corrupt=<n> pr_kept=<yes|no>

lost    = the slot of an acknowledged record does not hold that record at all (zeros, or another
          record's header);
corrupt = it holds the record's header but not its exact bytes (partly written or garbled), or
          the header's md5 does not match the body.
pause_ms = the largest gap between consecutive acknowledgements (guest uptime, 10 ms steps).
Exit status 0 when lost=0, corrupt=0 and pr_kept=yes, else 1 (2 on unusable input).
"""
import argparse
import hashlib
import re
import sys

BS = 4096
HDR = 128
BODY_LINES = 124


def body(n: int, run: str) -> bytes:
    out = []
    for line in range(BODY_LINES):
        s = "n=%08d run=%s l=%03d" % (n, run, line)
        out.append(s + "." * (31 - len(s)) + "\n")
    return "".join(out).encode()


def record(n: int, run: str) -> bytes:
    b = body(n, run)
    head = "FOBLK n=%08d run=%s md5=%s" % (n, run, hashlib.md5(b).hexdigest())
    return head.ljust(HDR - 1).encode() + b"\n" + b


def parse_console(path: str):
    acks, last, pr_kept, malformed = {}, None, None, 0
    ack_re = re.compile(r"^ACK (\d+) (\d+)\.(\d\d)$")
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("ascii", "replace").strip().replace("\r", "")
            if line.startswith("ACK "):
                m = ack_re.match(line)
                if not m:
                    malformed += 1
                    continue
                acks[int(m.group(1))] = int(m.group(2)) * 1000 + int(m.group(3)) * 10
            elif line.startswith("WRITER-END last="):
                last = int(line.split()[1].split("=")[1])
            elif line == "PR-KEPT yes":
                pr_kept = "yes"
            elif line == "PR-KEPT no":
                pr_kept = "no"
    return acks, last, pr_kept, malformed


def check_slot(data: bytes, n: int, run: str) -> str:
    """'ok', 'lost' or 'corrupt' for record n's slot contents."""
    want = record(n, run)
    if data == want:
        return "ok"
    prefix = ("FOBLK n=%08d run=%s " % (n, run)).encode()
    if not data.startswith(prefix):
        return "lost"
    return "corrupt"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True, help="backing file of the LUN")
    ap.add_argument("--console", required=True, help="the VM's console log")
    ap.add_argument("--run", required=True, help="run id the guest used (ki.fo_run)")
    ap.add_argument("--base", type=int, default=256, help="4 KiB slot of record 0")
    ap.add_argument("--verbose", action="store_true", help="name every bad record")
    a = ap.parse_args()

    acks, last, pr_kept, malformed = parse_console(a.console)
    if last is None:
        # The writer did not finish: verify what the console shows as acknowledged.
        last = max(acks) if acks else -1
        print("note: no WRITER-END line; verifying the ACK lines only", file=sys.stderr)
    if malformed:
        print("note: %d malformed ACK lines (console interleaving)" % malformed, file=sys.stderr)
    # Writes are sequential and the writer stops at the first failure, so 0..last were acked.
    acked = last + 1
    missing_lines = [n for n in range(acked) if n not in acks]
    if missing_lines:
        print("note: %d acked records without a readable ACK line" % len(missing_lines), file=sys.stderr)
    lost = corrupt = 0
    with open(a.image, "rb") as img:
        for n in range(acked):
            img.seek((a.base + n) * BS)
            verdict = check_slot(img.read(BS), n, a.run)
            if verdict == "lost":
                lost += 1
            elif verdict == "corrupt":
                corrupt += 1
            if verdict != "ok" and a.verbose:
                print("record %d: %s" % (n, verdict), file=sys.stderr)
        img.seek((a.base + acked) * BS)
        if acked > 0 and check_slot(img.read(BS), acked, a.run) == "ok":
            print("note: record %d (not acknowledged, in flight) is on disk too" % acked, file=sys.stderr)
    times = [acks[n] for n in sorted(acks)]
    gaps = [b - a_ for a_, b in zip(times, times[1:])]
    pause = max(gaps) if gaps else 0
    if gaps:
        at = sorted(acks)[gaps.index(pause)]
        print("note: longest gap after record %d (of %d acks)" % (at, len(times)), file=sys.stderr)
    kept = pr_kept or "no"
    print("failover: pause_ms=%d acked=%d lost=%d corrupt=%d pr_kept=%s" % (pause, acked, lost, corrupt, kept))
    return 0 if lost == 0 and corrupt == 0 and kept == "yes" and acked > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
