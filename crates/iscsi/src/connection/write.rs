//! Write data assembly for one task: immediate data, unsolicited Data-Out up to
//! FirstBurstLength, then R2T-solicited bursts. Validates DataSN, BufferOffset, TTT and
//! bounds for each Data-Out and tracks which R2Ts are outstanding.
//!
//! Data that arrives in more than one piece is assembled in a pooled 4096-aligned buffer
//! (`bufpool`), so the gateway hands it to O_DIRECT as it is. Data that arrives in one
//! piece is kept as it is only when it already starts 4096-aligned (the gateway received it
//! into a pooled buffer of its own); otherwise it is a slice of the connection's input
//! buffer, and keeping it would keep that whole buffer (256 KiB, other PDUs' bytes with it)
//! alive until the write completes, outside the data budget's count. It is copied into a
//! pooled buffer of its own size then, the copy O_DIRECT needed anyway.
//!
//! The assembly buffer (which also takes that copy) is `AlignedBuf::for_overwrite` (a
//! recycled buffer may hold an earlier command's data) and is handed out only once every
//! byte of it was written: see [`WriteState::take`].

use bufpool::AlignedBuf;
use bytes::Bytes;

use crate::pdu::ScsiDataOut;

/// A Data-Out that does not fit the transfer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataOutError {
    /// The TTT matches no outstanding R2T (answered with Reject, invalid PDU field).
    UnknownTtt,
    /// Unsolicited data where none is allowed.
    UnexpectedUnsolicited,
    /// DataSN out of sequence.
    DataSn,
    /// BufferOffset not where the sequence continues.
    BufferOffset,
    /// Data beyond the burst or the expected transfer length.
    Overflow,
}

impl DataOutError {
    /// ASCQ under ASC 0x4B (DATA PHASE ERROR family, SAM/SPC) that describes the error.
    pub(crate) fn data_phase_ascq(self) -> u8 {
        match self {
            DataOutError::UnknownTtt => 0x01, // invalid target port transfer tag received
            DataOutError::Overflow => 0x02,   // too much write data
            DataOutError::BufferOffset => 0x05, // data offset error
            DataOutError::DataSn | DataOutError::UnexpectedUnsolicited => 0x00, // data phase error
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            DataOutError::UnknownTtt => "Data-Out with unknown target transfer tag",
            DataOutError::UnexpectedUnsolicited => "unsolicited Data-Out not allowed",
            DataOutError::DataSn => "Data-Out DataSN out of order",
            DataOutError::BufferOffset => "Data-Out BufferOffset out of order",
            DataOutError::Overflow => "Data-Out beyond burst or expected length",
        }
    }
}

#[derive(Debug, Clone)]
struct R2tState {
    ttt: u32,
    offset: u32,
    len: u32,
    next_offset: u32,
    next_data_sn: u32,
}

/// A solicitation to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct R2tOut {
    pub ttt: u32,
    pub r2t_sn: u32,
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug)]
pub(crate) struct WriteState {
    edtl: u32,
    /// Whole payload when it arrived in one piece, 4096-aligned (zero-copy path).
    single: Option<Bytes>,
    /// Assembly buffer of `edtl` bytes once data arrived in pieces.
    buf: Option<AlignedBuf>,
    /// Bytes stored so far; each offset is stored at most once (offsets are checked to
    /// continue their sequence), so `received == edtl` means every byte was written.
    received: u32,
    unsol_open: bool,
    unsol_next_offset: u32,
    unsol_next_data_sn: u32,
    unsol_limit: u32,
    next_r2t_offset: u32,
    r2ts: Vec<R2tState>,
    next_r2t_sn: u32,
}

impl WriteState {
    /// `immediate` is the command's immediate data (already checked against `edtl` and
    /// FirstBurstLength); `unsolicited` whether Data-Out PDUs without R2T follow.
    pub(crate) fn new(edtl: u32, immediate: Bytes, unsolicited: bool, first_burst: u32) -> Self {
        let imm = immediate.len() as u32;
        let mut w = WriteState {
            edtl,
            single: None,
            buf: None,
            received: 0,
            unsol_open: unsolicited,
            unsol_next_offset: imm,
            unsol_next_data_sn: 0,
            unsol_limit: first_burst.min(edtl),
            next_r2t_offset: imm,
            r2ts: Vec::new(),
            next_r2t_sn: 0,
        };
        if imm > 0 {
            w.store(0, &immediate);
        }
        w
    }

