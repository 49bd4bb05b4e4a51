#!/usr/bin/env python3
"""A tiny iSCSI initiator (Python 3 stdlib only) for negative tests and raw protocol checks.

Subcommands (all talk to 127.0.0.1:PORT only, every socket operation bounded by --timeout):
  case NAME        send one kind of bad input and print "OUTCOME NAME KIND DETAIL"; exit 0 when
                   the outcome is acceptable (with --strict: the target reacted, i.e. closed,
                   rejected or refused the login, within the bound; without --strict any outcome
                   but a hang is accepted; "idle" and "truncated" never need a reaction)
  cases            list the case names
  discovery        SendTargets=All in a discovery session, then Logout; exit 0 when the target
                   answers the logout with response 0 and then closes the connection
  inquiry          log in (normal session) and send INQUIRY (standard or --page VPD), print the
                   payload as hex and, for page 0x80/0x83, the decoded serial / designators
  connections      open --count TCP connections at once, hold them --hold s; print which ones
                   the target closed at once ("CONNECTIONS open=N closed=M")
  sessions         log in --count normal sessions (same InitiatorName, distinct ISIDs), hold
                   them --hold s; print each login's status ("SESSIONS ok=N refused=M ...")
  login-timeout    connect and send nothing (--half: the first half of a login) and measure when
                   the target closes ("CLOSED after S s" or "OPEN after S s")
  nop-silent       log in, then never answer NOP-In pings; print the pings seen and when the
                   target closed ("NOPIN count=N closed_after=S")
  no-read          log in with a small receive buffer, send --count READs of --size bytes and
                   never read the responses; then wait for the target to drop the connection
                   ("NOREAD sent=N closed_after=S")
  budget-stall     for a target whose LUN 0 cannot complete writes (a frozen file system):
                   WRITE --size bytes (it stalls, holding the command data budget), then a TEST
                   UNIT READY, a NOP-Out and an ABORT TASK for the WRITE; prints when each was
                   answered ("BUDGET nop=S tur_before_abort=yes|no tmf=CODE/S tur=S ...")
  budget-wake      same target, two sessions: A's stalled WRITE of --size bytes holds the budget;
                   B (a small stalled WRITE running) holds a new TEST UNIT READY until A aborts
                   its WRITE, which must wake B ("WAKE b_first_tur=S b_held=yes|no b_tur=S")

Why its own client: iscsi-inq prints binary NAA designators as raw characters, and no packaged
tool sends malformed PDUs on purpose.
"""
import argparse
import os
import random
import socket
import struct
import sys
import time

OP_NOP_OUT, OP_SCSI_CMD, OP_LOGIN_REQ, OP_TEXT_REQ, OP_LOGOUT_REQ = 0x00, 0x01, 0x03, 0x04, 0x06
OP_SCSI_RSP, OP_LOGIN_RSP, OP_TEXT_RSP, OP_DATA_IN, OP_LOGOUT_RSP = 0x21, 0x23, 0x24, 0x25, 0x26
OP_REJECT = 0x3F
OP_NAMES = {0x20: "NOP-In", 0x21: "SCSI-Response", 0x22: "TMF-Response", 0x23: "Login-Response",
            0x24: "Text-Response", 0x25: "Data-In", 0x26: "Logout-Response", 0x31: "R2T",
            0x32: "Async-Message", 0x3F: "Reject"}
INITIATOR = "iqn.2026-11.test.initiator-tests:badclient"
ISID = bytes([0x80, 0x12, 0x34, 0x56, 0x78, 0x9A])


class Closed(Exception):
    """The target closed the connection."""


def pad4(data):
    return data + b"\0" * (-len(data) % 4)


def text(pairs):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def parse_text(data):
    out = {}
    for item in data.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def bhs(opcode, flags=0, dlen=0, lun=0, itt=0, rest=b"", immediate=False, ahs_len=0):
    """48-byte Basic Header Segment; `rest` fills bytes 20..47."""
    b0 = (opcode & 0x3F) | (0x40 if immediate else 0)
    head = struct.pack(">BBH", b0, flags, 0) + struct.pack(">I", (ahs_len << 24) | (dlen & 0xFFFFFF))
    head += struct.pack(">Q", lun) + struct.pack(">I", itt)
    rest = rest[:28]
    return head + rest + b"\0" * (28 - len(rest))


def login_bhs(csg, nsg, transit, data_len, itt=1, cmdsn=1, expstatsn=0, vmax=0, vmin=0, tsih=0,
              isid=ISID):
    flags = (0x80 if transit else 0) | ((csg & 3) << 2) | (nsg & 3)
    b = bytearray(bhs(OP_LOGIN_REQ, flags, data_len, itt=itt, immediate=True))
    b[2], b[3] = vmax, vmin
    b[8:14] = isid
    b[14:16] = struct.pack(">H", tsih)
    b[20:22] = struct.pack(">H", 0)  # CID
    b[24:28] = struct.pack(">I", cmdsn)
    b[28:32] = struct.pack(">I", expstatsn)
    return bytes(b)


