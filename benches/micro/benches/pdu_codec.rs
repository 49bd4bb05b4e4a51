//! iSCSI PDU codec: framing + decoding of the PDUs a busy session receives (SCSI Command
//! READ(10) without data, WRITE(10) with 4 KiB immediate data, Data-Out of 128 KiB) and
//! encoding of what it sends (Data-In with status), with and without CRC32C digests.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use iscsi::pdu::{
    next_pdu, FrameConfig, Pdu, Residual, ScsiCommandPdu, ScsiDataIn, ScsiDataOut, SnFields,
};

fn command(itt: u32, write: bool, data: Bytes) -> Pdu {
    let mut cdb = [0u8; 16];
    cdb[0] = if write { 0x2a } else { 0x28 };
    cdb[2..6].copy_from_slice(&(itt * 8).to_be_bytes());
    cdb[8] = 8;
    Pdu::ScsiCommand(ScsiCommandPdu {
        immediate: false,
        final_: true,
        read: !write,
        write,
        attr: 1,
        lun: 0,
        itt,
        edtl: 4096,
        cmd_sn: itt,
        exp_stat_sn: 1,
        cdb,
        ext_cdb: None,
        bidi_read_len: None,
        data,
    })
}

fn data_out(len: usize) -> Pdu {
    Pdu::DataOut(ScsiDataOut {
        final_: true,
        lun: 0,
        itt: 9,
        ttt: 3,
        exp_stat_sn: 1,
        data_sn: 0,
        buffer_offset: 0,
        data: Bytes::from(vec![0x5a; len]),
    })
}

fn data_in(len: usize) -> Pdu {
    Pdu::DataIn(ScsiDataIn {
        final_: true,
        ack: false,
        has_status: true,
        residual: Residual::None,
        status: 0,
        lun: 0,
        itt: 5,
        ttt: 0xffff_ffff,
        sn: SnFields {
            stat_sn: 7,
            exp_cmd_sn: 8,
            max_cmd_sn: 40,
        },
        data_sn: 0,
        buffer_offset: 0,
        data: Bytes::from(vec![0xa5; len]),
    })
}

/// Frames and decodes one PDU from a receive buffer, as `handle_input` does.
fn decode_one(mut buf: BytesMut, cfg: &FrameConfig) -> Pdu {
    next_pdu(&mut buf, cfg).unwrap().unwrap()
}

fn decode(c: &mut Criterion) {
    for digests in [false, true] {
        let cfg = FrameConfig {
            header_digest: digests,
            data_digest: digests,
            max_recv_data_segment_length: 256 * 1024,
        };
        let tag = if digests { "crc32c" } else { "nodigest" };
        let mut g = c.benchmark_group(format!("decode/{tag}"));
        g.throughput(Throughput::Elements(1));
        let cases = [
            ("read10", command(1, false, Bytes::new())),
            ("write10+4k", command(2, true, Bytes::from(vec![1u8; 4096]))),
            ("dataout-128k", data_out(128 * 1024)),
        ];
        for (name, pdu) in cases {
            let wire = pdu.to_bytes(digests, digests);
            // The receive buffer is filled outside the measurement (the socket does that).
            g.bench_function(name, |b| {
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |buf| decode_one(black_box(buf), &cfg),
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    for (name, pdu) in [
        ("datain-4k", data_in(4096)),
        ("datain-128k", data_in(128 * 1024)),
    ] {
        for digests in [false, true] {
            let tag = if digests { "crc32c" } else { "nodigest" };
            g.bench_function(format!("{name}/{tag}"), |b| {
                let mut out = Vec::with_capacity(4);
                b.iter(|| {
                    out.clear();
                    black_box(&pdu).write_to(digests, digests, &mut out)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
