//! A command in flight: a small state machine that asks for block I/O one request at a
//! time and ends in a [`Response`]. It owns everything it needs (data, offsets, flags),
//! so it is independent of the [`crate::LogicalUnit`] once started.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::io::{BlockRequest, Extent, IoCompletion, IoErrorKind, MediumOp, Step};
use crate::response::Response;
use crate::sense::{Asc, Sense, SenseKey};

mod rmw;
use rmw::{Modify, RmwOp};

/// Largest single write issued while expanding WRITE SAME or zero-filling.
pub const CHUNK_BYTES: u64 = 1 << 20;

/// Most LBA status descriptors reported by one GET LBA STATUS.
const MAX_LBA_STATUS_DESCRIPTORS: usize = 64;

/// A command in flight. Drive it with [`Task::poll`].
#[derive(Debug)]
pub struct Task {
    op: Op,
    /// The bytes of the medium the task may read or write (see [`Task::span`]).
    span: Option<Range<u64>>,
    descriptor_sense: bool,
    data_out_len: Option<u32>,
    pending: Option<BlockRequest>,
    finished: Option<Response>,
}

/// What an operation wants after a step.
#[derive(Debug)]
enum Next {
    Io(BlockRequest),
    Finish(Bytes),
}

type StepResult = Result<Next, Sense>;

#[derive(Debug)]
enum Op {
    Immediate(Option<Response>),
    Read(ReadOp),
    Write(WriteOp),
    Flush(FlushOp),
    Verify(VerifyOp),
    ReadModifyWrite(RmwOp),
    Fill(FillOp),
    Unmap(UnmapOp),
    LbaStatus(LbaStatusOp),
}

impl Op {
    /// See [`Task::span`].
    fn span(&self) -> Option<Range<u64>> {
        let from = |start: u64, len: u64| Some(start..start.saturating_add(len));
        match self {
            Op::Immediate(_) | Op::Flush(_) | Op::LbaStatus(_) => None,
            Op::Read(o) => from(o.offset, u64::from(o.len)),
            Op::Write(o) => from(o.offset, o.data.len() as u64),
            Op::Verify(o) => Some(o.base..o.end),
            Op::ReadModifyWrite(o) => Some(o.span()),
            Op::Fill(o) => Some(o.offset..o.end),
            Op::Unmap(o) => o.hull(),
        }
    }
}

impl Task {
    fn from_op(op: Op) -> Self {
        Task {
            span: op.span(),
            op,
            descriptor_sense: false,
            data_out_len: None,
            pending: None,
            finished: None,
        }
    }

    /// A task that is already complete.
    pub fn done(resp: Response) -> Self {
        Task::from_op(Op::Immediate(Some(resp)))
    }

    /// A task that completes with GOOD and this data-in.
    pub fn good(data: Bytes) -> Self {
        Task::done(Response::good(data))
    }

    pub(crate) fn read(offset: u64, len: u32) -> Self {
        Task::from_op(Op::Read(ReadOp {
            offset,
            len,
            issued: false,
        }))
    }

    pub(crate) fn write(offset: u64, data: Bytes, fua: bool) -> Self {
        if data.is_empty() {
            return Task::good(Bytes::new());
        }
        Task::from_op(Op::Write(WriteOp {
            offset,
            data,
            fua,
            issued: false,
        }))
    }

    pub(crate) fn flush() -> Self {
        Task::from_op(Op::Flush(FlushOp { issued: false }))
    }

    pub(crate) fn verify(offset: u64, len: u64, block_size: u32, mode: VerifyMode) -> Self {
        Task::from_op(Op::Verify(VerifyOp {
            base: offset,
            next: offset,
            end: offset.saturating_add(len),
            block_size: u64::from(block_size.max(1)),
            mode,
            inflight: 0,
        }))
    }

    pub(crate) fn compare_and_write(offset: u64, compare: Bytes, write: Bytes, fua: bool) -> Self {
        let modify = Modify::CompareThenWrite { compare, write };
        Task::from_op(Op::ReadModifyWrite(RmwOp::new(offset, modify, fua)))
    }

