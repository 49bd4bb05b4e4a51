//! SBC-3 block commands: READ/WRITE (6/10/12/16), WRITE AND VERIFY, VERIFY,
//! PRE-FETCH, SYNCHRONIZE CACHE, WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE,
//! READ CAPACITY and GET LBA STATUS. Validation happens here; the I/O itself is a
//! [`Task`].

use bytes::Bytes;

use crate::cdb::{put_be, truncate, Fields};
use crate::lun::{Exec, Fail, LogicalUnit};
use crate::opcodes::{Cmd, RwSize};
use crate::sense::{Asc, Sense, SenseKey};
use crate::task::{Task, VerifyMode};
use crate::types::{Command, LunConfig};
use crate::vpd::{max_compare_and_write_blocks, max_transfer_blocks};

/// LBA, number of blocks and the byte offset of the length field of a block CDB.
fn decode_rw(size: RwSize, cdb: Fields<'_>, six_zero_is_256: bool) -> (u64, u64, u16) {
    match size {
        RwSize::B6 => {
            let lba = u64::from(cdb.be24(1) & 0x1F_FFFF);
            let n = u64::from(cdb.u8(4));
            let n = if n == 0 && six_zero_is_256 { 256 } else { n };
            (lba, n, 4)
        }
        RwSize::B10 => (u64::from(cdb.be32(2)), u64::from(cdb.be16(7)), 7),
        RwSize::B12 => (u64::from(cdb.be32(2)), u64::from(cdb.be32(6)), 6),
        RwSize::B16 => (cdb.be64(2), u64::from(cdb.be32(10)), 10),
    }
}

/// Bytes of data-out the CDB asks for (None when the command has no data-out).
pub(crate) fn data_out_len(cmd: Cmd, cdb: Fields<'_>, block_size: u32) -> Option<u32> {
    let bs = u64::from(block_size);
    let bytes = match cmd {
        Cmd::Write(sz) => decode_rw(sz, cdb, true).1 * bs,
        Cmd::WriteVerify(sz) => decode_rw(sz, cdb, true).1 * bs,
        Cmd::OrWrite => decode_rw(RwSize::B16, cdb, false).1 * bs,
        Cmd::Verify(sz) => match (cdb.u8(1) >> 1) & 0x03 {
            1 => decode_rw(sz, cdb, false).1 * bs,
            3 => bs,
            _ => return None,
        },
        Cmd::WriteSame(RwSize::B16) if cdb.u8(1) & 0x01 != 0 => return None,
        Cmd::WriteSame(_) => bs,
        Cmd::CompareAndWrite => 2 * u64::from(cdb.u8(13)) * bs,
        Cmd::Unmap => u64::from(cdb.be16(7)),
        Cmd::ModeSelect6 => u64::from(cdb.u8(4)),
        Cmd::ModeSelect10 => u64::from(cdb.be16(7)),
        Cmd::PrOut(_) => u64::from(cdb.be32(5)),
        _ => return None,
    };
    Some(u32::try_from(bytes).unwrap_or(u32::MAX))
}

fn short_data_out() -> Sense {
    Sense::illegal(Asc::INVALID_FIELD_IN_CMD_IU)
}

/// The first `bytes` of the data-out buffer; less is an error.
fn data_prefix(cmd: &Command, bytes: u64) -> Result<Bytes, Sense> {
    let n = usize::try_from(bytes).map_err(|_| short_data_out())?;
    if cmd.data_out.len() < n {
        return Err(short_data_out());
    }
    Ok(cmd.data_out.slice(0..n))
}

/// The whole data-out buffer, which must be exactly `bytes` long.
fn data_exact(cmd: &Command, bytes: u64) -> Result<Bytes, Sense> {
    if cmd.data_out_too_large || cmd.data_out.len() as u64 != bytes {
        return Err(short_data_out());
    }
    Ok(cmd.data_out.clone())
}

/// What the commands that access the medium (READ, WRITE, WRITE AND VERIFY, VERIFY,
/// PRE-FETCH, SYNCHRONIZE CACHE, WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE) are
/// checked against: geometry, limits, write protection and the write cache. Taken from a
/// logical unit under its owner's lock ([`LogicalUnit::medium`]) or from the lock-free
/// snapshot in `fast.rs`; both decode through it, so they answer alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Medium {
    pub block_size: u32,
    pub num_blocks: u64,
    pub max_transfer_blocks: u32,
    pub read_only: bool,
    /// Software write protect (control mode page SWP).
    pub swp: bool,
    /// Every write carries FUA: the LUN has a write cache and the initiator turned it off.
    pub cache_off: bool,
    /// The configured limits of WRITE SAME, UNMAP and COMPARE AND WRITE.
    pub max_write_same_blocks: u64,
    pub max_unmap_blocks: u32,
    pub max_unmap_descriptors: u32,
    pub max_compare_and_write_blocks: u8,
}

