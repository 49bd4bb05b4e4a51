#!/usr/bin/env python3
"""Fault-soak helpers (Python 3 stdlib only; 127.0.0.1 only; every loop bounded in time).

Subcommands:
  proxy    TCP proxy LISTEN_PORT -> TARGET_PORT that cuts connections (RST both ways) at random
           moments, at most --max-cuts times; on SIGTERM prints "PROXY connections=N cuts=M"
  writer   one session writing --size blocks to fresh offsets of a region (never rewritten), each
           with a pattern unique to (writer, offset); reconnects (session reinstatement) when the
           connection drops; appends every acknowledged write to --log ("lun offset len seed");
           counts CHECK CONDITIONs (with their sense) instead of stopping on them. Prints
           "WRITER name acked=N unacked=N checks=N enospc=N reconnects=N"
  verify   reads back every logged write, over iSCSI (--port) or from backing files (--file
           LUN=PATH ...), and prints "VERIFY acked=N lost=N corrupt=N"; a block that reads as
           zeroes is lost, any other mismatch is corrupt

The pattern of a write is a function of its seed and offset only, so verify needs nothing but
the log. Why its own writer: it must know exactly which writes the target acknowledged.
"""
import argparse
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import badclient as bc  # noqa: E402

OP_R2T, OP_DATA_OUT = 0x31, 0x05