    pub(crate) fn or_write(offset: u64, data: Bytes, fua: bool) -> Self {
        let modify = Modify::Or(data);
        Task::from_op(Op::ReadModifyWrite(RmwOp::new(offset, modify, fua)))
    }

    /// WRITE SAME: `pattern` is one logical block (None = zeros).
    pub(crate) fn fill(
        offset: u64,
        len: u64,
        block_size: u32,
        pattern: Option<Bytes>,
        unmap: bool,
        fua: bool,
    ) -> Self {
        Task::from_op(Op::Fill(FillOp::new(
            offset, len, block_size, pattern, unmap, fua, false,
        )))
    }

    pub(crate) fn unmap(ranges: Vec<(u64, u64)>, block_size: u32) -> Self {
        Task::from_op(Op::Unmap(UnmapOp {
            ranges: ranges.into_iter().rev().collect(),
            current: None,
            block_size,
        }))
    }

    pub(crate) fn lba_status(
        start_lba: u64,
        num_blocks: u64,
        block_size: u32,
        alloc: usize,
    ) -> Self {
        Task::from_op(Op::LbaStatus(LbaStatusOp {
            start_lba,
            num_blocks,
            block_size: u64::from(block_size.max(1)),
            alloc,
            issued: false,
        }))
    }

    pub(crate) fn set_meta(&mut self, descriptor_sense: bool, data_out_len: Option<u32>) {
        self.descriptor_sense = descriptor_sense;
        self.data_out_len = data_out_len;
        if let Op::Immediate(Some(r)) = &mut self.op {
            if r.data_out_len.is_none() {
                r.data_out_len = data_out_len;
            }
        }
    }

    /// True for commands whose read and write must see no other I/O on their
    /// [`span`](Task::span) in between (COMPARE AND WRITE, ORWRITE): the gateway keeps
    /// overlapping I/O out while they run.
    pub fn needs_atomicity(&self) -> bool {
        matches!(self.op, Op::ReadModifyWrite(_))
    }

    /// The bytes of the medium this task may read or write, from its first I/O to its
    /// last, as it was started; `None` for a task that touches no logical block (an
    /// answer without I/O, SYNCHRONIZE CACHE, GET LBA STATUS). UNMAP's span is the hull
    /// of its ranges.
    pub fn span(&self) -> Option<Range<u64>> {
        self.span.clone()
    }

    /// True once the task has produced its response (and would produce it again).
    pub fn is_done(&self) -> bool {
        self.finished.is_some() || matches!(self.op, Op::Immediate(_))
    }

    /// Advance: first call with `None`, then with the result of each I/O requested.
    /// Calling with `None` while an I/O is outstanding repeats that request; calling
    /// after completion repeats the response.
    pub fn poll(&mut self, completion: Option<IoCompletion>) -> Step {
        if let Some(r) = &self.finished {
            return Step::Done(r.clone());
        }
        let completion = match (completion, &self.pending) {
            (None, Some(p)) => return Step::Io(p.clone()),
            (Some(_), None) => None, // stray completion before any request: ignore it
            (c, _) => c,
        };
        self.pending = None;
        let result = match &mut self.op {
            Op::Immediate(r) => {
                let mut resp = r.take().unwrap_or_default();
                if resp.data_out_len.is_none() {
                    resp.data_out_len = self.data_out_len;
                }
                self.finished = Some(resp.clone());
                return Step::Done(resp);
            }
            Op::Read(o) => o.step(completion),
            Op::Write(o) => o.step(completion),
            Op::Flush(o) => o.step(completion),
            Op::Verify(o) => o.step(completion),
            Op::ReadModifyWrite(o) => o.step(completion),
            Op::Fill(o) => o.step(completion),
            Op::Unmap(o) => o.step(completion),
            Op::LbaStatus(o) => o.step(completion),
        };
        let resp = match result {
            Ok(Next::Io(req)) => {
                self.pending = Some(req.clone());
                return Step::Io(req);
            }
            Ok(Next::Finish(data)) => Response::good(data),
            Err(sense) => Response::check(&sense, self.descriptor_sense),
        }
        .with_data_out_len(self.data_out_len);
        self.finished = Some(resp.clone());
        Step::Done(resp)
    }
}

