//! Test rig: an in-memory disk (`Vec<u8>` plus a per-block allocation map) that
//! completes [`BlockRequest`]s, CDB builders, and sense parsing helpers.

use bytes::Bytes;
use proptest::prelude::*;

use crate::{
    BlockRequest, Command, Extent, IoCompletion, IoErrorKind, LogicalUnit, LunConfig, Nexus,
    Response, Step, TargetPort,
};

/// In-memory backing store.
pub struct MemDisk {
    pub data: Vec<u8>,
    pub bs: usize,
    pub mapped: Vec<bool>,
    pub log: Vec<BlockRequest>,
    /// Fail requests of these kinds with `Unsupported`.
    pub unsupported: Vec<&'static str>,
    /// Fail the next request with this error.
    pub fail_next: Option<IoErrorKind>,
}

fn kind(r: &BlockRequest) -> &'static str {
    match r {
        BlockRequest::Read { .. } => "read",
        BlockRequest::Write { .. } => "write",
        BlockRequest::Flush => "flush",
        BlockRequest::Discard { .. } => "discard",
        BlockRequest::WriteZeroes { .. } => "zeroes",
        BlockRequest::MappingStatus { .. } => "mapping",
    }
}

impl MemDisk {
    pub fn new(bs: usize, blocks: usize) -> Self {
        MemDisk {
            data: vec![0; bs * blocks],
            bs,
            mapped: vec![true; blocks],
            log: Vec::new(),
            unsupported: Vec::new(),
            fail_next: None,
        }
    }

    fn range(&self, off: u64, len: u64) -> std::ops::Range<usize> {
        let s = off as usize;
        let e = (off + len) as usize;
        assert!(e <= self.data.len(), "I/O beyond the disk: {off}+{len}");
        assert_eq!(s % self.bs, 0, "unaligned offset");
        assert_eq!((e - s) % self.bs, 0, "unaligned length");
        s..e
    }

    fn zero(&mut self, off: u64, len: u64, unmap: bool) {
        let r = self.range(off, len);
        self.data[r.clone()].fill(0);
        for b in r.start / self.bs..r.end / self.bs {
            self.mapped[b] = !unmap;
        }
    }

    pub fn complete(&mut self, req: &BlockRequest) -> IoCompletion {
        self.log.push(req.clone());
        if let Some(k) = self.fail_next.take() {
            return IoCompletion::Error(k);
        }
        if self.unsupported.contains(&kind(req)) {
            return IoCompletion::Error(IoErrorKind::Unsupported);
        }
        match req {
            BlockRequest::Read { offset, len } => {
                let r = self.range(*offset, u64::from(*len));
                IoCompletion::Data(Bytes::copy_from_slice(&self.data[r]))
            }
            BlockRequest::Write { offset, data, .. } => {
                assert!(data.len() as u64 <= crate::CHUNK_BYTES.max(data.len() as u64));
                let r = self.range(*offset, data.len() as u64);
                self.data[r.clone()].copy_from_slice(data);
                for b in r.start / self.bs..r.end / self.bs {
                    self.mapped[b] = true;
                }
                IoCompletion::Done
            }
            BlockRequest::Flush => IoCompletion::Done,
            BlockRequest::Discard { offset, len } => {
                self.zero(*offset, *len, true);
                IoCompletion::Done
            }
            BlockRequest::WriteZeroes { offset, len, unmap } => {
                self.zero(*offset, *len, *unmap);
                IoCompletion::Done
            }
            BlockRequest::MappingStatus { offset, len } => {
                let first = (*offset as usize) / self.bs;
                let last = ((offset + len) as usize) / self.bs;
                let mut ext: Vec<Extent> = Vec::new();
                for b in first..last {
                    let m = self.mapped[b];
                    match ext.last_mut() {
                        Some(e) if e.mapped == m => e.len += self.bs as u64,
                        _ => ext.push(Extent {
                            offset: (b * self.bs) as u64,
                            len: self.bs as u64,
                            mapped: m,
                        }),
                    }
                }
                IoCompletion::Mapping(ext)
            }
        }
    }

    pub fn block(&self, lba: usize) -> &[u8] {
        &self.data[lba * self.bs..(lba + 1) * self.bs]
    }
}

pub const BLOCKS: u64 = 4096;

