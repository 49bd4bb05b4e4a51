//! Fuzzes the SCSI CDB decoder and command model: the first byte picks how much of the
//! input is the CDB (its value mod 33) and the reservation state the command meets (its
//! value / 33), the rest is the Data-Out buffer. A panic anywhere is a bug.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cdb_len = (split as usize % 33).min(rest.len());
    let (cdb, payload) = rest.split_at(cdb_len);
    scsi::fuzz_cdb(split / 33, cdb, payload);
});