/// Sense for an I/O failure of a request issued by a read (`false`) or write (`true`).
pub(crate) fn io_error_sense(kind: IoErrorKind) -> Sense {
    match kind {
        IoErrorKind::Medium(MediumOp::Read) => {
            Sense::new(SenseKey::MediumError, Asc::UNRECOVERED_READ_ERROR)
        }
        IoErrorKind::Medium(MediumOp::Write) => Sense::new(SenseKey::MediumError, Asc::WRITE_ERROR),
        IoErrorKind::NoSpace => Sense::new(SenseKey::DataProtect, Asc::SPACE_ALLOCATION_FAILED),
        IoErrorKind::Hardware | IoErrorKind::Unsupported => internal_failure(),
    }
}

fn internal_failure() -> Sense {
    Sense::new(SenseKey::HardwareError, Asc::INTERNAL_TARGET_FAILURE)
}

fn expect_done(c: Option<IoCompletion>) -> Result<(), Sense> {
    match c {
        Some(IoCompletion::Done) => Ok(()),
        Some(IoCompletion::Error(k)) => Err(io_error_sense(k)),
        _ => Err(internal_failure()),
    }
}

fn expect_data(c: Option<IoCompletion>, len: u64) -> Result<Bytes, Sense> {
    match c {
        Some(IoCompletion::Data(d)) if d.len() as u64 == len => Ok(d),
        Some(IoCompletion::Error(k)) => Err(io_error_sense(k)),
        _ => Err(internal_failure()),
    }
}

fn miscompare(offset: u64) -> Sense {
    Sense::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY).with_info(offset)
}

#[derive(Debug)]
struct ReadOp {
    offset: u64,
    len: u32,
    issued: bool,
}

impl ReadOp {
    fn step(&mut self, c: Option<IoCompletion>) -> StepResult {
        if !self.issued {
            self.issued = true;
            if self.len == 0 {
                return Ok(Next::Finish(Bytes::new()));
            }
            return Ok(Next::Io(BlockRequest::Read {
                offset: self.offset,
                len: self.len,
            }));
        }
        expect_data(c, u64::from(self.len)).map(Next::Finish)
    }
}

#[derive(Debug)]
struct WriteOp {
    offset: u64,
    data: Bytes,
    fua: bool,
    issued: bool,
}

impl WriteOp {
    fn step(&mut self, c: Option<IoCompletion>) -> StepResult {
        if !self.issued {
            self.issued = true;
            return Ok(Next::Io(BlockRequest::Write {
                offset: self.offset,
                data: self.data.clone(),
                fua: self.fua,
            }));
        }
        expect_done(c).map(|_| Next::Finish(Bytes::new()))
    }
}

#[derive(Debug)]
struct FlushOp {
    issued: bool,
}

impl FlushOp {
    fn step(&mut self, c: Option<IoCompletion>) -> StepResult {
        if !self.issued {
            self.issued = true;
            return Ok(Next::Io(BlockRequest::Flush));
        }
        match c {
            // A backend without a volatile cache has nothing to flush.
            Some(IoCompletion::Error(IoErrorKind::Unsupported)) => Ok(Next::Finish(Bytes::new())),
            c => expect_done(c).map(|_| Next::Finish(Bytes::new())),
        }
    }
}

/// What VERIFY compares the medium against.
#[derive(Debug)]
pub(crate) enum VerifyMode {
    /// BYTCHK 0: only check that the medium reads.
    Medium,
    /// BYTCHK 1: compare with the data-out, byte for byte.
    Compare(Bytes),
    /// BYTCHK 3: compare every block with the single data-out block.
    CompareEach(Bytes),
}

#[derive(Debug)]
struct VerifyOp {
    base: u64,
    next: u64,
    end: u64,
    block_size: u64,
    mode: VerifyMode,
    inflight: u64,
}

