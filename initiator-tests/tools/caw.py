#!/usr/bin/env python3
"""COMPARE AND WRITE from one session (Python 3 stdlib only; 127.0.0.1 only; every loop bounded
by --seconds). The block at --lba holds one 64-bit counter, repeated over the block.

Subcommands (each prints one JSON line):
  init       writes the counter 0 (a plain WRITE)                          {"value": 0}
  heartbeat  COMPARE AND WRITE back to back (or every --interval-ms), each comparing with what
             the last one wrote and writing the next value, as VMware-style initiators keep
             their on-disk locks alive (ATS; benches/caw-beside-io)
             {"caws", "miscompares", "errors", "p50_us", "p99_us"}
  counter    increments the counter with COMPARE AND WRITE against other sessions doing the
             same: on MISCOMPARE it reads the block and tries again from what it found
             {"won", "miscompares", "errors"}
  read       the counter now, and whether the block is one value throughout
             {"value", "torn"}

With several counters at once, the final value must equal the sum of their "won": an
increment lost or applied twice means two COMPARE AND WRITEs interleaved.
"""
import argparse
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import soak  # noqa: E402

MISCOMPARE = 0x0E


def block(value, bs):
    return struct.pack(">Q", value) * (bs // 8)


def caw(conn, args, bs, old, new):
    """(status, sense) of a one-block COMPARE AND WRITE of `old` -> `new`."""
    cdb = struct.pack(">BBQBBBBBB", 0x89, 0, args.lba, 0, 0, 0, 1, 0, 0)
    return soak.scsi_write(conn, args.lun, args.lba, block(old, bs) + block(new, bs), bs, cdb=cdb)


def read_value(conn, args, bs):
    """(value, torn) of the block, or (None, None) when the READ failed."""
    status, data = soak.read_blocks(conn, args.lun, args.lba, 1, bs)
    if status != 0 or len(data) < bs:
        return None, None
    value = struct.unpack(">Q", data[:8])[0]
    return value, data[:bs] != block(value, bs)


def heartbeat(conn, args, bs):
    caws = miscompares = errors = 0
    lat = []
    value = 0
    t_end = time.monotonic() + args.seconds
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        status, sense = caw(conn, args, bs, value, value + 1)
        lat.append(time.monotonic() - t0)
        caws += 1
        if status == 0:
            value += 1
        elif sense and sense[0] == MISCOMPARE:
            miscompares += 1
            value = read_value(conn, args, bs)[0] or 0
        else:
            errors += 1
        if args.interval_ms:
            time.sleep(args.interval_ms / 1000)
    lat.sort()

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6) if lat else None

    return {"caws": caws, "miscompares": miscompares, "errors": errors,
            "p50_us": pct(0.50), "p99_us": pct(0.99)}


def counter(conn, args, bs):
    won = miscompares = errors = 0
    value = read_value(conn, args, bs)[0]
    t_end = time.monotonic() + args.seconds
    while time.monotonic() < t_end and value is not None:
        status, sense = caw(conn, args, bs, value, value + 1)
        if status == 0:
            won += 1
            value += 1
        elif sense and sense[0] == MISCOMPARE:
            miscompares += 1
            value = read_value(conn, args, bs)[0]
        else:
            errors += 1
            value = read_value(conn, args, bs)[0]
    if value is None:
        errors += 1
    return {"won": won, "miscompares": miscompares, "errors": errors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["init", "heartbeat", "counter", "read"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--iqn", required=True)
    ap.add_argument("--lun", type=int, default=0)
    ap.add_argument("--lba", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--interval-ms", type=float, default=0,
                    help="heartbeat: pause between COMPARE AND WRITEs (0: back to back)")
    ap.add_argument("--session", type=int, default=1, help="ISID qualifier (one per session)")
    args = ap.parse_args()
    isid = bytes([0x80, 0x43, 0x41, 0x57, 0x00, args.session & 0xFF])
    initiator = f"iqn.2026-11.org.iscsi-gateway:caw{args.session}"
    conn = soak.connect(args.port, args.iqn, isid, initiator, 10)
    bs = soak.block_size(conn, args.lun)
    if args.mode == "init" or args.mode == "heartbeat":
        status, sense = soak.scsi_write(conn, args.lun, args.lba, block(0, bs), bs)
        if status != 0:
            sys.exit(f"WRITE of the counter failed: status {status:#x} sense {sense}")
    if args.mode == "init":
        result = {"value": 0}
    elif args.mode == "heartbeat":
        result = heartbeat(conn, args, bs)
    elif args.mode == "counter":
        result = counter(conn, args, bs)
    else:
        value, torn = read_value(conn, args, bs)
        result = {"value": value, "torn": torn}
    conn.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