pub fn cfg() -> LunConfig {
    LunConfig {
        num_blocks: BLOCKS,
        serial: "SN0001".into(),
        naa: [0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        max_transfer_blocks: 1024,
        max_write_same_blocks: 8192,
        ..LunConfig::default()
    }
}

pub fn port() -> TargetPort {
    TargetPort {
        target_name: "iqn.2024-01.org.example:tgt".into(),
        relative_port_id: 1,
        port_group: 7,
    }
}

pub fn nexus(id: u64) -> Nexus {
    Nexus {
        id,
        initiator_port: format!("iqn.2024-01.org.example:init{id},i,0x00023d00000{id}"),
        initiator_name: format!("iqn.2024-01.org.example:init{id}"),
        relative_port_id: 1,
    }
}

/// A LUN plus its disk.
pub struct Rig {
    pub lun: LogicalUnit,
    pub disk: MemDisk,
}

impl Rig {
    pub fn new() -> Self {
        Rig::with(cfg())
    }

    pub fn with(c: LunConfig) -> Self {
        let disk = MemDisk::new(c.block_size as usize, c.num_blocks as usize);
        Rig {
            lun: LogicalUnit::new(c, port()),
            disk,
        }
    }

    /// Run a command to completion (max 100k I/O steps).
    pub fn run(&mut self, n: &Nexus, cdb: &[u8], data: &[u8]) -> Response {
        let cmd = Command::with_data(cdb, Bytes::copy_from_slice(data));
        let mut t = self.lun.start(n, &cmd);
        drive(&mut t, &mut self.disk)
    }

    pub fn clear_ua(&mut self, n: &Nexus) -> usize {
        let mut count = 0;
        for _ in 0..20 {
            let r = self.run(n, &[0; 6], &[]);
            if r.status == 0 {
                return count;
            }
            count += 1;
        }
        count
    }
}

pub fn drive(t: &mut crate::Task, disk: &mut MemDisk) -> Response {
    let span = t.span();
    let mut step = t.poll(None);
    for _ in 0..100_000 {
        match step {
            Step::Done(r) => return r,
            Step::Io(req) => {
                crate::fuzz::assert_within(&req, span.as_ref());
                let c = disk.complete(&req);
                step = t.poll(Some(c));
            }
        }
    }
    panic!("task did not finish");
}

/// (sense key, asc, ascq) of a CHECK CONDITION response (fixed or descriptor format).
pub fn sense(r: &Response) -> (u8, u8, u8) {
    assert_eq!(r.status, 2, "expected CHECK CONDITION, got {r:?}");
    let s = r.sense.as_ref().expect("sense data");
    match s[0] & 0x7F {
        0x70 => (s[2] & 0x0F, s[12], s[13]),
        0x72 => (s[1] & 0x0F, s[2], s[3]),
        x => panic!("bad response code {x:#x}"),
    }
}

/// (C/D, byte, bit) of the sense-key-specific field pointer (fixed format).
pub fn field_pointer(r: &Response) -> Option<(bool, u16, Option<u8>)> {
    let s = r.sense.as_ref()?;
    if s[0] & 0x7F != 0x70 || s[15] & 0x80 == 0 {
        return None;
    }
    let bit = if s[15] & 0x08 != 0 {
        Some(s[15] & 7)
    } else {
        None
    };
    Some((s[15] & 0x40 != 0, u16::from_be_bytes([s[16], s[17]]), bit))
}

/// INFORMATION field, if VALID (fixed format).
pub fn info(r: &Response) -> Option<u32> {
    let s = r.sense.as_ref()?;
    (s[0] & 0x80 != 0).then(|| u32::from_be_bytes([s[3], s[4], s[5], s[6]]))
}

pub fn assert_good(r: &Response) {
    assert_eq!(
        r.status,
        0,
        "expected GOOD, got {r:?} sense {:?}",
        r.sense.as_ref().map(|s| s.to_vec())
    );
}

/// PERSISTENT RESERVE OUT with service action `sa`, type `ty`, reservation key `rk`,
/// service action reservation key `sark` and the flags byte (SPEC_I_PT, ALL_TG_PT, APTPL).
pub fn prout(rig: &mut Rig, n: &Nexus, sa: u8, ty: u8, rk: u64, sark: u64, flags: u8) -> Response {
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&rk.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    p[20] = flags;
    rig.run(n, &[0x5F, sa, ty, 0, 0, 0, 0, 0, 24, 0], &p)
}

/// REGISTER AND IGNORE EXISTING KEY `key` for `n`.
pub fn register(rig: &mut Rig, n: &Nexus, key: u64) {
    let r = prout(rig, n, 6, 0, 0, key, 0);
    assert_good(&r);
    assert!(r.pr_state_changed);
}

pub fn read10(lba: u32, n: u16) -> Vec<u8> {
    let mut c = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&n.to_be_bytes());
    c
}

pub fn write10(lba: u32, n: u16) -> Vec<u8> {
    let mut c = read10(lba, n);
    c[0] = 0x2A;
    c
}

pub fn rw16(op: u8, lba: u64, n: u32) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&n.to_be_bytes());
    c
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Random CDBs: an opcode from `opcodes` and `rest` more random bytes. Half of them have
/// every byte after the first `keep` of `rest` masked to its two low bits, so LBAs and
/// lengths stay small and the command is likely valid.
pub fn arb_cdb(
    opcodes: &'static [u8],
    rest: std::ops::Range<usize>,
    keep: usize,
) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(opcodes),
        proptest::collection::vec(any::<u8>(), rest),
        any::<bool>(),
    )
        .prop_map(move |(op, mut rest, small)| {
            if small {
                for b in rest.iter_mut().skip(keep) {
                    *b &= 0x03;
                }
            }
            let mut c = vec![op];
            c.append(&mut rest);
            c
        })
}