impl VerifyOp {
    fn step(&mut self, c: Option<IoCompletion>) -> StepResult {
        if self.inflight > 0 {
            let data = expect_data(c, self.inflight)?;
            let start = self.next - self.base;
            let bad = match &self.mode {
                VerifyMode::Medium => None,
                VerifyMode::Compare(expected) => {
                    let exp = crate::cdb::Fields(expected).slice(start as usize, data.len());
                    data.iter().zip(exp.iter()).position(|(a, b)| a != b)
                }
                VerifyMode::CompareEach(block) => {
                    let bs = block.len().max(1);
                    data.iter()
                        .enumerate()
                        .position(|(i, a)| block.get(i % bs) != Some(a))
                }
            };
            if let Some(i) = bad {
                return Err(miscompare(start + i as u64));
            }
            self.next += self.inflight;
            self.inflight = 0;
        }
        if self.next >= self.end {
            return Ok(Next::Finish(Bytes::new()));
        }
        let chunk = (CHUNK_BYTES / self.block_size).max(1) * self.block_size;
        let len = (self.end - self.next).min(chunk);
        self.inflight = len;
        Ok(Next::Io(BlockRequest::Read {
            offset: self.next,
            len: len as u32,
        }))
    }
}

/// How a fill tries to produce its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillPhase {
    /// Nothing issued yet.
    Start,
    /// A Discard is outstanding (UNMAP).
    Discarding,
    /// A WriteZeroes is outstanding.
    Zeroing,
    /// Writing the pattern chunk by chunk; `FillOp::next` is the next offset.
    Writing,
}

/// WRITE SAME / zero fill / one UNMAP range.
#[derive(Debug)]
struct FillOp {
    offset: u64,
    end: u64,
    block_size: u64,
    /// One block of pattern, or None for zeros.
    pattern: Option<Bytes>,
    unmap: bool,
    fua: bool,
    discard_first: bool,
    phase: FillPhase,
    chunk: Option<Bytes>,
    next: u64,
}

impl FillOp {
    fn new(
        offset: u64,
        len: u64,
        block_size: u32,
        pattern: Option<Bytes>,
        unmap: bool,
        fua: bool,
        discard_first: bool,
    ) -> Self {
        let pattern = pattern.filter(|p| p.iter().any(|&b| b != 0));
        FillOp {
            offset,
            end: offset.saturating_add(len),
            block_size: u64::from(block_size.max(1)),
            pattern,
            unmap,
            fua,
            discard_first,
            phase: FillPhase::Start,
            chunk: None,
            next: offset,
        }
    }

    fn len(&self) -> u64 {
        self.end - self.offset
    }

    fn chunk(&mut self) -> Bytes {
        if let Some(c) = &self.chunk {
            return c.clone();
        }
        let per = (CHUNK_BYTES / self.block_size).max(1);
        let blocks = (self.len() / self.block_size).clamp(1, per);
        let size = (blocks * self.block_size) as usize;
        let c = match &self.pattern {
            Some(p) => {
                let mut b = BytesMut::with_capacity(size);
                while b.len() < size {
                    let take = (size - b.len()).min(p.len().max(1));
                    b.extend_from_slice(crate::cdb::Fields(p).slice(0, take));
                    if p.is_empty() {
                        b.resize(size, 0);
                    }
                }
                b.freeze()
            }
            None => Bytes::from(vec![0u8; size]),
        };
        self.chunk = Some(c.clone());
        c
    }

    fn write_next(&mut self) -> StepResult {
        if self.next >= self.end {
            return Ok(Next::Finish(Bytes::new()));
        }
        let chunk = self.chunk();
        let len = (self.end - self.next).min(chunk.len() as u64) as usize;
        let req = BlockRequest::Write {
            offset: self.next,
            data: chunk.slice(0..len),
            fua: self.fua,
        };
        self.next += len as u64;
        Ok(Next::Io(req))
    }

    fn zeroes(&mut self) -> StepResult {
        self.phase = FillPhase::Zeroing;
        Ok(Next::Io(BlockRequest::WriteZeroes {
            offset: self.offset,
            len: self.len(),
            unmap: self.unmap,
        }))
    }