class Conn:
    def __init__(self, port, timeout, rcvbuf=None):
        self.timeout = timeout
        if rcvbuf:
            # set before connect, so the advertised window stays small
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.statsn = 0
        self.cmdsn = 1
        self.itt = 0x100
        self.max_send = 8192
        self.isid = ISID
        self.initiator = INITIATOR

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed()
            buf += chunk
        return buf

    def recv_pdu(self):
        """Returns (opcode, header bytes, data bytes). Raises Closed or socket.timeout."""
        h = self.recv_exact(48)
        ahs = h[4] * 4
        dlen = int.from_bytes(h[5:8], "big")
        if ahs:
            self.recv_exact(ahs)
        data = self.recv_exact(dlen + (-dlen % 4))[:dlen] if dlen else b""
        return h[0] & 0x3F, h, data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def login_pdu(self, csg, nsg, transit, pairs, raw=None, **kw):
        data = raw if raw is not None else text(pairs)
        self.send(login_bhs(csg, nsg, transit, len(data), itt=1, cmdsn=self.cmdsn,
                            expstatsn=self.statsn, isid=self.isid, **kw) + pad4(data))
        op, h, d = self.recv_pdu()
        if op == OP_LOGIN_RSP:
            self.statsn = struct.unpack(">I", h[24:28])[0] + 1
        return op, h, d

    def login(self, session_type="Normal", target=None):
        """Security stage (AuthMethod=None) then operational stage to full feature."""
        sec = [("InitiatorName", self.initiator), ("SessionType", session_type),
               ("AuthMethod", "None")]
        if target:
            sec.insert(1, ("TargetName", target))
        op, h, d = self.login_pdu(0, 1, True, sec)
        check_login_ok(op, h, d)
        tsih = struct.unpack(">H", h[14:16])[0]
        ops = [("HeaderDigest", "None"), ("DataDigest", "None"),
               ("MaxRecvDataSegmentLength", "262144")]
        if session_type == "Normal":
            ops += [("InitialR2T", "Yes"), ("ImmediateData", "No"), ("MaxBurstLength", "262144"),
                    ("FirstBurstLength", "65536"), ("MaxConnections", "1"),
                    ("DataPDUInOrder", "Yes"), ("DataSequenceInOrder", "Yes"),
                    ("ErrorRecoveryLevel", "0"), ("MaxOutstandingR2T", "1")]
        for _ in range(4):
            op, h, d = self.login_pdu(1, 3, True, ops, tsih=tsih)
            check_login_ok(op, h, d)
            keys = parse_text(d)
            if "MaxRecvDataSegmentLength" in keys:
                self.max_send = int(keys["MaxRecvDataSegmentLength"])
            if h[1] & 0x80 and (h[1] & 3) == 3:
                self.cmdsn = struct.unpack(">I", h[28:32])[0]  # ExpCmdSN
                return keys
            ops = []
        raise RuntimeError("login did not reach full feature phase")

    def read_pdu(self, lun, cdb, alloc):
        """A READ-type command PDU (for sending later, e.g. many in one write)."""
        itt = self.next_itt()
        b = bytearray(bhs(OP_SCSI_CMD, 0x80 | 0x40 | 0x01, 0, lun=lun_field(lun), itt=itt))
        b[20:24] = struct.pack(">I", alloc)
        b[24:28] = struct.pack(">I", self.cmdsn)
        b[28:32] = struct.pack(">I", self.statsn)
        b[32:32 + len(cdb)] = cdb
        self.cmdsn += 1
        return bytes(b)

    def next_itt(self):
        self.itt += 1
        return self.itt

    def scsi_read(self, lun, cdb, alloc):
        itt = self.next_itt()
        b = bytearray(bhs(OP_SCSI_CMD, 0x80 | 0x40 | 0x01, 0, lun=lun_field(lun), itt=itt))
        b[20:24] = struct.pack(">I", alloc)
        b[24:28] = struct.pack(">I", self.cmdsn)
        b[28:32] = struct.pack(">I", self.statsn)
        b[32:32 + len(cdb)] = cdb
        self.cmdsn += 1
        self.send(bytes(b))
        data = b""
        while True:
            op, h, d = self.recv_pdu()
            if op == OP_DATA_IN:
                data += d
                if h[1] & 0x01:  # S bit: status in this PDU
                    self.statsn = struct.unpack(">I", h[24:28])[0] + 1
                    return h[3], data
            elif op == OP_SCSI_RSP:
                self.statsn = struct.unpack(">I", h[24:28])[0] + 1
                return h[3], data
            elif op == 0x20:  # NOP-In: answer if it wants one
                continue
            else:
                raise RuntimeError(f"unexpected {OP_NAMES.get(op, hex(op))} during INQUIRY")

    def logout(self):
        itt = self.next_itt()
        b = bytearray(bhs(OP_LOGOUT_REQ, 0x80, 0, itt=itt, immediate=True))
        b[24:28] = struct.pack(">I", self.cmdsn)
        b[28:32] = struct.pack(">I", self.statsn)
        self.send(bytes(b))
        while True:
            op, h, _ = self.recv_pdu()
            if op == OP_LOGOUT_RSP:
                return h[2]
            if op not in (0x20, 0x32):
                raise RuntimeError(f"unexpected {OP_NAMES.get(op, hex(op))} awaiting logout")