def pattern(seed, offset, length):
    unit = struct.pack(">QQ", seed, offset)
    return (unit * (length // 16 + 1))[:length]


def sense_of(data):
    """(key, asc, ascq) from a SCSI Response data segment (2-byte SenseLength + sense)."""
    if len(data) < 4:
        return None
    sense = data[2:2 + struct.unpack(">H", data[0:2])[0]]
    if len(sense) >= 4 and (sense[0] & 0x7F) in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2], sense[3]
    if len(sense) >= 14:
        return sense[2] & 0x0F, sense[12], sense[13]
    return None


def scsi_write(conn, lun, lba, data, bs, cdb=None):
    """WRITE(16), or the data-out command `cdb` (16 bytes), with R2T-solicited Data-Out
    (the login negotiates InitialR2T=Yes, ImmediateData=No). Returns (status, sense)."""
    itt = conn.next_itt()
    b = bytearray(bc.bhs(bc.OP_SCSI_CMD, 0x80 | 0x20 | 0x01, 0, lun=bc.lun_field(lun), itt=itt))
    b[20:24] = struct.pack(">I", len(data))
    b[24:28] = struct.pack(">I", conn.cmdsn)
    b[28:32] = struct.pack(">I", conn.statsn)
    b[32:48] = cdb or struct.pack(">BBQIBB", 0x8A, 0, lba, len(data) // bs, 0, 0)
    conn.cmdsn += 1
    conn.send(bytes(b))
    while True:
        op, h, d = conn.recv_pdu()
        if op == OP_R2T:
            ttt = h[20:24]
            off, want = struct.unpack(">II", h[40:48])
            sn, end = 0, off + want
            while off < end:
                n = min(conn.max_send, end - off)
                flags = 0x80 if off + n >= end else 0
                o = bytearray(bc.bhs(OP_DATA_OUT, flags, n, lun=bc.lun_field(lun), itt=itt))
                o[20:24] = ttt
                o[28:32] = struct.pack(">I", conn.statsn)
                o[36:40] = struct.pack(">I", sn)
                o[40:44] = struct.pack(">I", off)
                conn.send(bytes(o) + bc.pad4(data[off:off + n]))
                off += n
                sn += 1
        elif op == bc.OP_SCSI_RSP:
            conn.statsn = struct.unpack(">I", h[24:28])[0] + 1
            return h[3], (sense_of(d) if h[3] == 2 else None)
        elif op in (0x20, 0x32):  # NOP-In (not answered: only pings with a TTT need one)
            if op == 0x20 and h[20:24] != b"\xff\xff\xff\xff":
                conn.send(bc.bhs(bc.OP_NOP_OUT, 0x80, 0, itt=0xFFFFFFFF, rest=bytes(
                    h[20:24]) + struct.pack(">II", conn.cmdsn, conn.statsn), immediate=True))
        else:
            raise RuntimeError(f"unexpected {bc.OP_NAMES.get(op, hex(op))} during WRITE")


def read_blocks(conn, lun, lba, nblocks, bs):
    cdb = struct.pack(">BBQIBB", 0x88, 0, lba, nblocks, 0, 0)
    return conn.scsi_read(lun, cdb, nblocks * bs)


def connect(port, iqn, isid, initiator, timeout):
    conn = bc.Conn(port, timeout)
    conn.isid = isid
    conn.initiator = initiator
    conn.login("Normal", iqn)
    return conn


def block_size(conn, lun):
    for _ in range(3):  # a new nexus may first get a UNIT ATTENTION
        status, data = conn.scsi_read(lun, bytes([0x25] + [0] * 9), 8)
        if status == 0 and len(data) >= 8:
            return struct.unpack(">I", data[4:8])[0]
    raise RuntimeError("READ CAPACITY failed")


def run_writer(args):
    rnd = random.Random(args.seed)
    isid = bytes([0x80, 0x50, 0x4B, 0x00, 0x00, args.seed & 0xFF])
    initiator = f"{bc.INITIATOR}-soak{args.seed}"
    t_end = time.monotonic() + args.duration
    acked = unacked = checks = enospc = reconnects = 0
    offset = args.start
    conn, bs = None, None
    log = open(args.log, "a", buffering=1)
    while time.monotonic() < t_end and offset + args.size <= args.end:
        if conn is None:
            try:
                conn = connect(args.port, args.iqn, isid, initiator, args.timeout)
                bs = block_size(conn, args.lun)
            except (bc.Closed, RuntimeError, OSError):
                if conn:
                    conn.close()
                conn = None
                reconnects += 1
                time.sleep(0.2 + rnd.random() * 0.3)
                continue
        data = pattern(args.seed, offset, args.size)
        try:
            status, sense = scsi_write(conn, args.lun, offset // bs, data, bs)
        except (bc.Closed, RuntimeError, OSError):
            unacked += 1  # may or may not have landed: not claimed, never rewritten
            offset += args.size
            conn.close()
            conn = None
            reconnects += 1
            continue
        if status == 0:
            acked += 1
            log.write(f"{args.lun} {offset} {args.size} {args.seed}\n")
        else:
            checks += 1
            if sense == (0x07, 0x27, 0x07):
                enospc += 1
            elif checks <= 5:
                print(f"WRITER {args.name}: status {status:#04x} sense {sense}", flush=True)
        offset += args.size
        pause = args.pause_after_check if checks and args.pause_after_check is not None else args.pause
        if pause:
            time.sleep(pause)
    if conn:
        try:
            conn.logout()
        except (bc.Closed, RuntimeError, OSError):
            pass
        conn.close()
    log.close()
    print(f"WRITER {args.name} acked={acked} unacked={unacked} checks={checks} enospc={enospc} "
          f"reconnects={reconnects}", flush=True)
    return 0


def load_log(paths):
    out = []
    for p in paths:
        with open(p) as f:
            for line in f:
                lun, off, ln, seed = map(int, line.split())
                out.append((lun, off, ln, seed))
    return out


def run_verify(args):
    writes = load_log(args.log)
    lost = corrupt = 0
    files = dict(f.split("=", 1) for f in args.file)
    conn = bs = None
    if not files:
        conn = connect(args.port, args.iqn, bytes([0x80, 0x56, 0, 0, 0, 1]),
                       f"{bc.INITIATOR}-verify", args.timeout)
        bs = {lun: block_size(conn, lun) for lun in {w[0] for w in writes}}
    handles = {lun: open(path, "rb") for lun, path in files.items()}
    for lun, off, ln, seed in writes:
        want = pattern(seed, off, ln)
        if conn:
            status, got = read_blocks(conn, lun, off // bs[lun], ln // bs[lun], bs[lun])
            if status != 0:
                print(f"VERIFY lun {lun} offset {off}: READ status {status:#04x}")
                corrupt += 1
                continue
        else:
            f = handles[str(lun)]
            f.seek(off)
            got = f.read(ln)
        if got != want:
            if got.count(0) == len(got):
                lost += 1
            else:
                corrupt += 1
            if lost + corrupt <= 5:
                print(f"VERIFY lun {lun} offset {off} len {ln}: mismatch")
    if conn:
        conn.logout()
        conn.close()
    src = "backing files" if files else "iSCSI"
    print(f"VERIFY ({src}) acked={len(writes)} lost={lost} corrupt={corrupt}")
    return 0 if lost == 0 and corrupt == 0 and writes else 1


def run_proxy(args):
    rnd = random.Random(args.seed)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.listen))
    lsock.listen(64)
    lsock.settimeout(0.5)
    stats = {"connections": 0, "cuts": 0}
    lock = threading.Lock()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def pump(src, dst, dead):
        try:
            while not dead.is_set():
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        dead.set()
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def rst(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            pass

    def serve(client, delay):
        try:
            up = socket.create_connection(("127.0.0.1", args.target), timeout=5)
        except OSError:
            client.close()
            return
        up.settimeout(None)
        client.settimeout(None)
        dead = threading.Event()
        threads = [threading.Thread(target=pump, args=(client, up, dead), daemon=True),
                   threading.Thread(target=pump, args=(up, client, dead), daemon=True)]
        for t in threads:
            t.start()
        if delay is not None and not dead.wait(delay):
            with lock:
                stats["cuts"] += 1
            rst(client)
            rst(up)
        dead.wait(args.max_life)

    while not stop.is_set():
        try:
            client, _ = lsock.accept()
        except (socket.timeout, TimeoutError):
            continue
        except OSError:
            break
        with lock:
            stats["connections"] += 1
            cut = stats["cuts"] < args.max_cuts and rnd.random() < args.cut_ratio
        delay = rnd.uniform(args.min_delay, args.max_delay) if cut else None
        threading.Thread(target=serve, args=(client, delay), daemon=True).start()
    print(f"PROXY connections={stats['connections']} cuts={stats['cuts']}", flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    x = sub.add_parser("proxy")
    x.add_argument("--listen", type=int, required=True)
    x.add_argument("--target", type=int, required=True)
    x.add_argument("--max-cuts", type=int, default=20)
    x.add_argument("--cut-ratio", type=float, default=0.8)
    x.add_argument("--min-delay", type=float, default=0.3)
    x.add_argument("--max-delay", type=float, default=4.0)
    x.add_argument("--max-life", type=float, default=600.0)
    x.add_argument("--seed", type=int, default=1)
    w = sub.add_parser("writer")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--iqn", required=True)
    w.add_argument("--lun", type=int, default=0)
    w.add_argument("--name", default="w")
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--start", type=int, required=True, help="first byte offset of the region")
    w.add_argument("--end", type=int, required=True, help="end of the region (exclusive)")
    w.add_argument("--size", type=int, default=65536)
    w.add_argument("--duration", type=float, default=60.0)
    w.add_argument("--pause", type=float, default=0.0, help="seconds between writes")
    w.add_argument("--pause-after-check", type=float, default=None,
                   help="seconds between writes once one got CHECK CONDITION (e.g. space ran out)")
    w.add_argument("--timeout", type=float, default=10.0)
    w.add_argument("--log", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--port", type=int, default=0)
    v.add_argument("--iqn", default="")
    v.add_argument("--timeout", type=float, default=20.0)
    v.add_argument("--file", action="append", default=[], help="LUN=PATH: read the backing file")
    v.add_argument("log", nargs="+")
    args = p.parse_args()
    return {"proxy": run_proxy, "writer": run_writer, "verify": run_verify}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