    fn step(&mut self, c: Option<IoCompletion>) -> StepResult {
        match self.phase {
            FillPhase::Start => {
                if self.len() == 0 {
                    return Ok(Next::Finish(Bytes::new()));
                }
                if self.pattern.is_some() {
                    self.phase = FillPhase::Writing;
                    return self.write_next();
                }
                if self.discard_first {
                    self.phase = FillPhase::Discarding;
                    return Ok(Next::Io(BlockRequest::Discard {
                        offset: self.offset,
                        len: self.len(),
                    }));
                }
                self.zeroes()
            }
            FillPhase::Discarding => match c {
                Some(IoCompletion::Error(IoErrorKind::Unsupported)) => self.zeroes(),
                c => expect_done(c).map(|_| Next::Finish(Bytes::new())),
            },
            FillPhase::Zeroing => match c {
                Some(IoCompletion::Error(IoErrorKind::Unsupported)) => {
                    self.phase = FillPhase::Writing;
                    self.write_next()
                }
                c => expect_done(c).map(|_| Next::Finish(Bytes::new())),
            },
            FillPhase::Writing => {
                expect_done(c)?;
                self.write_next()
            }
        }
    }
}

#[derive(Debug)]
struct UnmapOp {
    /// Remaining (offset, len) ranges in bytes, last one first.
    ranges: Vec<(u64, u64)>,
    current: Option<FillOp>,
    block_size: u32,
}

impl UnmapOp {
    /// From the lowest start to the highest end of the ranges still to do.
    fn hull(&self) -> Option<Range<u64>> {
        let start = self.ranges.iter().map(|r| r.0).min()?;
        let end = self.ranges.iter().map(|r| r.0.saturating_add(r.1)).max()?;
        Some(start..end)
    }

    fn step(&mut self, mut c: Option<IoCompletion>) -> StepResult {
        loop {
            if let Some(cur) = &mut self.current {
                match cur.step(c.take())? {
                    Next::Io(r) => return Ok(Next::Io(r)),
                    Next::Finish(_) => self.current = None,
                }
            }
            match self.ranges.pop() {
                None => return Ok(Next::Finish(Bytes::new())),
                Some((off, len)) => {
                    self.current = Some(FillOp::new(
                        off,
                        len,
                        self.block_size,
                        None,
                        true,
                        false,
                        true,
                    ));
                }
            }
        }
    }
}

#[derive(Debug)]
struct LbaStatusOp {
    start_lba: u64,
    num_blocks: u64,
    block_size: u64,
    alloc: usize,
    issued: bool,
}

impl LbaStatusOp {
    fn step(&mut self, c: Option<IoCompletion>) -> StepResult {
        if !self.issued {
            self.issued = true;
            let blocks = self.num_blocks.saturating_sub(self.start_lba);
            return Ok(Next::Io(BlockRequest::MappingStatus {
                offset: self.start_lba.saturating_mul(self.block_size),
                len: blocks.saturating_mul(self.block_size),
            }));
        }
        let extents = match c {
            Some(IoCompletion::Mapping(e)) => e,
            Some(IoCompletion::Error(IoErrorKind::Unsupported)) => Vec::new(),
            Some(IoCompletion::Error(k)) => return Err(io_error_sense(k)),
            _ => return Err(internal_failure()),
        };
        let descs = lba_descriptors(self.start_lba, self.num_blocks, self.block_size, &extents);
        Ok(Next::Finish(encode_lba_status(&descs, self.alloc)))
    }
}