def lun_field(lun):
    if lun < 256:
        return lun << 48
    return (0x4000 | lun) << 48


def check_login_ok(op, h, d):
    if op != OP_LOGIN_RSP:
        raise RuntimeError(f"expected Login-Response, got {OP_NAMES.get(op, hex(op))}")
    if h[36] != 0:
        raise RuntimeError(f"login refused: status class {h[36]:#04x} detail {h[37]:#04x}")


def await_reaction(conn, bound):
    """What the target does within `bound` seconds: (kind, detail)."""
    conn.sock.settimeout(bound)
    try:
        op, h, d = conn.recv_pdu()
    except Closed:
        return "closed", "connection closed by target"
    except (socket.timeout, TimeoutError):
        return "no-reaction", f"nothing within {bound}s"
    except ConnectionResetError:
        return "closed", "connection reset by target"
    if op == OP_LOGIN_RSP:
        kind = "login-ok" if h[36] == 0 else "login-reject"
        return kind, f"status class {h[36]:#04x} detail {h[37]:#04x}"
    if op == OP_REJECT:
        return "reject", f"reason {h[2]:#04x}"
    return "other", f"{OP_NAMES.get(op, hex(op))}"


def first_login(conn, target):
    pairs = [("InitiatorName", INITIATOR), ("TargetName", target), ("SessionType", "Normal"),
             ("AuthMethod", "None")]
    op, h, d = conn.login_pdu(0, 1, True, pairs)
    check_login_ok(op, h, d)
    return struct.unpack(">H", h[14:16])[0]


# Each case sends something and returns the target's reaction (kind, detail).
def case_idle(conn, args):
    return await_reaction(conn, args.idle)


def case_garbage(conn, args):
    rnd = random.Random(7)
    junk = bytes(rnd.getrandbits(8) for _ in range(4096))
    # first byte: a reserved initiator opcode, so a target that checks the opcode can react at once
    conn.send(b"\x07" + junk[1:])
    kind, detail = await_reaction(conn, args.bound)
    if kind == "no-reaction":  # it may be waiting for a huge data segment: end our side
        conn.sock.shutdown(socket.SHUT_WR)
        k2, d2 = await_reaction(conn, args.bound)
        return kind, f"{detail}; after our FIN: {k2} ({d2})"
    return kind, detail


def case_http(conn, args):
    conn.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + b"\0" * 16)
    kind, detail = await_reaction(conn, args.bound)
    if kind == "no-reaction":
        conn.sock.shutdown(socket.SHUT_WR)
        k2, d2 = await_reaction(conn, args.bound)
        return kind, f"{detail}; after our FIN: {k2} ({d2})"
    return kind, detail


def case_huge_dsl(conn, args):
    h = bytearray(login_bhs(0, 1, True, 0))
    h[5:8] = b"\xff\xff\xff"
    conn.send(bytes(h) + text([("InitiatorName", INITIATOR)]))
    return await_reaction(conn, args.bound)


def case_truncated(conn, args):
    conn.send(login_bhs(0, 1, True, 64)[:20])
    conn.close()
    return "sent", "20 bytes of a login BHS, then closed"