impl Medium {
    /// The parts fixed by the configuration, with the full capacity of `cfg`, no software
    /// write protection and the write cache as configured (what a unit starts with).
    pub(crate) fn configured(cfg: &LunConfig) -> Medium {
        Medium {
            block_size: cfg.block_size,
            num_blocks: cfg.num_blocks,
            max_transfer_blocks: max_transfer_blocks(cfg),
            read_only: cfg.read_only,
            swp: false,
            cache_off: false,
            max_write_same_blocks: cfg.max_write_same_blocks,
            max_unmap_blocks: cfg.max_unmap_blocks,
            max_unmap_descriptors: cfg.max_unmap_descriptors,
            max_compare_and_write_blocks: max_compare_and_write_blocks(cfg),
        }
    }

    fn bs(&self) -> u64 {
        u64::from(self.block_size)
    }

    /// LBA range check: the LBA must exist and the range must end inside the medium.
    pub(crate) fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        match lba.checked_add(blocks) {
            Some(end) if lba < self.num_blocks && end <= self.num_blocks => Ok(()),
            _ => Err(Sense::lba_out_of_range()),
        }
    }

    fn check_transfer(&self, blocks: u64, len_at: u16) -> Result<(), Sense> {
        if blocks > u64::from(self.max_transfer_blocks) {
            return Err(Sense::invalid_cdb(len_at, None));
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<(), Sense> {
        if self.read_only {
            return Err(Sense::new(SenseKey::DataProtect, Asc::WRITE_PROTECTED));
        }
        if self.swp {
            return Err(Sense::new(
                SenseKey::DataProtect,
                Asc::SOFTWARE_WRITE_PROTECTED,
            ));
        }
        Ok(())
    }

    /// FUA to use for a write: forced when the initiator disabled the write cache.
    fn fua(&self, requested: bool) -> bool {
        requested || self.cache_off
    }

    /// Starts `which` if it [accesses the medium](Cmd::accesses_medium); `None` for any
    /// other command.
    pub(crate) fn start(&self, which: Cmd, cdb: Fields<'_>, cmd: &Command) -> Option<Exec> {
        Some(match which {
            Cmd::Read(size) => self.read(size, cdb),
            Cmd::Write(size) => self.write(size, cdb, cmd, false),
            Cmd::WriteVerify(size) => self.write(size, cdb, cmd, true),
            Cmd::Verify(size) => self.verify(size, cdb, cmd),
            Cmd::PreFetch(size) => self.prefetch(size, cdb),
            Cmd::SyncCache(size) => self.sync_cache(size, cdb),
            Cmd::WriteSame(size) => self.write_same(size, cdb, cmd),
            Cmd::Unmap => self.unmap(cdb, cmd),
            Cmd::CompareAndWrite => self.compare_and_write(cdb, cmd),
            Cmd::OrWrite => self.or_write(cdb, cmd),
            _ => return None,
        })
    }

    /// READ (6/10/12/16).
    fn read(&self, size: RwSize, cdb: Fields<'_>) -> Exec {
        let (lba, blocks, len_at) = decode_rw(size, cdb, true);
        self.check_transfer(blocks, len_at)?;
        self.check_range(lba, blocks)?;
        Ok(Task::read(lba * self.bs(), (blocks * self.bs()) as u32))
    }

    /// WRITE (6/10/12/16), and WRITE AND VERIFY with `verify`.
    fn write(&self, size: RwSize, cdb: Fields<'_>, cmd: &Command, verify: bool) -> Exec {
        let (lba, blocks, len_at) = decode_rw(size, cdb, true);
        self.check_transfer(blocks, len_at)?;
        self.check_range(lba, blocks)?;
        self.check_writable()?;
        // When the transport delivered less than the CDB asks for (iSCSI EDTL below the
        // transfer length), write only the whole blocks received; the transport reports the
        // rest as an overflow residual (what libiscsi's Write*Residuals tests and LIO expect).
        let wanted = blocks * self.bs();
        let received = (cmd.data_out.len() as u64).min(wanted);
        let whole = received - received % self.bs();
        if whole == 0 {
            return Ok(Task::good(Bytes::new()));
        }
        let data = data_prefix(cmd, whole)?;
        // WRITE AND VERIFY: the data must be on the medium before we report success.
        let fua = self.fua(verify || (size != RwSize::B6 && cdb.u8(1) & 0x08 != 0));
        Ok(Task::write(lba * self.bs(), data, fua))
    }

    /// SYNCHRONIZE CACHE (10/16).
    fn sync_cache(&self, size: RwSize, cdb: Fields<'_>) -> Exec {
        let (lba, blocks, _) = decode_rw(size, cdb, false);
        self.check_range(lba, blocks)?;
        Ok(Task::flush())
    }

    /// VERIFY (10/12/16).
    fn verify(&self, size: RwSize, cdb: Fields<'_>, cmd: &Command) -> Exec {
        let (lba, blocks, len_at) = decode_rw(size, cdb, false);
        let bytchk = (cdb.u8(1) >> 1) & 0x03;
        if bytchk == 2 {
            return Err(Sense::invalid_cdb(1, Some(2)).into());
        }
        if bytchk == 1 {
            self.check_transfer(blocks, len_at)?;
        }
        self.check_range(lba, blocks)?;
        let mode = match bytchk {
            1 => VerifyMode::Compare(data_prefix(cmd, blocks * self.bs())?),
            3 => VerifyMode::CompareEach(data_prefix(cmd, self.bs())?),
            _ => VerifyMode::Medium,
        };
        Ok(Task::verify(
            lba * self.bs(),
            blocks * self.bs(),
            self.block_size,
            mode,
        ))
    }

    /// PRE-FETCH (10/16).
    fn prefetch(&self, size: RwSize, cdb: Fields<'_>) -> Exec {
        let (lba, blocks, _) = decode_rw(size, cdb, false);
        self.check_range(lba, blocks)?;
        Ok(Task::good(Bytes::new()))
    }

    /// WRITE SAME (10/16).
    fn write_same(&self, size: RwSize, cdb: Fields<'_>, cmd: &Command) -> Exec {
        let (lba, blocks, len_at) = decode_rw(size, cdb, false);
        let unmap = cdb.u8(1) & 0x08 != 0;
        let ndob = size == RwSize::B16 && cdb.u8(1) & 0x01 != 0;
        self.check_range(lba, blocks)?;
        let blocks = if blocks == 0 {
            self.num_blocks - lba
        } else {
            blocks
        };
        let max = self.max_write_same_blocks;
        if max > 0 && blocks > max {
            return Err(Sense::invalid_cdb(len_at, None).into());
        }
        self.check_writable()?;
        // With UNMAP set the range is deallocated whatever the pattern (as LIO does
        // and libiscsi expects): LBPRZ makes it read back as zeros.
        let pattern = if ndob {
            None
        } else {
            Some(data_exact(cmd, self.bs())?).filter(|_| !unmap)
        };
        Ok(Task::fill(
            lba * self.bs(),
            blocks * self.bs(),
            self.block_size,
            pattern,
            unmap,
            self.fua(false),
        ))
    }

    /// UNMAP.
    fn unmap(&self, cdb: Fields<'_>, cmd: &Command) -> Exec {
        self.check_writable()?;
        let plen = usize::from(cdb.be16(7));
        if plen == 0 {
            return Ok(Task::good(Bytes::new()));
        }
        if plen < 8 || cmd.data_out.len() < plen {
            return Err(Sense::illegal(Asc::PARAMETER_LIST_LENGTH_ERROR).into());
        }
        let p = Fields(cmd.data_out.get(..plen).unwrap_or(&[]));
        let bd_len = usize::from(p.be16(2)).min(plen - 8);
        let count = bd_len / 16;
        if count > self.max_unmap_descriptors as usize {
            return Err(Sense::invalid_param(2, None).into());
        }
        let mut ranges = Vec::with_capacity(count);
        let mut total: u64 = 0;
        for i in 0..count {
            let at = 8 + 16 * i;
            let lba = p.be64(at);
            let n = u64::from(p.be32(at + 8));
            if n == 0 {
                continue;
            }
            self.check_range(lba, n)?;
            total += n;
            if total > u64::from(self.max_unmap_blocks) {
                return Err(Sense::invalid_param((at + 8) as u16, None).into());
            }
            ranges.push((lba * self.bs(), n * self.bs()));
        }
        Ok(Task::unmap(ranges, self.block_size))
    }

    /// COMPARE AND WRITE.
    fn compare_and_write(&self, cdb: Fields<'_>, cmd: &Command) -> Exec {
        let lba = cdb.be64(2);
        let nlb = u64::from(cdb.u8(13));
        if nlb > u64::from(self.max_compare_and_write_blocks) {
            return Err(Sense::invalid_cdb(13, None).into());
        }
        self.check_range(lba, nlb)?;
        self.check_writable()?;
        if nlb == 0 {
            // Zero blocks transfer nothing; data sent anyway means the 8-bit count was
            // wrapped (e.g. 256 blocks asked for) and must not be read as "nothing to do".
            if !cmd.data_out.is_empty() || cmd.data_out_too_large {
                return Err(Sense::invalid_cdb(13, None).into());
            }
            return Ok(Task::good(Bytes::new()));
        }
        let half = nlb * self.bs();
        let data = data_exact(cmd, 2 * half)?;
        let h = half as usize;
        Ok(Task::compare_and_write(
            lba * self.bs(),
            data.slice(0..h),
            data.slice(h..),
            self.fua(cdb.u8(1) & 0x08 != 0),
        ))
    }

    /// ORWRITE (16).
    fn or_write(&self, cdb: Fields<'_>, cmd: &Command) -> Exec {
        let (lba, blocks, len_at) = decode_rw(RwSize::B16, cdb, false);
        self.check_transfer(blocks, len_at)?;
        self.check_range(lba, blocks)?;
        self.check_writable()?;
        let data = data_prefix(cmd, blocks * self.bs())?;
        Ok(Task::or_write(
            lba * self.bs(),
            data,
            self.fua(cdb.u8(1) & 0x08 != 0),
        ))
    }
}

impl LogicalUnit {
    /// What the medium-access commands are checked against, now.
    pub(crate) fn medium(&self) -> Medium {
        Medium {
            num_blocks: self.num_blocks,
            swp: self.mode.swp,
            cache_off: self.cfg.write_cache && !self.mode.wce,
            ..Medium::configured(&self.cfg)
        }
    }

    pub(crate) fn read_capacity10(&self, cdb: Fields<'_>) -> Exec {
        if cdb.u8(8) & 0x01 == 0 && cdb.be32(2) != 0 {
            return Err(Fail::Check(Sense::invalid_cdb(2, None)));
        }
        let last = self.num_blocks.saturating_sub(1);
        let mut d = vec![0u8; 8];
        put_be(
            &mut d,
            0,
            &u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes(),
        );
        put_be(&mut d, 4, &self.cfg.block_size.to_be_bytes());
        Ok(Task::good(Bytes::from(d)))
    }

    pub(crate) fn read_capacity16(&self, cdb: Fields<'_>) -> Task {
        let alloc = cdb.be32(10) as usize;
        let mut d = vec![0u8; 32];
        put_be(&mut d, 0, &self.num_blocks.saturating_sub(1).to_be_bytes());
        put_be(&mut d, 8, &self.cfg.block_size.to_be_bytes());
        d[13] = self.cfg.lbppb_exponent(); // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
        if self.cfg.unmap {
            d[14] = 0x80 | 0x40; // LBPME, LBPRZ
        }
        Task::good(truncate(d, alloc))
    }

    pub(crate) fn get_lba_status(&self, cdb: Fields<'_>) -> Exec {
        let lba = cdb.be64(2);
        let alloc = cdb.be32(10) as usize;
        if lba >= self.num_blocks {
            return Err(Sense::lba_out_of_range().into());
        }
        if !self.cfg.unmap {
            // Fully provisioned: everything is mapped, no need to ask the backend.
            let mut t = Task::lba_status(lba, self.num_blocks, self.cfg.block_size, alloc);
            if let crate::io::Step::Io(_) = t.poll(None) {
                let _ = t.poll(Some(crate::io::IoCompletion::Error(
                    crate::io::IoErrorKind::Unsupported,
                )));
            }
            return match t.poll(None) {
                crate::io::Step::Done(r) => Ok(Task::done(r)),
                crate::io::Step::Io(_) => Err(Sense::illegal(Asc::INVALID_FIELD_IN_CDB).into()),
            };
        }
        Ok(Task::lba_status(
            lba,
            self.num_blocks,
            self.cfg.block_size,
            alloc,
        ))
    }
}