/// Turn byte extents into (lba, blocks, mapped) runs starting at `start`. Gaps and
/// partially covered blocks count as mapped; runs stop where the extents stop.
pub(crate) fn lba_descriptors(
    start: u64,
    num_blocks: u64,
    bs: u64,
    extents: &[Extent],
) -> Vec<(u64, u64, bool)> {
    let mut sorted: Vec<Extent> = extents.to_vec();
    sorted.sort_by_key(|e| e.offset);
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let push = |out: &mut Vec<(u64, u64, bool)>, s: u64, e: u64, mapped: bool| {
        if e <= s {
            return;
        }
        match out.last_mut() {
            Some(last) if last.2 == mapped && last.0 + last.1 == s => last.1 += e - s,
            _ => out.push((s, e - s, mapped)),
        }
    };
    let mut cur = start;
    for e in &sorted {
        if cur >= num_blocks || out.len() >= MAX_LBA_STATUS_DESCRIPTORS {
            break;
        }
        let end_byte = e.offset.saturating_add(e.len);
        let (s, t) = if e.mapped {
            (e.offset / bs, end_byte.div_ceil(bs))
        } else {
            (e.offset.div_ceil(bs), end_byte / bs)
        };
        let t = t.min(num_blocks);
        if t <= cur {
            continue;
        }
        if s > cur {
            // Not described (or a partial block): report as mapped.
            push(&mut out, cur, s.min(num_blocks), true);
            cur = s.min(num_blocks);
        }
        push(&mut out, cur, t, e.mapped);
        cur = t;
    }
    if out.is_empty() && start < num_blocks {
        out.push((start, num_blocks - start, true));
    }
    // Split runs that do not fit the 32-bit NUMBER OF LOGICAL BLOCKS field.
    let mut split = Vec::with_capacity(out.len());
    for (mut lba, mut n, m) in out {
        while n > 0 {
            let take = n.min(u64::from(u32::MAX));
            split.push((lba, take, m));
            lba += take;
            n -= take;
        }
    }
    split.truncate(MAX_LBA_STATUS_DESCRIPTORS);
    split
}

fn encode_lba_status(descs: &[(u64, u64, bool)], alloc: usize) -> Bytes {
    let mut b = vec![0u8; 8 + 16 * descs.len()];
    let len = (b.len() - 4) as u32;
    crate::cdb::put_be(&mut b, 0, &len.to_be_bytes());
    for (i, (lba, n, mapped)) in descs.iter().enumerate() {
        let at = 8 + 16 * i;
        crate::cdb::put_be(&mut b, at, &lba.to_be_bytes());
        crate::cdb::put_be(&mut b, at + 8, &(*n as u32).to_be_bytes());
        crate::cdb::put_be(&mut b, at + 12, &[if *mapped { 0 } else { 1 }]);
    }
    crate::cdb::truncate(b, alloc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, len: u64, mapped: bool) -> Extent {
        Extent {
            offset,
            len,
            mapped,
        }
    }

    #[test]
    fn descriptors_round_partial_blocks_to_mapped() {
        let d = lba_descriptors(
            0,
            100,
            512,
            &[
                ext(0, 1024, true),
                ext(1024, 700, false),
                ext(1724, 10_000_000, true),
            ],
        );
        assert_eq!(d, vec![(0, 2, true), (2, 1, false), (3, 97, true)]);
        let d = lba_descriptors(4, 100, 512, &[ext(0, 4096, false), ext(4096, 512, true)]);
        assert_eq!(d, vec![(4, 4, false), (8, 1, true)]);
    }

    #[test]
    fn descriptors_without_extents_are_mapped() {
        assert_eq!(lba_descriptors(5, 10, 512, &[]), vec![(5, 5, true)]);
    }

    #[test]
    fn poll_none_repeats_pending() {
        let mut t = Task::read(0, 512);
        let a = t.poll(None);
        assert_eq!(t.poll(None), a);
        match t.poll(Some(IoCompletion::Error(IoErrorKind::Medium(
            MediumOp::Read,
        )))) {
            Step::Done(r) => {
                let s = r.sense.unwrap_or_default();
                assert_eq!((s[2], s[12], s[13]), (3, 0x11, 0));
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn io_errors_map_to_sense() {
        assert_eq!(
            io_error_sense(IoErrorKind::NoSpace).asc,
            Asc::SPACE_ALLOCATION_FAILED
        );
        assert_eq!(
            io_error_sense(IoErrorKind::Hardware).key,
            SenseKey::HardwareError
        );
        assert_eq!(
            io_error_sense(IoErrorKind::Medium(MediumOp::Write)).asc,
            Asc::WRITE_ERROR
        );
    }
}