    fn store(&mut self, offset: u32, data: &Bytes) {
        let len = data.len() as u32;
        let aligned = (data.as_ptr() as usize).is_multiple_of(bufpool::BUF_ALIGN);
        if offset == 0 && len == self.edtl && self.received == 0 && aligned {
            self.single = Some(data.clone());
        } else {
            let edtl = self.edtl as usize;
            // Not zeroed: `take` hands it out only when every byte was stored.
            let buf = self
                .buf
                .get_or_insert_with(|| AlignedBuf::for_overwrite(edtl));
            let buf = buf.as_mut_slice();
            if let Some(s) = self.single.take() {
                if let Some(dst) = buf.get_mut(..s.len()) {
                    dst.copy_from_slice(&s);
                }
            }
            let (o, e) = (offset as usize, (offset + len) as usize);
            if let Some(dst) = buf.get_mut(o..e) {
                dst.copy_from_slice(data);
            }
        }
        self.received += len;
    }

    /// True once data for this write is held or on its way: some arrived, an R2T is
    /// outstanding or unsolicited Data-Out may follow. Until then the write holds no buffer.
    pub(crate) fn holds_data(&self) -> bool {
        self.received > 0 || self.unsol_open || !self.r2ts.is_empty()
    }

    /// Whether [`WriteState::next_r2t`] would issue an R2T now.
    pub(crate) fn wants_r2t(&self, max_outstanding: u32) -> bool {
        !self.unsol_open
            && self.next_r2t_offset < self.edtl
            && (self.r2ts.len() as u32) < max_outstanding
    }

    /// Number of R2Ts issued so far.
    pub(crate) fn r2t_count(&self) -> u32 {
        self.next_r2t_sn
    }

    /// All data received and nothing outstanding.
    pub(crate) fn complete(&self) -> bool {
        !self.unsol_open && self.r2ts.is_empty() && self.next_r2t_offset >= self.edtl
    }

    /// The assembled payload (EDTL bytes); called once [`WriteState::complete`].
    ///
    /// Complete means every byte of the (recycled, not zeroed) assembly buffer was
    /// written: immediate data covers `[0, imm)`, unsolicited Data-Out continue it without
    /// gaps (offset checked) up to the final one, and R2Ts cover the rest back to back
    /// (`next_r2t_offset` reaches EDTL), each removed only when its data arrived in full and
    /// in order. Should that ever not hold (`received < edtl`), the buffer is zeroed rather
    /// than let an earlier command's bytes through.
    pub(crate) fn take(&mut self) -> Bytes {
        if let Some(b) = self.single.take() {
            return b;
        }
        match self.buf.take() {
            Some(mut buf) => {
                if self.received < self.edtl {
                    debug_assert!(false, "write data taken before all of it arrived");
                    buf.as_mut_slice().fill(0);
                }
                Bytes::from_owner(buf)
            }
            None => Bytes::new(),
        }
    }

    /// Applies one Data-Out.
    pub(crate) fn accept(&mut self, d: &ScsiDataOut) -> Result<(), DataOutError> {
        let len = d.data.len() as u32;
        if d.ttt == 0xffff_ffff {
            if !self.unsol_open {
                return Err(DataOutError::UnexpectedUnsolicited);
            }
            if d.data_sn != self.unsol_next_data_sn {
                return Err(DataOutError::DataSn);
            }
            if d.buffer_offset != self.unsol_next_offset {
                return Err(DataOutError::BufferOffset);
            }
            let end = d
                .buffer_offset
                .checked_add(len)
                .ok_or(DataOutError::Overflow)?;
            if end > self.unsol_limit {
                return Err(DataOutError::Overflow);
            }
            self.store(d.buffer_offset, &d.data);
            self.unsol_next_offset = end;
            self.unsol_next_data_sn += 1;
            if d.final_ {
                self.unsol_open = false;
                self.next_r2t_offset = end;
            }
            return Ok(());
        }
        let idx = self
            .r2ts
            .iter()
            .position(|r| r.ttt == d.ttt)
            .ok_or(DataOutError::UnknownTtt)?;
        let r = self.r2ts.get_mut(idx).ok_or(DataOutError::UnknownTtt)?;
        if d.data_sn != r.next_data_sn {
            return Err(DataOutError::DataSn);
        }
        if d.buffer_offset != r.next_offset {
            return Err(DataOutError::BufferOffset);
        }
        let end = d
            .buffer_offset
            .checked_add(len)
            .ok_or(DataOutError::Overflow)?;
        if end > r.offset + r.len {
            return Err(DataOutError::Overflow);
        }
        if d.final_ && end != r.offset + r.len {
            return Err(DataOutError::Overflow);
        }
        r.next_offset = end;
        r.next_data_sn += 1;
        let done = end == r.offset + r.len;
        self.store(d.buffer_offset, &d.data);
        if done {
            self.r2ts.remove(idx);
        }
        Ok(())
    }

