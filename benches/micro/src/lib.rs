//! Criterion micro-benchmarks of the sans-IO hot paths, kept out of the library crates so
//! their dependencies stay lean: `benches/pdu_codec.rs` (iSCSI framing, decode and encode,
//! ns per PDU) and `benches/cdb_decode.rs` (SCSI command start: CDB decode and checks, ns
//! per command). Run with `cargo bench -p micro-benches`; see benches/README.md.
