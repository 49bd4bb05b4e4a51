//! Read-modify-write commands: COMPARE AND WRITE and ORWRITE read the blocks, derive from
//! them what to write, and write it. The gateway keeps other I/O on the same blocks out
//! meanwhile (`Task::needs_atomicity`), so no write lands between the read and the write.

use bytes::Bytes;

use super::{expect_data, expect_done, miscompare, Next, StepResult};
use crate::io::{BlockRequest, IoCompletion};
use crate::sense::Sense;

/// What a read-modify-write writes, given what it read.
#[derive(Debug)]
pub(super) enum Modify {
    /// COMPARE AND WRITE: the blocks must equal `compare`, then `write` replaces them
    /// (MISCOMPARE, with the offset of the first differing byte, otherwise).
    CompareThenWrite { compare: Bytes, write: Bytes },
    /// ORWRITE: the blocks become their bitwise OR with these bytes.
    Or(Bytes),
}

impl Modify {
    /// Bytes read (and then written) from the operation's offset.
    fn len(&self) -> usize {
        match self {
            Modify::CompareThenWrite { compare, .. } => compare.len(),
            Modify::Or(data) => data.len(),
        }
    }

    fn apply(&self, old: &[u8]) -> Result<Bytes, Sense> {
        match self {
            Modify::CompareThenWrite { compare, write } => {
                match old.iter().zip(compare.iter()).position(|(a, b)| a != b) {
                    Some(i) => Err(miscompare(i as u64)),
                    None => Ok(write.clone()),
                }
            }
            Modify::Or(data) => Ok(old.iter().zip(data.iter()).map(|(a, b)| a | b).collect()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Reading,
    Writing,
}

/// One read-modify-write: a read of `modify.len()` bytes at `offset`, then a write there.
#[derive(Debug)]
pub(super) struct RmwOp {
    offset: u64,
    modify: Modify,
    fua: bool,
    phase: Phase,
}

impl RmwOp {
    pub(super) fn new(offset: u64, modify: Modify, fua: bool) -> Self {
        RmwOp {
            offset,
            modify,
            fua,
            phase: Phase::Start,
        }
    }

    /// The bytes read and then written.
    pub(super) fn span(&self) -> std::ops::Range<u64> {
        self.offset..self.offset.saturating_add(self.modify.len() as u64)
    }

    pub(super) fn step(&mut self, c: Option<IoCompletion>) -> StepResult {
        let len = self.modify.len();
        match self.phase {
            Phase::Start => {
                if len == 0 {
                    return Ok(Next::Finish(Bytes::new()));
                }
                self.phase = Phase::Reading;
                Ok(Next::Io(BlockRequest::Read {
                    offset: self.offset,
                    len: len as u32,
                }))
            }
            Phase::Reading => {
                let old = expect_data(c, len as u64)?;
                let data = self.modify.apply(&old)?;
                self.phase = Phase::Writing;
                Ok(Next::Io(BlockRequest::Write {
                    offset: self.offset,
                    data,
                    fua: self.fua,
                }))
            }
            Phase::Writing => expect_done(c).map(|_| Next::Finish(Bytes::new())),
        }
    }
}