def case_truncated_data(conn, args):
    data = pad4(text([("InitiatorName", INITIATOR), ("TargetName", args.iqn)]))
    conn.send(login_bhs(0, 1, True, len(data)) + data[: len(data) // 2])
    conn.close()
    return "sent", "login BHS + half its data segment, then closed"


def case_unknown_opcode_in_login(conn, args):
    first_login(conn, args.iqn)
    conn.send(bhs(0x1B, 0x80, 0, itt=2, immediate=True))  # reserved initiator opcode
    return await_reaction(conn, args.bound)


def case_scsi_cmd_in_login(conn, args):
    first_login(conn, args.iqn)
    b = bytearray(bhs(OP_SCSI_CMD, 0xC1, 0, itt=2))
    b[20:24] = struct.pack(">I", 36)
    b[32:38] = bytes([0x12, 0, 0, 0, 36, 0])
    conn.send(bytes(b))
    return await_reaction(conn, args.bound)


def _raw_login(conn, raw):
    conn.send(login_bhs(0, 1, True, len(raw)) + pad4(raw))
    return await_reaction(conn, args_bound[0])


def case_text_no_equals(conn, args):
    raw = text([("InitiatorName", INITIATOR), ("TargetName", args.iqn)]) + b"SessionTypeNormal\0"
    return _raw_login(conn, raw)


def case_text_no_nul(conn, args):
    # the last pair has no NUL; padding bytes are not part of the data segment (DSL excludes them)
    raw = f"InitiatorName={INITIATOR}\0TargetName={args.iqn}\0AuthMethod=None".encode()
    conn.send(login_bhs(0, 1, True, len(raw)) + pad4(raw))
    return await_reaction(conn, args.bound)


def case_text_huge_key(conn, args):
    raw = text([("InitiatorName", INITIATOR), ("TargetName", args.iqn), ("K" * 4000, "v")])
    return _raw_login(conn, raw)


def case_text_huge_value(conn, args):
    raw = text([("InitiatorName", INITIATOR), ("TargetName", args.iqn), ("TargetAlias", "v" * 8000)])
    return _raw_login(conn, raw)


def case_wrong_version(conn, args):
    raw = text([("InitiatorName", INITIATOR), ("TargetName", args.iqn), ("AuthMethod", "None")])
    conn.send(login_bhs(0, 1, True, len(raw), vmax=0x05, vmin=0x05) + pad4(raw))
    return await_reaction(conn, args.bound)


def case_unknown_target(conn, args):
    raw = text([("InitiatorName", INITIATOR), ("TargetName", args.iqn + ".does-not-exist"),
                ("AuthMethod", "None")])
    return _raw_login(conn, raw)


def case_no_initiator_name(conn, args):
    return _raw_login(conn, text([("TargetName", args.iqn), ("AuthMethod", "None")]))


def case_bad_stage(conn, args):
    raw = text([("InitiatorName", INITIATOR), ("TargetName", args.iqn)])
    conn.send(login_bhs(2, 3, True, len(raw)) + pad4(raw))  # CSG=2 is reserved
    return await_reaction(conn, args.bound)


args_bound = [10.0]
# name: (function, needs a reaction in strict mode, description)
CASES = {
    "idle": (case_idle, False, "connect and send nothing"),
    "garbage": (case_garbage, True, "4 KiB of random bytes (reserved opcode first)"),
    "http": (case_http, True, "an HTTP request"),
    "huge-dsl": (case_huge_dsl, True, "login BHS with DataSegmentLength 16 MiB-1"),
    "truncated-bhs": (case_truncated, False, "half a BHS, then disconnect"),
    "truncated-data": (case_truncated_data, False, "BHS + half the data, then disconnect"),
    "unknown-opcode-in-login": (case_unknown_opcode_in_login, True, "reserved opcode mid-login"),
    "scsi-cmd-in-login": (case_scsi_cmd_in_login, True, "SCSI command before full feature"),
    "text-no-equals": (case_text_no_equals, True, "login key without '='"),
    "text-no-nul": (case_text_no_nul, True, "login text without NUL terminator"),
    "text-huge-key": (case_text_huge_key, True, "4000-byte key name"),
    "text-huge-value": (case_text_huge_value, True, "8000-byte value"),
    "wrong-version": (case_wrong_version, True, "VersionMax=VersionMin=5"),
    "unknown-target": (case_unknown_target, True, "TargetName not served"),
    "no-initiator-name": (case_no_initiator_name, True, "login without InitiatorName"),
    "bad-stage": (case_bad_stage, True, "reserved CSG=2"),
}
# What counts as a reaction: the target refused or closed (a successful login is not).
REACTIONS = {"closed", "login-reject", "reject"}


def run_case(args):
    fn, needs_reaction, desc = CASES[args.name]
    args_bound[0] = args.bound
    t0 = time.monotonic()
    conn = Conn(args.port, args.bound)
    try:
        kind, detail = fn(conn, args)
    except Closed:
        kind, detail = "closed", "closed before the bad input was sent"
    except (ConnectionResetError, BrokenPipeError):
        kind, detail = "closed", "reset by target"
    except (socket.timeout, TimeoutError):
        kind, detail = "no-reaction", f"timed out after {args.bound}s"
    except RuntimeError as e:
        kind, detail = "error", str(e)
    finally:
        conn.close()
    dt = time.monotonic() - t0
    print(f"OUTCOME {args.name} {kind} {detail} ({dt:.1f}s) -- {desc}")
    if kind == "error":
        return 1
    if args.strict and needs_reaction and kind not in REACTIONS:
        print(f"  expected the target to refuse or close within {args.bound}s, got {kind}")
        return 1
    return 0


def run_discovery(args):
    conn = Conn(args.port, args.timeout)
    try:
        conn.login("Discovery")
        itt = conn.next_itt()
        data = text([("SendTargets", "All")])
        b = bytearray(bhs(OP_TEXT_REQ, 0x80, len(data), itt=itt, immediate=True))
        b[20:24] = b"\xff\xff\xff\xff"
        b[24:28] = struct.pack(">I", conn.cmdsn)
        b[28:32] = struct.pack(">I", conn.statsn)
        conn.send(bytes(b) + pad4(data))
        op, h, d = conn.recv_pdu()
        if op != OP_TEXT_RSP:
            print(f"FAIL: expected Text-Response, got {OP_NAMES.get(op, hex(op))}")
            return 1
        conn.statsn = struct.unpack(">I", h[24:28])[0] + 1
        for item in d.split(b"\0"):
            if item:
                print(f"SENDTARGETS {item.decode(errors='replace')}")
        resp = conn.logout()
        print(f"LOGOUT response={resp}")
        if resp != 0:
            return 1
        # RFC 7143: after the Logout Response the connection is done; the initiator may close
        # it. Nothing may follow the response; whether the target closes first is reported.
        conn.sock.settimeout(2.0)
        try:
            extra = conn.sock.recv(1)
            print("CLOSED target closed the connection after logout" if not extra else "")
        except ConnectionResetError:
            extra = b""
        except (socket.timeout, TimeoutError):
            extra = b""
            print("OPEN target left the connection open for the initiator to close (allowed)")
        if extra:
            print("FAIL: target sent more data after the Logout Response")
            return 1
        return 0
    except (Closed, RuntimeError, OSError) as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    finally:
        conn.close()


def decode_designators(page):
    out = []
    length = struct.unpack(">H", page[2:4])[0]
    body = page[4:4 + length]
    i = 0
    while i + 4 <= len(body):
        codeset = body[i] & 0x0F
        piv_assoc_type = body[i + 1]
        assoc = (piv_assoc_type >> 4) & 3
        dtype = piv_assoc_type & 0x0F
        dlen = body[i + 3]
        val = body[i + 4:i + 4 + dlen]
        shown = val.hex() if codeset == 1 else val.decode(errors="replace").rstrip("\0")
        out.append(f"DESIGNATOR type={dtype} assoc={assoc} codeset={codeset} value={shown}")
        i += 4 + dlen
    return out


def run_inquiry(args):
    conn = Conn(args.port, args.timeout)
    try:
        conn.login("Normal", args.iqn)
        if args.page is None:
            cdb = bytes([0x12, 0, 0, 0, 255, 0])
        else:
            cdb = bytes([0x12, 1, int(args.page, 0), 0, 255, 0])
        status, data = conn.scsi_read(args.lun, cdb, 255)
        print(f"STATUS {status:#04x}")
        print(f"HEX {data.hex()}")
        if args.page is not None and status == 0:
            page = int(args.page, 0)
            if page == 0x80 and len(data) >= 4:
                print(f"SERIAL {data[4:4 + data[3]].decode(errors='replace').strip()}")
            if page == 0x83:
                for line in decode_designators(data):
                    print(line)
        conn.logout()
        return 0 if status == 0 else 1
    except (Closed, RuntimeError, OSError) as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    finally:
        conn.close()


def wait_closed(conn, bound, drain=False):
    """Seconds until the target closes `conn` (None: still open after `bound`). Without
    `drain` any PDU counts as activity and is skipped; NOP-Ins are never answered."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        conn.sock.settimeout(max(0.05, bound - (time.monotonic() - t0)))
        try:
            chunk = conn.sock.recv(1 << 20 if drain else 4096)
        except (socket.timeout, TimeoutError):
            return None
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0
        if not chunk:
            return time.monotonic() - t0
    return None


def run_connections(args):
    socks, closed = [], 0
    for _ in range(args.count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout))
        except OSError:
            closed += 1
    time.sleep(0.5)
    open_ = []
    for s in socks:
        s.settimeout(0.2)
        try:
            gone = s.recv(1) == b""
        except (socket.timeout, TimeoutError):
            gone = False
        except OSError:
            gone = True
        if gone:
            closed += 1
            s.close()
        else:
            open_.append(s)
    print(f"CONNECTIONS open={len(open_)} closed={closed}", flush=True)
    time.sleep(args.hold)
    for s in open_:
        s.close()
    return 0


def run_sessions(args):
    conns, ok, refused, details = [], 0, 0, []
    for i in range(args.count):
        conn = Conn(args.port, args.timeout)
        conn.isid = bytes([0x80, 0x12, 0x34, 0x56, 0x00, i & 0xFF])
        try:
            conn.login("Normal", args.iqn)
            ok += 1
            details.append(f"{i}:ok")
            conns.append(conn)
        except RuntimeError as e:
            refused += 1
            details.append(f"{i}:{str(e).replace(' ', '_')}")
            conn.close()
        except (Closed, OSError) as e:
            refused += 1
            details.append(f"{i}:closed({type(e).__name__})")
            conn.close()
    print(f"SESSIONS ok={ok} refused={refused} {' '.join(details)}", flush=True)
    time.sleep(args.hold)
    for c in conns:
        try:
            c.logout()
        except (Closed, RuntimeError, OSError):
            pass
        c.close()
    return 0


def run_login_timeout(args):
    conn = Conn(args.port, args.timeout)
    t0 = time.monotonic()
    if args.half:
        data = pad4(text([("InitiatorName", INITIATOR), ("TargetName", args.iqn),
                          ("AuthMethod", "None")]))
        conn.send(login_bhs(0, 1, True, len(data)) + data[: len(data) // 2])
    dt = wait_closed(conn, args.bound)
    conn.close()
    if dt is None:
        print(f"OPEN after {args.bound:.1f} s")
    else:
        print(f"CLOSED after {time.monotonic() - t0:.1f} s")
    return 0


def run_nop_silent(args):
    conn = Conn(args.port, args.timeout)
    try:
        conn.login("Normal", args.iqn)
    except (Closed, RuntimeError, OSError) as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    t0 = time.monotonic()
    pings = 0
    conn.sock.settimeout(args.bound)
    while time.monotonic() - t0 < args.bound:
        try:
            op, h, _ = conn.recv_pdu()
        except (Closed, ConnectionResetError):
            print(f"NOPIN count={pings} closed_after={time.monotonic() - t0:.1f}")
            return 0
        except (socket.timeout, TimeoutError):
            break
        if op == 0x20:
            pings += 1
    print(f"NOPIN count={pings} closed_after=none (open after {args.bound:.0f}s)")
    conn.close()
    return 0


def run_no_read(args):
    conn = Conn(args.port, args.timeout, rcvbuf=args.rcvbuf)
    try:
        conn.login("Normal", args.iqn)
        # READ CAPACITY(10): the block size, to size the READs
        for _ in range(3):  # the first command of a new nexus may get a UNIT ATTENTION
            status, data = conn.scsi_read(args.lun, bytes([0x25] + [0] * 9), 8)
            if status == 0:
                break
        if status != 0 or len(data) < 8:
            print(f"FAIL: READ CAPACITY status {status:#04x}")
            return 1
        bs = struct.unpack(">I", data[4:8])[0]
        blocks = max(1, args.size // bs)
        # All commands in one write, so the target has them all before any response is due.
        batch = b""
        for i in range(args.count):
            lba = (i * blocks) % max(1, (struct.unpack(">I", data[0:4])[0] + 1 - blocks))
            cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)
            batch += conn.read_pdu(args.lun, cdb, blocks * bs)
        conn.sock.settimeout(5)
        conn.send(batch)
        sent = args.count
    except (Closed, RuntimeError, OSError) as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    print(f"NOREAD sent={sent} of {blocks * bs} bytes each; not reading", flush=True)
    t0 = time.monotonic()
    if args.signal_file:
        open(args.signal_file, "w").close()
    # Not reading: sleep in small steps until the wait is over, then look whether the target
    # closed (a closed connection shows as EOF/RST once the buffered bytes are drained).
    time.sleep(args.hold)
    dt = wait_closed(conn, args.bound, drain=True)
    conn.close()
    if dt is None:
        print(f"NOREAD closed_after=none (still open {args.hold + args.bound:.0f}s after the last READ)")
    else:
        print(f"NOREAD closed_after<={args.hold + dt:.1f}")
    return 0


OP_DATA_OUT, OP_TMF_REQ, OP_NOP_IN, OP_TMF_RSP, OP_R2T = 0x05, 0x02, 0x20, 0x22, 0x31
RESERVED = 0xFFFFFFFF


class Watcher:
    """Reads PDUs with arrival times, answering the target's NOP-In pings on the way."""

    def __init__(self, conn):
        self.conn = conn
        self.t0 = time.monotonic()
        self.seen = []  # (seconds since t0, opcode, itt, header)

    def poll(self, bound):
        """Reads PDUs for up to `bound` seconds; returns the new ones."""
        new = []
        end = time.monotonic() + bound
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return new
            self.conn.sock.settimeout(left)
            try:
                op, h, _ = self.conn.recv_pdu()
            except (socket.timeout, TimeoutError):
                return new
            itt = struct.unpack(">I", h[16:20])[0]
            if op in (OP_SCSI_RSP, OP_NOP_IN, OP_TMF_RSP) and itt != RESERVED:
                self.conn.statsn = struct.unpack(">I", h[24:28])[0] + 1
            ttt = struct.unpack(">I", h[20:24])[0]
            if op == OP_NOP_IN and itt == RESERVED and ttt != RESERVED:
                b = bytearray(bhs(OP_NOP_OUT, 0x80, 0, itt=RESERVED, immediate=True))
                b[20:24] = struct.pack(">I", ttt)
                b[24:28] = struct.pack(">I", self.conn.cmdsn)
                b[28:32] = struct.pack(">I", self.conn.statsn)
                self.conn.send(bytes(b))
            item = (time.monotonic() - self.t0, op, itt, h)
            self.seen.append(item)
            new.append(item)

    def wait_for(self, op, itt, bound):
        """Seconds since t0 when (op, itt) arrived (also if it already had), or None."""
        end = time.monotonic() + bound
        while True:
            for t, o, i, h in self.seen:
                if o == op and i == itt:
                    return t, h
            left = end - time.monotonic()
            if left <= 0:
                return None, None
            self.poll(min(left, 0.1))


def command_pdu(conn, cdb, edtl=0, write=False, read=False, immediate=False):
    """A SCSI Command PDU (no immediate data); returns (itt, cmdsn, bytes)."""
    itt = conn.next_itt()
    flags = 0x80 | (0x40 if read else 0) | (0x20 if write else 0) | 0x01
    b = bytearray(bhs(OP_SCSI_CMD, flags, 0, itt=itt, immediate=immediate))
    b[20:24] = struct.pack(">I", edtl)
    b[24:28] = struct.pack(">I", conn.cmdsn)
    b[28:32] = struct.pack(">I", conn.statsn)
    b[32:32 + len(cdb)] = cdb
    sn = conn.cmdsn
    if not immediate:
        conn.cmdsn += 1
    return itt, sn, bytes(b)


def send_solicited(conn, watcher, itt, size, bound):
    """Answers the R2Ts of task `itt` until `size` bytes went out; False when they stop."""
    sent = 0
    used = 0
    end = time.monotonic() + bound
    while sent < size:
        if time.monotonic() > end:
            return False
        watcher.poll(0.05)
        r2ts = [x for x in watcher.seen if x[1] == OP_R2T and x[2] == itt]
        for _, _, _, h in r2ts[used:]:
            ttt = struct.unpack(">I", h[20:24])[0]
            offset, length = struct.unpack(">II", h[40:48])
            done, data_sn = 0, 0
            while done < length:
                n = min(conn.max_send, length - done)
                last = done + n == length
                b = bytearray(bhs(OP_DATA_OUT, 0x80 if last else 0, n, itt=itt))
                b[20:24] = struct.pack(">I", ttt)
                b[28:32] = struct.pack(">I", conn.statsn)
                b[36:40] = struct.pack(">I", data_sn)
                b[40:44] = struct.pack(">I", offset + done)
                conn.send(bytes(b) + bytes([0xA5]) * n)
                done += n
                data_sn += 1
            sent += length
        used = len(r2ts)
    return True


def pump(watchers, secs):
    """Reads from every connection for `secs` seconds (answering pings on all of them)."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        for w in watchers:
            w.poll(0.02)


def wait_on(watchers, w, op, itt, bound):
    """Like Watcher.wait_for on `w`, while keeping the other connections served."""
    end = time.monotonic() + bound
    while True:
        t, h = w.wait_for(op, itt, 0)
        if t is not None or time.monotonic() > end:
            return t, h
        pump(watchers, 0.05)


def stalled_write(conn, w, lba, size, bound):
    """Sends a WRITE(10) of `size` bytes at `lba` with all its solicited data; returns
    (itt, cmdsn) or None when the data was not solicited in full."""
    blocks = size // 512
    cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)
    itt, sn, pdu = command_pdu(conn, cdb, edtl=blocks * 512, write=True)
    conn.send(pdu)
    if not send_solicited(conn, w, itt, blocks * 512, bound):
        return None
    return itt, sn


def abort_task_pdu(conn, itt, ref_sn):
    tmf_itt = conn.next_itt()
    b = bytearray(bhs(OP_TMF_REQ, 0x80 | 0x01, 0, itt=tmf_itt, immediate=True))
    b[20:24] = struct.pack(">I", itt)
    b[24:28] = struct.pack(">I", conn.cmdsn)
    b[28:32] = struct.pack(">I", conn.statsn)
    b[32:36] = struct.pack(">I", ref_sn)
    return tmf_itt, bytes(b)


def session(args, isid_last):
    conn = Conn(args.port, args.timeout)
    conn.isid = ISID[:5] + bytes([isid_last])
    conn.login("Normal", args.iqn)
    for _ in range(3):  # the first commands of a new nexus may get a UNIT ATTENTION
        status, _ = conn.scsi_read(0, bytes(6), 0)  # TEST UNIT READY
        if status == 0:
            break
    return conn


def run_budget_wake(args):
    try:
        a = session(args, 0xA1)
        wa = Watcher(a)
        write_a = stalled_write(a, wa, 0, args.size, args.bound)
        if write_a is None:
            print("FAIL: A's WRITE data was not solicited in full")
            return 1
        b = session(args, 0xB2)
        wb = Watcher(b)
        ws = [wa, wb]
        pump(ws, 0.3)  # A's WRITE is stalled, holding the budget
        # B has nothing running: it is admitted even with the budget used up.
        tur1, _, pdu = command_pdu(b, bytes(6))
        t0 = time.monotonic() - wb.t0
        b.send(pdu)
        t, _ = wait_on(ws, wb, OP_SCSI_RSP, tur1, args.bound)
        first = "none" if t is None else f"{t - t0:.3f}"
        write_b = stalled_write(b, wb, 100000, 4096, args.bound)
        if write_b is None:
            print("FAIL: B's WRITE data was not solicited")
            return 1
        pump(ws, 0.3)
        tur2, _, pdu = command_pdu(b, bytes(6))
        b.send(pdu)
        pump(ws, 1.0)
        early, _ = wb.wait_for(OP_SCSI_RSP, tur2, 0)
        tmf_itt, pdu = abort_task_pdu(a, *write_a)
        t_abort = time.monotonic() - wb.t0
        a.send(pdu)
        t, h = wait_on(ws, wa, OP_TMF_RSP, tmf_itt, args.bound)
        tmf = "none" if t is None else f"{h[2]:#04x}"
        t, _ = wait_on(ws, wb, OP_SCSI_RSP, tur2, args.bound)
        late = "none" if t is None else f"{t - t_abort:.3f}"
        tmf_b, pdu = abort_task_pdu(b, *write_b)
        b.send(pdu)
        wait_on(ws, wb, OP_TMF_RSP, tmf_b, args.bound)
    except (Closed, RuntimeError, OSError) as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    print(f"WAKE b_first_tur={first} b_held={'no' if early is not None else 'yes'} "
          f"a_tmf={tmf} b_tur={late}")
    a.close()
    b.close()
    return 0


def run_budget_stall(args):
    conn = Conn(args.port, args.timeout)
    try:
        conn.login("Normal", args.iqn)
        for _ in range(3):  # the first commands of a new nexus may get a UNIT ATTENTION
            status, _ = conn.scsi_read(0, bytes(6), 0)  # TEST UNIT READY
            if status == 0:
                break
        w = Watcher(conn)
        blocks = args.size // 512
        cdb = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, blocks, 0)  # WRITE(10) at LBA 0
        write_itt, write_sn, pdu = command_pdu(conn, cdb, edtl=blocks * 512, write=True)
        conn.send(pdu)
        if not send_solicited(conn, w, write_itt, blocks * 512, args.bound):
            print("FAIL: the WRITE's data was not solicited in full")
            return 1
        w.poll(0.5)  # the WRITE is now executing (stalled), holding the budget
        tur_itt, _, pdu = command_pdu(conn, bytes(6))
        conn.send(pdu)
        nop_itt = conn.next_itt()
        b = bytearray(bhs(OP_NOP_OUT, 0x80, 6, itt=nop_itt, immediate=True))
        b[20:24] = struct.pack(">I", RESERVED)
        b[24:28] = struct.pack(">I", conn.cmdsn)
        b[28:32] = struct.pack(">I", conn.statsn)
        t_nop = time.monotonic() - w.t0
        conn.send(bytes(b) + pad4(b"budget"))
        t, _ = w.wait_for(OP_NOP_IN, nop_itt, args.bound)
        nop = "none" if t is None else f"{t - t_nop:.3f}"
        w.poll(1.0)
        tur_early, _ = w.wait_for(OP_SCSI_RSP, tur_itt, 0)
        tmf_itt, tmf_pdu = abort_task_pdu(conn, write_itt, write_sn)
        t_tmf = time.monotonic() - w.t0
        conn.send(tmf_pdu)
        t, h = w.wait_for(OP_TMF_RSP, tmf_itt, args.bound)
        tmf = "none" if t is None else f"{h[2]:#04x}/{t - t_tmf:.3f}"
        t, h = w.wait_for(OP_SCSI_RSP, tur_itt, args.bound)
        tur = "none" if t is None else f"{h[3]:#04x}/{t - t_tmf:.3f}"
        w.poll(0.3)
        write_rsp = any(o == OP_SCSI_RSP and i == write_itt for _, o, i, _ in w.seen)
        window = any(o == OP_NOP_IN and i == RESERVED and struct.unpack(">I", h[20:24])[0] == RESERVED
                     for _, o, i, h in w.seen)
    except (Closed, RuntimeError, OSError) as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    print(f"BUDGET nop={nop} tur_before_abort={'yes' if tur_early is not None else 'no'} "
          f"tmf={tmf} tur={tur} write_response={'yes' if write_rsp else 'no'} "
          f"window_nop_in={'yes' if window else 'no'}")
    conn.close()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=False)
    p.add_argument("--iqn", default="")
    p.add_argument("--timeout", type=float, default=10.0)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("case")
    c.add_argument("name", choices=sorted(CASES))
    c.add_argument("--strict", action="store_true")
    c.add_argument("--bound", type=float, default=10.0, help="seconds to wait for a reaction")
    c.add_argument("--idle", type=float, default=3.0, help="seconds the idle case waits")
    sub.add_parser("cases")
    sub.add_parser("discovery")
    cn = sub.add_parser("connections")
    cn.add_argument("--count", type=int, default=8)
    cn.add_argument("--hold", type=float, default=1.0)
    se = sub.add_parser("sessions")
    se.add_argument("--count", type=int, default=3)
    se.add_argument("--hold", type=float, default=1.0)
    lt = sub.add_parser("login-timeout")
    lt.add_argument("--half", action="store_true")
    lt.add_argument("--bound", type=float, default=30.0)
    ns = sub.add_parser("nop-silent")
    ns.add_argument("--bound", type=float, default=60.0)
    nr = sub.add_parser("no-read")
    nr.add_argument("--lun", type=int, default=0)
    nr.add_argument("--count", type=int, default=128)
    nr.add_argument("--size", type=int, default=4 << 20)
    nr.add_argument("--rcvbuf", type=int, default=4096)
    nr.add_argument("--hold", type=float, default=10.0, help="seconds of not reading")
    nr.add_argument("--bound", type=float, default=30.0)
    nr.add_argument("--signal-file", default=None, help="touched once all READs are sent")
    bs = sub.add_parser("budget-stall")
    bs.add_argument("--size", type=int, default=8 << 20)
    bs.add_argument("--bound", type=float, default=5.0, help="seconds to wait for each answer")
    bw = sub.add_parser("budget-wake")
    bw.add_argument("--size", type=int, default=8 << 20)
    bw.add_argument("--bound", type=float, default=5.0, help="seconds to wait for each answer")
    q = sub.add_parser("inquiry")
    q.add_argument("--lun", type=int, default=0)
    q.add_argument("--page", default=None, help="VPD page, e.g. 0x83")
    args = p.parse_args()
    if args.cmd == "cases":
        for name, (_, react, desc) in CASES.items():
            print(f"{name}\t{'reaction' if react else 'survive'}\t{desc}")
        return 0
    if args.port is None:
        p.error("--port is required")
    if args.cmd == "case":
        args.iqn = args.iqn or "iqn.invalid"
        return run_case(args)
    if args.cmd == "discovery":
        return run_discovery(args)
    runners = {"connections": run_connections, "sessions": run_sessions,
               "login-timeout": run_login_timeout, "nop-silent": run_nop_silent,
               "no-read": run_no_read, "budget-stall": run_budget_stall,
               "budget-wake": run_budget_wake}
    if args.cmd in runners:
        return runners[args.cmd](args)
    return run_inquiry(args)


if __name__ == "__main__":
    sys.exit(main())