    /// Next R2T to send, if the unsolicited phase is over, data remains unsolicited and fewer
    /// than `max_outstanding` R2Ts are outstanding. `ttt` is the tag to use.
    pub(crate) fn next_r2t(
        &mut self,
        max_burst: u32,
        max_outstanding: u32,
        ttt: u32,
    ) -> Option<R2tOut> {
        if self.unsol_open || self.next_r2t_offset >= self.edtl {
            return None;
        }
        if self.r2ts.len() as u32 >= max_outstanding {
            return None;
        }
        let offset = self.next_r2t_offset;
        let len = max_burst.min(self.edtl - offset);
        self.next_r2t_offset += len;
        let r2t_sn = self.next_r2t_sn;
        self.next_r2t_sn += 1;
        self.r2ts.push(R2tState {
            ttt,
            offset,
            len,
            next_offset: offset,
            next_data_sn: 0,
        });
        Some(R2tOut {
            ttt,
            r2t_sn,
            offset,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dout(ttt: u32, sn: u32, off: u32, data: &[u8], f: bool) -> ScsiDataOut {
        ScsiDataOut {
            final_: f,
            lun: 0,
            itt: 1,
            ttt,
            exp_stat_sn: 0,
            data_sn: sn,
            buffer_offset: off,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn immediate_unsolicited_r2t() {
        let mut w = WriteState::new(40, Bytes::from_static(&[1; 8]), true, 16);
        assert_eq!(
            w.next_r2t(10, 2, 5),
            None,
            "no R2T during unsolicited phase"
        );
        w.accept(&dout(0xffff_ffff, 0, 8, &[2; 8], true)).unwrap();
        let a = w.next_r2t(10, 2, 5).unwrap();
        assert_eq!((a.offset, a.len, a.r2t_sn), (16, 10, 0));
        let b = w.next_r2t(10, 2, 6).unwrap();
        assert_eq!((b.offset, b.len, b.r2t_sn), (26, 10, 1));
        assert_eq!(w.next_r2t(10, 2, 7), None, "MaxOutstandingR2T");
        w.accept(&dout(5, 0, 16, &[3; 5], false)).unwrap();
        assert_eq!(
            w.accept(&dout(5, 0, 21, &[3; 5], true)),
            Err(DataOutError::DataSn)
        );
        w.accept(&dout(5, 1, 21, &[3; 5], true)).unwrap();
        let c = w.next_r2t(10, 2, 7).unwrap();
        assert_eq!((c.offset, c.len), (36, 4));
        w.accept(&dout(6, 0, 26, &[4; 10], true)).unwrap();
        w.accept(&dout(7, 0, 36, &[5; 4], true)).unwrap();
        assert!(w.complete());
        let data = w.take();
        assert_eq!(data.len(), 40);
        assert_eq!(&data[..8], &[1; 8]);
        assert_eq!(&data[36..], &[5; 4]);
    }

    #[test]
    fn errors() {
        let mut w = WriteState::new(20, Bytes::new(), true, 16);
        assert_eq!(
            w.accept(&dout(0xffff_ffff, 0, 4, &[0; 4], false)),
            Err(DataOutError::BufferOffset)
        );
        assert_eq!(
            w.accept(&dout(0xffff_ffff, 0, 0, &[0; 20], false)),
            Err(DataOutError::Overflow)
        );
        assert_eq!(
            w.accept(&dout(9, 0, 0, &[0; 4], false)),
            Err(DataOutError::UnknownTtt)
        );
        w.accept(&dout(0xffff_ffff, 0, 0, &[0; 16], true)).unwrap();
        assert_eq!(
            w.accept(&dout(0xffff_ffff, 1, 16, &[0; 4], true)),
            Err(DataOutError::UnexpectedUnsolicited)
        );
    }

    #[test]
    fn assembled_data_is_aligned() {
        for edtl in [512u32, 4096, 131072, 131072 + 512] {
            let mut w = WriteState::new(edtl, Bytes::from(vec![1u8; 512]), true, edtl);
            w.accept(&dout(
                0xffff_ffff,
                0,
                512,
                &vec![2u8; edtl as usize - 512],
                true,
            ))
            .unwrap();
            assert!(w.complete());
            let data = w.take();
            assert_eq!(data.len(), edtl as usize);
            assert_eq!(data.as_ptr() as usize % bufpool::BUF_ALIGN, 0);
            assert_eq!(&data[..512], &[1u8; 512][..]);
            assert!(data[512..].iter().all(|&b| b == 2));
        }
    }

    #[test]
    fn recycled_assembly_buffer_shows_no_stale_bytes() {
        let edtl = 128u32 << 10;
        // Leave a dirty buffer of the assembly's size class on this thread's free list.
        let mut stale = AlignedBuf::for_overwrite(edtl as usize);
        stale.as_mut_slice().fill(0xee);
        let stale_ptr = stale.as_mut_ptr() as usize;
        drop(stale);
        let mut w = WriteState::new(edtl, Bytes::from(vec![1u8; 4096]), true, 65536);
        w.accept(&dout(0xffff_ffff, 0, 4096, &vec![2u8; 65536 - 4096], true))
            .unwrap();
        let r2t = w.next_r2t(32768, 2, 9).unwrap();
        w.accept(&dout(9, 0, r2t.offset, &vec![3u8; r2t.len as usize], true))
            .unwrap();
        let r2t = w.next_r2t(32768, 2, 10).unwrap();
        w.accept(&dout(10, 0, r2t.offset, &vec![4u8; r2t.len as usize], true))
            .unwrap();
        assert!(w.complete());
        let data = w.take();
        assert_eq!(
            data.as_ptr() as usize,
            stale_ptr,
            "the dirty buffer was reused"
        );
        assert_eq!(data.len(), edtl as usize);
        assert!(
            data.iter().all(|&b| (1..=4).contains(&b)),
            "stale bytes leaked"
        );
    }

    #[test]
    fn aligned_single_pdu_is_zero_copy() {
        let mut buf = AlignedBuf::for_overwrite(4096);
        buf.as_mut_slice().fill(7);
        let b = Bytes::from_owner(buf);
        let mut w = WriteState::new(4096, b.clone(), false, 65536);
        assert!(w.complete());
        let got = w.take();
        assert_eq!(got.as_ptr(), b.as_ptr());
    }

    #[test]
    fn unaligned_single_pdu_is_copied_and_releases_the_input_buffer() {
        // A slice of a larger input buffer, as the ordinary receive path produces.
        let mut input = vec![0u8; 65536 + 48];
        input[48..].fill(9);
        let input = Bytes::from(input);
        let data = input.slice(48..);
        for (name, mut w) in [
            (
                "immediate",
                WriteState::new(65536, data.clone(), false, 65536),
            ),
            ("one Data-Out", {
                let mut w = WriteState::new(65536, Bytes::new(), true, 65536);
                let mut d = dout(0xffff_ffff, 0, 0, &[], true);
                d.data = data.clone();
                w.accept(&d).unwrap();
                w
            }),
        ] {
            assert!(w.complete(), "{name}");
            let got = w.take();
            assert_ne!(got.as_ptr(), data.as_ptr(), "{name}: copied");
            assert_eq!(got.as_ptr() as usize % bufpool::BUF_ALIGN, 0, "{name}");
            assert!(got.iter().all(|&b| b == 9), "{name}");
        }
        drop(data);
        assert!(
            input.is_unique(),
            "no write state still holds the input buffer"
        );
    }
}
